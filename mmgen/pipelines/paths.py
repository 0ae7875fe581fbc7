"""Where checkpoints are: a shipped name ("dalle_shapes") or a checkpoint directory.

Companion models (VQ, CLIP) named by path in a checkpoint's config are resolved by
`mmgen.checkpoint.resolve_companion` (relative to that checkpoint's directory)."""
from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import list_shipped, shipped_root, shipped_roots

# the checkpoints that ship in the repository's checkpoints/ folder and can be named by a user
# (named in the error when one is missing from an installation; the list of names offered
# to the user is what mmgen.checkpoint.list_shipped finds)
SHIPPED = ("dalle_shapes", "dalle_emoji", "ddpm_shapes", "vq_shapes", "vq_shapes_16x16", "vq_emoji", "clip_shapes",
           "clip_shapes_reranker", "clip_emoji")
# short names kept from earlier versions of `mmgen generate --model`
ALIASES = {"dalle": "dalle_shapes", "ddpm": "ddpm_shapes"}


def find_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A shipped checkpoint name ("dalle_shapes") or a checkpoint directory -> the directory.

    An existing path wins; otherwise the name is looked up where mmgen.checkpoint.shipped_roots
    says (a wheel's mmgen/shipped/, the repository's checkpoints/, $MMGEN_CHECKPOINT_PATH). Raises FileNotFoundError (a path that does not exist, or a directory without
    config.json) or ValueError (an unknown name)."""
    raw = str(name_or_path)
    path = Path(raw).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{raw!r} is not an mmgen checkpoint directory (no config.json in it)")
        return path
    name = ALIASES.get(raw, raw)
    if os.sep not in raw and "/" not in raw and not raw.startswith("."):
        for root in shipped_roots():  # $MMGEN_CHECKPOINT_PATH, a wheel's mmgen/shipped, the repository's
            if (root / name / "config.json").is_file():
                return root / name
        shipped = shipped_root() / name
        if name in SHIPPED:
            raise FileNotFoundError(f"{raw!r} is the shipped checkpoint checkpoints/{name}, which is not in this "
                                    f"installation (looked in {shipped.parent}); pass a checkpoint directory")
        raise ValueError(f"unknown model {raw!r}: expected one of {sorted(set(list_shipped()) | set(ALIASES))} or a "
                         f"checkpoint directory")
    raise FileNotFoundError(f"checkpoint directory {raw!r} does not exist")
