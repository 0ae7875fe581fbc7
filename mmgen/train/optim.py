"""AdamW parameter groups and the learning-rate schedule of the one loop."""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
_NO_DECAY_NAMES = re.compile(r"(^|[._])(pos|pos_embed|pos_emb|positions|cls_token|mask_token|register_tokens|"
                             r"null_cond|null_emb|logit_scale|temperature|gamma|bias)($|[._])")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups. Weight decay applies to the >= 2-D weights of linear / conv / attention
    layers only; no decay for: biases and every other 1-D tensor (norm gains, LayerScale),
    parameters owned by an embedding or norm module (nn.Embedding, LayerNorm, RMSNorm,
    GroupNorm, BatchNorm, mmgen.layers.LayerNorm/RMSNorm/LearnedPositions), names like
    pos / pos_embed / cls_token / mask_token / logit_scale, and whatever the model lists in
    `model.no_weight_decay()` (timm's convention). A tied parameter is exempt when any of its
    owners is."""
    from mmgen.layers import LayerNorm, LearnedPositions, RMSNorm
    no_decay_types = _NO_DECAY_MODULES + (LayerNorm, RMSNorm, LearnedPositions)
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    exempt: set[int] = set()
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if (isinstance(mod, no_decay_types) or p.ndim < 2 or full in extra
                    or _NO_DECAY_NAMES.search(full)):
                exempt.add(id(p))
    decay, no_decay = [], []
    for p in model.parameters():  # deduplicated: tied weights once
        if p.requires_grad:
            (no_decay if id(p) in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up from lr / warmup to lr over `warmup` steps, then cosine to min_lr at
    `steps` (or constant). Returns the multiplier of cfg.lr for optimizer step s (0-based)."""
    def f(s: int) -> float:
        if cfg.warmup and s < cfg.warmup:
            return (s + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / cfg.lr
    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig, *, fused: bool = False):
    """(AdamW over param_groups, its LambdaLR schedule, the trainable parameters in group order)."""
    groups = param_groups(model, cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **({"fused": True} if fused else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    return optimizer, scheduler, params
