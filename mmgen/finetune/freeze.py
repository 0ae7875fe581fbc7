"""Freezing parameters by name pattern or by layer range, for any mmgen model.

    freeze(model, ["tok_embed.*", "transformer.blocks.0.*"])   # fnmatch on parameter names
    freeze_layers(model, 0, 4)                                 # blocks 0..3 of every block list
    unfreeze(model, ["*norm*"]); trainable_names(model)
"""
from __future__ import annotations

import fnmatch
import re

from torch import nn


def _match(model: nn.Module, patterns) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n, _ in model.named_parameters()]
    hit = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not hit:
        raise ValueError(f"no parameter matches {patterns}; parameter names look like {names[:5]}")
    return hit


def set_trainable(model: nn.Module, patterns, trainable: bool) -> list[str]:
    names = _match(model, patterns)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(trainable)
    return names


def freeze(model: nn.Module, patterns) -> list[str]:
    """Stop gradients for parameters whose name matches any fnmatch pattern; returns them."""
    return set_trainable(model, patterns, False)


def unfreeze(model: nn.Module, patterns) -> list[str]:
    return set_trainable(model, patterns, True)


_BLOCK = re.compile(r"(^|\.)(blocks|layers|h)\.(\d+)\.")


def freeze_layers(model: nn.Module, start: int = 0, stop: int | None = None, *, prefix: str | None = None) -> list[str]:
    """Freeze the parameters of blocks start <= i < stop of every `*.blocks.<i>.` list (or
    only under `prefix`, e.g. "transformer"); negative indices count from the end."""
    params = [(n, p) for n, p in model.named_parameters() if prefix is None or n.startswith(prefix + ".")]
    idx = {int(m.group(3)) for n, _ in params if (m := _BLOCK.search(n))}
    if not idx:
        raise ValueError(f"found no numbered blocks (*.blocks.<i>.*) in the parameters{f' under {prefix!r}' if prefix else ''}")
    depth = max(idx) + 1
    lo = start + depth if start < 0 else start
    hi = depth if stop is None else (stop + depth if stop < 0 else stop)
    if not 0 <= lo < hi <= depth:
        raise ValueError(f"layer range [{start}, {stop}) is empty or outside the {depth} blocks")
    out = []
    for n, p in params:
        m = _BLOCK.search(n)
        if m and lo <= int(m.group(3)) < hi:
            p.requires_grad_(False)
            out.append(n)
    return out


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]
