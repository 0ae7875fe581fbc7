"""Feed-forward sublayers: plain (GELU, ReLU^2) and gated (SwiGLU, GeGLU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autograd import records_grad

MLPS = ("gelu", "gelu_tanh", "relu2", "swiglu", "geglu")
GATED = ("swiglu", "geglu")


def mlp_hidden_dim(kind: str, dim: int, ratio: float, multiple_of: int = 1) -> int:
    """Hidden width of the MLP. Gated MLPs have three matrices instead of two, so, as in
    LLaMA, their width is 2/3 of ratio * dim, rounded up to a multiple of `multiple_of`."""
    hidden = int(ratio * dim)
    if kind in GATED:
        hidden = int(2 * hidden / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 (timm's Mlp layout, so weights copy across)."""

    def __init__(self, dim: int, hidden: int, *, act: str = "gelu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if act not in ("gelu", "gelu_tanh", "relu2"):
            raise ValueError(f"Mlp act must be gelu, gelu_tanh or relu2, got {act!r}")
        self.act = act
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.act == "relu2":  # Primer / modded-nanoGPT squared ReLU
            h = F.relu(h).square()
        elif records_grad(h):
            h = F.gelu(h, approximate="tanh" if self.act == "gelu_tanh" else "none")
        else:  # inference: in place, the widest activation of the block needs no second buffer
            h = torch.ops.aten.gelu_(h, approximate="tanh" if self.act == "gelu_tanh" else "none")
        return self.fc2(self.drop(h))


class GatedMlp(nn.Module):
    """act(x W1) * (x W3) -> W2. W1 and W3 are fused in one matmul (`fc1`, gate first)."""

    def __init__(self, dim: int, hidden: int, *, act: str = "swiglu", bias: bool = False, dropout: float = 0.0):
        super().__init__()
        if act not in GATED:
            raise ValueError(f"GatedMlp act must be one of {GATED}, got {act!r}")
        self.act = act
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)
        gate = F.silu(gate) if self.act == "swiglu" else F.gelu(gate)
        return self.fc2(self.drop(gate * up))


def make_mlp(kind: str, dim: int, hidden: int, *, bias: bool = True, dropout: float = 0.0) -> nn.Module:
    if kind in GATED:
        return GatedMlp(dim, hidden, act=kind, bias=bias, dropout=dropout)
    if kind in MLPS:
        return Mlp(dim, hidden, act=kind, bias=bias, dropout=dropout)
    raise ValueError(f"mlp must be one of {MLPS}, got {kind!r}")
