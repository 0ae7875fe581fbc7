"""Checkpoint directories: config.json (model type, config, format version) and
model.safetensors, plus extra_state.json when a module keeps state that is not weights
(`nn.Module.get_extra_state`, e.g. the words of DALL-E's training captions). Weights are
never unpickled; tied weights survive (safetensors' save_model/load_model dedupe shared
tensors)."""
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
EXTRA_STATE_NAME = "extra_state.json"
_EXTRA_STATE_SUFFIX = "_extra_state"  # nn.Module's state-dict key of get_extra_state()


class _Weights:
    """What safetensors' save_model / load_model see of a model: the tensors of its state
    dict. Non-tensor module state (get_extra_state) goes to extra_state.json instead."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict, strict: bool = False):
        missing, unexpected = self.model.load_state_dict(state, strict=strict)
        return [k for k in missing if not k.endswith(_EXTRA_STATE_SUFFIX)], unexpected


def extra_state(model: torch.nn.Module) -> dict[str, Any]:
    """The non-tensor entries of the model's state dict (get_extra_state), JSON-ready."""
    out = {k: v for k, v in model.state_dict().items() if not isinstance(v, torch.Tensor)}
    try:
        json.dumps(out)
    except TypeError as e:
        raise TypeError(f"{type(model).__name__}'s extra state ({', '.join(out)}) must be JSON data "
                        f"(lists, dicts, strings, numbers) to be saved in {EXTRA_STATE_NAME}: {e}") from None
    return out


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


# ---------------------------------------------------------------------------- shipped checkpoints
# The small checkpoints that ship with mmgen live in the repository's top-level checkpoints/
# folder. A wheel carries them as the package data `mmgen/shipped/<name>/` (setup.py maps the
# package `mmgen.shipped` onto checkpoints/); a source checkout or an editable install reads the
# folder beside the `mmgen` package. MMGEN_CHECKPOINT_PATH (os.pathsep-separated folders) adds
# places to look, searched first.
CHECKPOINT_PATH_ENV = "MMGEN_CHECKPOINT_PATH"


def shipped_roots() -> list[Path]:
    """The folders searched for checkpoints by name, in order: $MMGEN_CHECKPOINT_PATH, the
    package's own `shipped/` (an installed wheel), the repository's `checkpoints/` (a source
    checkout or `pip install -e`)."""
    pkg = Path(__file__).resolve().parent
    roots = [Path(p).expanduser() for p in os.environ.get(CHECKPOINT_PATH_ENV, "").split(os.pathsep) if p]
    roots.append(pkg / "shipped")
    if (pkg.parent / "pyproject.toml").is_file():  # a source tree, not site-packages
        roots.append(pkg.parent / "checkpoints")
    return roots


def list_shipped() -> list[str]:
    """Names of the checkpoints found in shipped_roots() (e.g. 'dalle_shapes')."""
    names = set()
    for root in shipped_roots():
        if root.is_dir():
            names.update(d.name for d in root.iterdir() if (d / CONFIG_NAME).is_file())
    return sorted(names)


