"""Normalisation layers computed in float32 and cast back (bf16/fp16 safe)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("layernorm", "rmsnorm")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32; float32/float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class LayerNorm(nn.Module):
    """LayerNorm with optional bias (and optional affine), always reduced in float32."""

    def __init__(self, dim: int, *, eps: float = 1e-5, bias: bool = True, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.bfloat16:
            # the CPU kernel takes bf16 input with float32 weights and reduces in float32:
            # the same result as upcasting, without two copies of x
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        xf = upcast(x)
        w = self.weight.to(xf.dtype) if self.weight is not None else None
        b = self.bias.to(xf.dtype) if self.bias is not None else None
        return F.layer_norm(xf, (self.dim,), w, b, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019): x / rms(x) * weight, reduced in float32."""

    def __init__(self, dim: int, *, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(xf.dtype)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def make_norm(kind: str, dim: int, *, eps: float = 1e-5, bias: bool = True, affine: bool = True) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias, affine=affine)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
