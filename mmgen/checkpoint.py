"""Checkpoint directories: config.json (model type, config, format version) and
model.safetensors. Weights are never unpickled; tied weights survive (safetensors'
save_model/load_model dedupe shared tensors)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from .config import config_from_dict, config_to_dict

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file (0666) or directory (0777) the permissions the user's umask allows, as a
    plain open() or mkdir() would. Temporary files (mkstemp: 0600, mkdtemp: 0700) and some
    writers (safetensors: 0600) are private; what we rename into place must not be."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh uniquely named directory in `parent` (for an atomic rename into a sibling)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    apply_umask(tmp)
    return tmp


def atomic_write_dir(target: str | os.PathLike, write_fn) -> Path:
    """Write a directory's files into a temporary sibling, then swap it into place, so a
    crash never leaves a half-written checkpoint. Files already in `target` that
    write_fn does not write (e.g. a model card, train_state.pt) are kept. What write_fn
    writes gets the permissions of the user's umask (0644 / 0755 under umask 022)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.")
    try:
        write_fn(tmp)
        for dirpath, dirnames, filenames in os.walk(tmp):
            for name in dirnames + filenames:
                apply_umask(os.path.join(dirpath, name))
        if target.exists():
            for f in target.iterdir():
                if not (tmp / f.name).exists():
                    (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def atomic_save_file(obj_bytes_fn, path: str | os.PathLike) -> None:
    """Write a file via a temp file + rename (obj_bytes_fn(tmp_path) writes it); the file
    gets the permissions of the user's umask (0644 under umask 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        obj_bytes_fn(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an mmgen checkpoint: it has no {CONFIG_NAME}")
    meta = json.loads(cfg_file.read_text())
    for key in ("model_type", "config"):
        if key not in meta:
            raise ValueError(f"{cfg_file} is not an mmgen config (missing {key!r})")
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{cfg_file} has format_version {meta['format_version']}; this mmgen reads up to "
                         f"{FORMAT_VERSION}: upgrade mmgen")
    return meta


class PretrainedMixin:
    """save_pretrained / from_pretrained for models with a dataclass `self.config`."""

    config_class: type
    model_type: str

    def save_pretrained(self, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
        """Write config.json + model.safetensors atomically. dtype=torch.float16 halves the
        file (floating tensors only); from_pretrained casts back to float32."""
        meta = {"format_version": FORMAT_VERSION, "model_type": self.model_type,
                "preset": getattr(self, "preset_name", None), "config": config_to_dict(self.config)}
        if extra:
            meta.update(extra)

        def write(tmp: Path):
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            model = self
            if dtype is not None:
                import copy
                model = copy.deepcopy(self).to(dtype)
            save_model(model, str(tmp / WEIGHTS_NAME))

        return atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu", strict: bool = True):
        meta = read_config(path)
        if meta["model_type"] != getattr(cls, "model_type", None):
            raise ValueError(f"{str(path)!r} holds a {meta['model_type']!r} model, not {cls.model_type!r}; "
                             f"load it with mmgen.load_pretrained()")
        config = config_from_dict(cls.config_class, meta["config"])
        model = cls(config)
        weights = Path(path) / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} has a config but no {WEIGHTS_NAME}")
        model.to(torch.float32)
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
        if strict and (missing or unexpected):
            raise ValueError(f"{weights} does not match {cls.__name__}: missing {sorted(missing)[:8]}, "
                             f"unexpected {sorted(unexpected)[:8]}")
        model.preset_name = meta.get("preset")
        model.checkpoint_meta = meta
        return model.eval()


def load_pretrained(path: str | os.PathLike, **kwargs):
    """Load any mmgen checkpoint directory, whatever its model family."""
    from .registry import get_family
    return get_family(read_config(path)["model_type"]).from_pretrained(path, **kwargs)


# ------------------------------------------------------------------ companion checkpoints
def shipped_root() -> Path:
    """The folder of the checkpoints that ship with mmgen (the repository's checkpoints/)."""
    return Path(__file__).resolve().parent.parent / "checkpoints"


def resolve_companion(value: str | os.PathLike, ckpt_dir: str | os.PathLike | None, what: str) -> Path:
    """The checkpoint directory that a companion path in a config names (e.g. DALL-E's vq_path).

    Tried in order: an absolute path; relative to the naming checkpoint's own directory (what
    `save_pretrained` writes); a shipped checkpoint name (also an old "checkpoints/<name>" or
    "../<name>" value, so moved or installed copies keep working); relative to the working
    directory (what a training recipe gives before anything is saved)."""
    p = Path(value).expanduser()
    tried: list[Path] = []
    if p.is_absolute():
        tried.append(p)
    else:
        if ckpt_dir is not None:
            tried.append(Path(ckpt_dir) / p)
        parts = p.parts
        if len(parts) == 1 or parts[-2] in ("checkpoints", ".."):
            tried.append(shipped_root() / parts[-1])
        tried.append(Path.cwd() / p)
    for cand in tried:
        if (cand / CONFIG_NAME).is_file():
            return cand.resolve()
    raise FileNotFoundError(f"the {what} checkpoint {str(value)!r} named in the config was not found (looked in "
                            f"{', '.join(str(c) for c in dict.fromkeys(tried))})")


def relative_companion(value: str, old_dir: str | os.PathLike | None, new_dir: str | os.PathLike, what: str) -> str:
    """The companion path to store when a checkpoint is written to new_dir: the shipped name
    for a shipped companion (e.g. "vq_shapes"; "../vq_shapes" beside another shipped
    checkpoint), else the path relative to new_dir (the directories then move together), or
    the value unchanged if it cannot be found now."""
    if not value:
        return value
    try:
        target = resolve_companion(value, old_dir, what)
    except FileNotFoundError:
        return value
    new = Path(new_dir).resolve()
    root = shipped_root().resolve()
    if target.parent == root and new.parent != root:
        return target.name
    return os.path.relpath(target, new)
