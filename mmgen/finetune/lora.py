"""LoRA (Hu et al., 2021) on any `nn.Linear` (or `QuantLinear`) of any mmgen model.

`apply_lora(model, targets=["*attn.qkv", "*attn.proj"], rank=8, alpha=16)` walks
`named_modules()`, wraps each matching linear in a `LoRALinear` (the original module kept as
`.base`, frozen) and freezes every other parameter, so the model trains only its adapters:

    y = base(x) + (alpha / rank) * B(A(dropout(x)))     A (rank, in) ~ Kaiming, B (out, rank) = 0

B starts at zero, so a freshly adapted model computes exactly the base model. `merge_lora`
folds B @ A * scale into the base weight (inference at the base model's speed) and
`unmerge_lora` takes it back out; `merge_and_unload` merges and puts the plain linears back.
`save_adapter` / `load_adapter` write only the adapter tensors (safetensors + the config).

Target patterns are fnmatch patterns over module names (`transformer.blocks.0.attn.qkv`);
the shorthands "attn", "mlp" and "all" expand to the attention / MLP projections of
`mmgen.layers` (see TARGETS). A Linear whose weight is shared (GPT's tied `lm_head`) can be
adapted; the adapter then applies to the head only, not to the embedding.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

TARGETS = {
    "attn": ["*attn.qkv", "*attn.q", "*attn.kv", "*attn.proj"],
    "qkv": ["*attn.qkv", "*attn.q", "*attn.kv"],
    "mlp": ["*mlp.fc1", "*mlp.fc2", "*mlp.w1", "*mlp.w2", "*mlp.w3"],
}
TARGETS["all"] = TARGETS["attn"] + TARGETS["mlp"]
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input only
    targets: list[str] = field(default_factory=lambda: ["attn"])  # fnmatch patterns or TARGETS keys
    exclude: list[str] = field(default_factory=list)  # fnmatch patterns never adapted

    def __post_init__(self):
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("LoRA targets is empty: name module patterns such as '*attn.qkv' or 'attn'")

    def patterns(self) -> list[str]:
        out = []
        for t in self.targets:
            out.extend(TARGETS.get(t, [t]))
        return out


def match_modules(model: nn.Module, patterns, exclude=(), types=(nn.Linear,)) -> list[str]:
    """Names of the modules of `types` whose name matches any pattern and no exclude."""
    return [name for name, m in model.named_modules()
            if isinstance(m, types) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
            and not any(fnmatch.fnmatchcase(name, p) for p in exclude)]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _dims(base: nn.Module) -> tuple[int, int]:
    return base.in_features, base.out_features


class LoRALinear(nn.Module):
    """A frozen linear (`nn.Linear` or `mmgen.finetune.QuantLinear`) plus a rank-r update."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        in_f, out_f = _dims(base)
        self.in_features, self.out_features = in_f, out_f
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        w = getattr(base, "weight", None)
        dev = w.device if isinstance(w, torch.Tensor) else None
        dtype = w.dtype if isinstance(w, torch.Tensor) and w.is_floating_point() else torch.float32
        self.lora_A = nn.Parameter(torch.empty(rank, in_f, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank, device=dev, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / PEFT
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight (out, in), for code that reads `.weight`."""
        w = self.base.dequantize() if hasattr(self.base, "dequantize") else self.base.weight
        return w if self.merged else w + self.delta_weight().to(w.dtype)

    @property
    def bias(self):
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        h = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.t()  # (..., rank)
        return y + (h @ self.lora_B.t() * self.scaling).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        if not isinstance(getattr(self.base, "weight", None), nn.Parameter) or not self.base.weight.is_floating_point():
            raise ValueError(f"cannot merge LoRA into a {type(self.base).__name__} (quantised base weights); "
                             "dequantise it first or keep the adapter unmerged")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, config: LoRAConfig | None = None, *, freeze_base: bool = True, **kw) -> list[str]:
    """Wrap every matching linear in a LoRALinear; return the wrapped names. With
    freeze_base (default) every non-adapter parameter stops requiring a gradient.
    kw: LoRAConfig fields (rank, alpha, dropout, targets, exclude)."""
    from .quant import QuantLinear
    if config is None:
        config = LoRAConfig(**kw)
    elif kw:
        raise ValueError("pass either a LoRAConfig or its fields as keywords, not both")
    if lora_modules(model):
        raise ValueError("this model already has LoRA adapters; merge_and_unload() it first")
    names = match_modules(model, config.patterns(), config.exclude, types=(nn.Linear, QuantLinear))
    if not names:
        linears = match_modules(model, ["*"], types=(nn.Linear, QuantLinear))
        raise ValueError(f"no Linear matches the LoRA targets {config.patterns()}; the model's linears are "
                         f"e.g. {linears[:6]}")
    if freeze_base:
        model.requires_grad_(False)
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), config.rank, config.alpha, config.dropout))
    model.lora_config = config
    return names


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and put the plain base linears back (in place; returns model)."""
    for name, m in lora_modules(model).items():
        m.merge()
        _set_module(model, name, m.base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write adapter.safetensors (lora_A / lora_B only) and adapter_config.json into `path`."""
    from safetensors.torch import save_file
    cfg = getattr(model, "lora_config", None)
    sd = lora_state_dict(model)
    if cfg is None or not sd:
        raise ValueError("the model has no LoRA adapters to save (call apply_lora first)")
    if any(m.merged for m in lora_modules(model).values()):
        raise ValueError("unmerge_lora(model) before saving: merged adapters would be saved twice")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(path / ADAPTER_WEIGHTS))
    (path / ADAPTER_CONFIG).write_text(json.dumps({"lora": asdict(cfg), "modules": sorted(lora_modules(model))},
                                                  indent=2))
    return path


def load_adapter(model: nn.Module, path: str | Path, *, apply: bool = True) -> list[str]:
    """Load an adapter saved by `save_adapter`. With apply (default) a model without
    adapters first gets them from the saved config. Every saved tensor must fit."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / ADAPTER_WEIGHTS).exists():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {path}")
    meta = json.loads((path / ADAPTER_CONFIG).read_text())
    if not lora_modules(model):
        if not apply:
            raise ValueError("the model has no LoRA adapters; load with apply=True")
        apply_lora(model, LoRAConfig(**meta["lora"]))
    sd = load_file(str(path / ADAPTER_WEIGHTS))
    own = lora_state_dict(model)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"adapter in {path} does not fit this model: missing {missing[:6]}, unexpected {unexpected[:6]}")
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise ValueError(f"adapter tensor {k}: saved shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=False)
    return sorted(lora_modules(model))


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """Trainable / total parameter counts (each shared tensor once) and the share."""
    seen, total, train = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        train += p.numel() if p.requires_grad else 0
    for b in model.buffers():  # quantised weights live in buffers
        if b.dtype in (torch.int8, torch.uint8):
            total += b.numel() * (2 if b.dtype == torch.uint8 else 1)  # uint8 packs two 4-bit values
    return {"trainable": train, "total": total, "share": train / max(total, 1)}
