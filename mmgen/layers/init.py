"""Weight initialisation shared by the model families."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def init_linears(module: nn.Module, weight_init: Callable[[torch.Tensor], object], *,
                 skip: tuple[str, ...] = ("modulation",)) -> None:
    """Apply `weight_init` to every nn.Linear weight under `module` and zero its bias.
    Linears whose name contains a `skip` entry keep their own init (adaLN-Zero's zeros)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and not any(s in name for s in skip):
            weight_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