def find_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory from a path or the name of a shipped checkpoint.

    An existing path wins (relative to the working directory, as a user typed it). Otherwise a
    bare name such as "dalle_shapes", or a repository-style "checkpoints/dalle_shapes" typed
    outside the repository, is looked up in shipped_roots(). Raises FileNotFoundError naming
    what was tried and the shipped names."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    parts = path.parts
    name = None
    if len(parts) == 1 and parts[0] not in (".", ".."):
        name = parts[0]
    elif len(parts) == 2 and parts[0] == "checkpoints":  # the repository's path, typed elsewhere
        name = parts[1]
    if name is not None:
        for root in shipped_roots():
            if (root / name / CONFIG_NAME).is_file():
                return root / name
    shipped = list_shipped()
    hint = f"; shipped checkpoints: {', '.join(shipped)}" if shipped else ""
    raise FileNotFoundError(f"checkpoint directory {str(name_or_path)!r} does not exist and is not the name of a "
                            f"shipped checkpoint{hint}")


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e}); the checkpoint's config is damaged") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a checkpoint directory (or of a shipped checkpoint named as in
    find_checkpoint), checked: valid JSON, an mmgen config, a format this version reads."""
    path = find_checkpoint(path)
    if not path.is_dir():
        if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
            raise FileNotFoundError(f"{str(path)!r} is a file: pass the checkpoint directory that holds it "
                                    f"({str(path.parent)!r})")
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an mmgen checkpoint: it has no {CONFIG_NAME}")
    meta = _read_json(cfg_file)
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_file} is not an mmgen config: expected a JSON object, got {type(meta).__name__}")
    for key in ("model_type", "config"):
        if key not in meta:
            raise ValueError(f"{cfg_file} is not an mmgen config (missing {key!r})")
    if not isinstance(meta["config"], dict):
        raise ValueError(f"{cfg_file} is not an mmgen config: 'config' should be a JSON object")
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

        extras = extra_state(self)

        def write(tmp: Path):
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            if extras:
                (tmp / EXTRA_STATE_NAME).write_text(json.dumps(extras, indent=1) + "\n")
            model = self
            if dtype is not None:
                import copy
                model = copy.deepcopy(self).to(dtype)
            save_model(_Weights(model), str(tmp / WEIGHTS_NAME))

        return atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu", strict: bool = True):
        """Load a checkpoint directory (or the name of a shipped checkpoint, see find_checkpoint)."""
        path = find_checkpoint(path)
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
        missing, unexpected = _load_weights(model, weights, map_location)
        if (Path(path) / EXTRA_STATE_NAME).is_file():
            model.load_state_dict(_read_json(Path(path) / EXTRA_STATE_NAME), strict=False)
        if strict and (missing or unexpected):
            raise ValueError(f"{weights} does not match {cls.__name__}: missing {sorted(missing)[:8]}, "
                             f"unexpected {sorted(unexpected)[:8]}")
        model.preset_name = meta.get("preset")
        model.checkpoint_meta = meta
        model.checkpoint_dir = Path(path).resolve()
        return model.eval()


def _load_weights(model, weights: Path, map_location) -> tuple[list[str], list[str]]:
    """safetensors' load_model with one-line errors naming the file: a truncated or corrupt file,
    a pickle (torch.save) renamed to .safetensors, or tensors of the wrong shape."""
    with open(weights, "rb") as f:
        head = f.read(9)  # safetensors: an 8-byte header length, then the JSON header's "{"
    if head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):  # zip / pickle magic
        raise ValueError(f"{weights} is a pickled PyTorch file (torch.save), not safetensors; mmgen never "
                         f"unpickles weights: convert it with safetensors.torch.save_model")
    try:
        return load_model(_Weights(model), str(weights), strict=False, device=str(map_location))
    except RuntimeError as e:  # shape mismatches: another config of the same family
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln or "shape" in ln), first[0] if first else "")
        raise ValueError(f"{weights} does not fit this model's config ({detail})") from None
    except Exception as e:  # safetensors_rust.SafetensorError and friends: damaged file
        raise ValueError(f"{weights} is not a readable safetensors file ({type(e).__name__}: {e}); "
                         f"the file is damaged or truncated") from None


def load_pretrained(path: str | os.PathLike, **kwargs):
    """Load any mmgen checkpoint: a directory, or the name of a shipped checkpoint such as
    "dalle_shapes" (see find_checkpoint), whatever its model family."""
    from .registry import get_family
    path = find_checkpoint(path)
    return get_family(read_config(path)["model_type"]).from_pretrained(path, **kwargs)


# ------------------------------------------------------------------ companion checkpoints
def shipped_root() -> Path:
    """The folder of the checkpoints that ship with mmgen: the package's own shipped/ in an
    installed wheel, else the repository's checkpoints/ (see shipped_roots for the search)."""
    pkg = Path(__file__).resolve().parent
    return pkg / "shipped" if (pkg / "shipped").is_dir() else pkg.parent / "checkpoints"


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
            tried += [root / parts[-1] for root in shipped_roots()]
        tried.append(Path.cwd() / p)
    for cand in tried:
        if (cand / CONFIG_NAME).is_file():
            return cand.resolve()
    raise FileNotFoundError(f"the {what} checkpoint {str(value)!r} named in the config was not found (looked in "
                            f"{', '.join(str(c) for c in dict.fromkeys(tried))})")


def load_companion(value: str | os.PathLike, ckpt_dir: str | os.PathLike | None, what: str, *,
                   expect: str | tuple[str, ...] | None = None, owner: str = "this model"):
    """Load a companion checkpoint named in a config (DALL-E's vq_path / clip_path, DDPM's
    vae_path / text_encoder_path): `resolve_companion`, then a check that it holds an
    `expect` model (a model type or a tuple of them, when given), then `load_pretrained`. The one way models and pipelines
    open another checkpoint."""
    path = resolve_companion(value, ckpt_dir, what)
    if expect is not None:
        found = read_config(path)["model_type"]
        allowed = (expect,) if isinstance(expect, str) else tuple(expect)
        if found not in allowed:
            kinds = " or ".join(repr(k) for k in allowed)
            raise ValueError(f"{what}_path {str(value)!r} holds a {found!r} checkpoint; {owner} needs a {kinds} "
                             f"one there")
    return load_pretrained(path)


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
    roots = {root.resolve() for root in shipped_roots()}
    if target.parent in roots and new.parent not in roots:
        return target.name
    return os.path.relpath(target, new)
