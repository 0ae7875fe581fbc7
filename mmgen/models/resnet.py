"""ResNet (He et al., 2016) with torchvision's blocks: the convolutional baseline the
encoders are measured against.

`resnet18_cifar` is torchvision's `resnet18` with the CIFAR stem (a 3x3 stride-1 first conv
and no max-pool, so a 32 px image keeps a 32x32 map in the first stage). Module names follow
torchvision (`conv1`, `bn1`, `layer1`..`layer4`, `fc`), so `load_torchvision_state_dict`
takes torchvision's weights (for the CIFAR stem, a state dict whose `conv1` is 3x3).
The training contract is the one the ViT and Swin share (`models/_classify.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from ..registry import register_model, register_preset
from ._classify import AUGMENTS, ImageClassifier

STEMS = ("cifar", "imagenet")


@dataclass
class ResNetConfig:
    img_size: int = 32
    in_chans: int = 3
    num_classes: int = 10
    layers: tuple[int, ...] = (2, 2, 2, 2)  # BasicBlocks per stage (ResNet-18)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # stage widths (torchvision's)
    stem: str = "cifar"  # cifar: 3x3 stride 1, no max-pool | imagenet: 7x7 stride 2 + max-pool (torchvision)
    zero_init_residual: bool = False  # torchvision's option: last BN of each block starts at 0
    label_smoothing: float = 0.0
    augment: str = "none"  # none | flip | crop | crop_flip (training batches only)

    def __post_init__(self):
        self.layers, self.widths = tuple(self.layers), tuple(self.widths)
        if self.stem not in STEMS:
            raise ValueError(f"ResNetConfig.stem must be one of {STEMS}, got {self.stem!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"ResNetConfig.augment must be one of {AUGMENTS}, got {self.augment!r}")
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} need one entry per stage")
        if any(n < 1 for n in self.layers) or any(w < 1 for w in self.widths):
            raise ValueError(f"layers and widths must be >= 1, got {self.layers}, {self.widths}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@register_model("resnet")
class ResNet(ImageClassifier):
    config_class = ResNetConfig

    def __init__(self, config: ResNetConfig):
        super().__init__(config)
        c = config
        w0 = c.widths[0]
        if c.stem == "cifar":
            self.conv1 = nn.Conv2d(c.in_chans, w0, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(c.in_chans, w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        inplanes = w0
        for i, (n, w) in enumerate(zip(c.layers, c.widths)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != w:
                down = nn.Sequential(conv1x1(inplanes, w, stride), nn.BatchNorm2d(w))
            blocks = [BasicBlock(inplanes, w, stride, down)] + [BasicBlock(w, w) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = w
        self.num_stages = len(c.layers)
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """torchvision's: Kaiming-normal (fan out) convs, unit BN gains, default Linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected images (B, {self.config.in_chans}, H, W), got shape {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> last-stage map (B, num_features, H / 8, W / 8) (CIFAR stem)."""
        self._check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, num_features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_torchvision_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """torchvision ResNet weights (same module names), strict."""
        self.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------------- presets
register_preset("resnet18_cifar", ResNet, "torchvision ResNet-18 with the CIFAR stem (3x3 stride 1, no max-pool), "
                "32 px, 10 classes (11.2M)", img_size=32, num_classes=10)
register_preset("resnet_tiny", ResNet, "a 4-stage ResNet of one BasicBlock per stage, widths 16-128 (0.3M), 32 px",
                img_size=32, num_classes=10, layers=(1, 1, 1, 1), widths=(16, 32, 64, 128))
