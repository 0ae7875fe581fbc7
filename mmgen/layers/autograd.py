"""When a layer may reuse its own buffers in place."""
from __future__ import annotations

import torch


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd records ops on any of these tensors (grad mode on and one of them
    requires grad). Only then must intermediates stay intact for the backward pass; otherwise
    (inference, no_grad) a layer may overwrite its own temporaries in place, which on CPU
    saves the page faults of a fresh buffer per op."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def add_residual(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x + h, where h is the sublayer's freshly computed output. Outside autograd the sum is
    written into h (no new buffer), when h already has the result's shape and dtype (under
    autocast a float32 stream plus a bf16 branch must still promote to float32)."""
    if (torch.compiler.is_compiling()  # the compiler plans buffers itself; data_ptr breaks its graph
            or records_grad(x, h) or h.shape != x.shape or h.dtype != x.dtype or h.data_ptr() == x.data_ptr()):
        return x + h
    return h.add_(x)
