"""The one check of a device name, for the `mmgen` commands (--device) and the training engine
(train.device): a device that is unknown or not on this machine is refused with a message
naming the fix before any model is built, never a CUDA traceback later."""
from __future__ import annotations

import torch


def check_device(name: str, what: str | None = None) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps' (any case) as a
    torch.device. ValueError, prefixed by `what` (e.g. "train.device=cuda") when given, for an
    unknown name or a device this machine does not have."""
    at = f"{what}: " if what else ""
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"{at}unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{at}{name!r} was asked for but no CUDA GPU is available on this machine "
                             f"(torch.cuda.is_available() is False); use cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"{at}{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{at}{name!r} was asked for but Apple's MPS backend is not available here; use cpu")
    return torch.device(text)


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), as oneDNN reports it;
    None when this torch build cannot tell. Without it CPU bf16 autocast is emulated, and a
    small transformer trained 16x slower than in fp32 (docs/training.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None
