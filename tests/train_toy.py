"""A tiny registered model and dataset for the training-engine tests (imported as
tests.train_toy, also by the CLI: `--data tests.train_toy:toy_data`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import mmgen
from mmgen.layers import LearnedPositions, Transformer, TransformerConfig
from mmgen.models.base import Model
from mmgen.registry import register_model, register_preset


@dataclass
class ToyConfig:
    dim: int = 16
    depth: int = 2
    in_dim: int = 6
    seq: int = 4
    dropout: float = 0.1  # exercises the RNG restore on resume
    nan_after: int = 0  # loss calls after which the loss is NaN (0 = never): the NaN-stop test


@register_model("train_toy")
class ToyModel(Model):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        c = config
        self.inp = nn.Linear(c.in_dim, c.dim)
        self.pos = LearnedPositions(c.seq, c.dim)
        self.body = Transformer(TransformerConfig(dim=c.dim, depth=c.depth, num_heads=2, dropout=c.dropout))
        self.head = nn.Linear(c.dim, 1)
        self.calls = 0

    def forward(self, x):  # (B, T, in_dim) -> (B, T)
        return self.head(self.body(self.pos(self.inp(x)))).squeeze(-1)

    def loss(self, batch):
        pred = self(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        self.calls += 1
        if self.config.nan_after and self.calls > self.config.nan_after:
            loss = loss * float("nan")
        return loss, {"mae": (pred - batch["y"]).abs().mean().item()}

    def example_batch(self, batch_size=2, device="cpu"):
        return {k: v.to(device) for k, v in _items(batch_size, 123, self.config).items()}

    @torch.no_grad()
    def sample_images(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, self.config.seq, self.config.in_dim, generator=g).to(self.device)
        y = torch.tanh(self(x))  # (n, T) in [-1, 1]
        return y[:, None, None, :].expand(n, 3, self.config.seq, self.config.seq).contiguous()  # (n, 3, T, T)


if "train_toy_tiny" not in mmgen.list_models():
    register_preset("train_toy_tiny", ToyModel, description="a 2-block regression toy for the train tests")


def _items(n, seed, c: ToyConfig):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c.seq, c.in_dim, generator=g)
    w = torch.linspace(-1, 1, c.in_dim)
    y = torch.tanh(x @ w) + 0.5 * x[:, :, 0].roll(1, dims=1)  # (n, T): needs attention across positions
    return {"x": x, "y": y}


class ToyData(torch.utils.data.Dataset):
    def __init__(self, split="train", n=64, seed=None, **cfg):
        c = ToyConfig(**cfg)
        self.data = _items(n, seed if seed is not None else (0 if split == "train" else 1), c)

    def __len__(self):
        return self.data["x"].shape[0]

    def __getitem__(self, i):
        return {"x": self.data["x"][i], "y": self.data["y"][i]}


class ToyStream(torch.utils.data.IterableDataset):
    """An endless stream: item i is a function of i only."""

    def __init__(self, seed=0):
        self.seed = seed

    def __iter__(self):
        i = 0
        while True:
            d = _items(1, self.seed * 100_003 + i, ToyConfig())
            yield {"x": d["x"][0], "y": d["y"][0]}
            i += 1


def toy_data(split="train", n=64, stream=False):
    if stream:
        return ToyStream(0 if split == "train" else 1)
    return ToyData(split, n=n)
