"""Conditioning: adaLN / adaLN-Zero modulation (DiT)."""
from __future__ import annotations

import torch
from torch import nn

ADALN = ("none", "adaln", "adaln_zero")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) * (1 + scale) + shift, with shift/scale (B, C)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNModulation(nn.Module):
    """SiLU -> Linear from a condition vector (B, cond_dim) to `chunks` vectors (B, dim).
    With zero_init (adaLN-Zero) every shift, scale and gate starts at 0, so each block
    starts as the identity."""

    def __init__(self, cond_dim: int, dim: int, chunks: int, *, zero_init: bool = True):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(cond_dim, chunks * dim)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if cond.ndim != 2:
            raise ValueError(f"adaLN condition must be (batch, cond_dim), got {tuple(cond.shape)}")
        return self.linear(nn.functional.silu(cond)).chunk(self.chunks, dim=-1)
