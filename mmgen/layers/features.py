"""Choosing intermediate layers, as timm's `forward_intermediates(indices=...)` does."""
from __future__ import annotations


def take_indices(n: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """timm's rule: None = all, int k = the last k, a sequence = those (negative from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices} (last n) must be in 1..{n}")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        j = n + i if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f"feature index {i} is out of range for {n} layers")
        out.append(j)
    return out
