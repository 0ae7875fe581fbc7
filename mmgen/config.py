"""Dataclass configs <-> plain dicts, with clear errors for unknown fields and typed
dotted overrides ("block.depth=6") shared by create_model, checkpoints and train/."""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any


# Renamed config fields: {config class name: {old name: new name}}. A config.json written
# with an old name loads silently; an old name in create_model(...) or `--set model.X=`
# still works, with a FutureWarning naming the new field. The field vocabulary itself is
# the table in CONTRIBUTING.md.
RENAMED: dict[str, dict[str, str]] = {
    "TransformerConfig": {"dim": "embed_dim"},
    "GPTConfig": {"dim": "embed_dim", "context": "context_length"},
    "ViTConfig": {"dim": "embed_dim"},
    "DiTConfig": {"dim": "embed_dim"},
    "ConvAEConfig": {"in_channels": "in_chans"},  # and VAEConfig, VQConfig (subclasses)
    "CLIPTextConfig": {"width": "embed_dim", "heads": "num_heads"},
    "TextEncoderConfig": {"dim": "embed_dim", "max_len": "context_length"},
    "DDPMConfig": {"image_size": "img_size"},
    "DALLEConfig": {"text_len": "context_length"},
    "CLIPConfig": {"tokenizer_prune_from": "tokenizer_captions", "tokenizer_prune_kwargs": "tokenizer_captions_kwargs",
                   "tokenizer_prune_extra": "tokenizer_captions_extra"},
}


def renamed_field(cls, name: str, *, warn: bool = False) -> str:
    """The current name of field `name` of dataclass `cls` (itself unless it was renamed)."""
    new = next((RENAMED[k.__name__][name] for k in getattr(cls, "__mro__", (cls,))
                if name in RENAMED.get(k.__name__, {})), None)
    if new is None or new == name:
        return name
    if warn:
        import warnings
        warnings.warn(f"{cls.__name__}.{name} is now called {new!r}; the old name will stop working in a "
                      f"future version", FutureWarning, stacklevel=3)
    return new


def rename_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a config dict, e.g. a config.json section) with old field names of dataclass
    `cls` replaced by the current ones; nested configs are renamed when they are built."""
    return {renamed_field(cls, k): v for k, v in data.items()}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_in(tp) -> type | None:
    """The dataclass inside a field type (`Cfg` or `Cfg | None`), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _unknown(cls, name: str) -> ValueError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"{cls.__name__} has no field {name!r}{hint} (fields: {', '.join(names)})")


def _field_default(cls, name: str) -> Any:
    """The default value of a dataclass field (calling its default_factory)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_from_dict(cls, data: dict[str, Any]):
    """Build dataclass `cls` from a dict, recursing into nested dataclass fields. A nested
    dict overrides that field's default (so presets can name only what they change);
    missing fields take their defaults, so old checkpoints keep loading."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} config must be a dict, got {type(data).__name__}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        key = renamed_field(cls, key)
        if key not in types_:
            raise _unknown(cls, key)
        sub = _dataclass_in(types_[key])
        if sub is not None and isinstance(value, dict):
            default = _field_default(cls, key)
            base = config_to_dict(default) if dataclasses.is_dataclass(default) else {}
            value = config_from_dict(sub, {**base, **value})
        elif isinstance(value, list) and typing.get_origin(types_[key]) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def merge_overrides(cls, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` (keys may be dotted: "text.depth") into `base`, checking every
    name against `cls`."""
    out = json.loads(json.dumps(base))  # deep copy of plain data
    for key, value in overrides.items():
        parts = key.split(".")
        target, tcls = out, cls
        for i, p in enumerate(parts[:-1]):
            p = parts[i] = renamed_field(tcls, p, warn=True)
            types_ = _field_types(tcls)
            if p not in types_ or _dataclass_in(types_[p]) is None:
                raise _unknown(tcls, p) if p not in types_ else ValueError(f"{tcls.__name__}.{p} is not a nested config")
            parent, tcls = tcls, _dataclass_in(types_[p])
            if not isinstance(target.get(p), dict):
                default = _field_default(parent, p)
                target[p] = config_to_dict(default if dataclasses.is_dataclass(default) else tcls())
            target = target[p]
        last = renamed_field(tcls, parts[-1], warn=True)
        types_ = _field_types(tcls)
        if last not in types_:
            raise _unknown(tcls, last)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        if isinstance(value, dict) and isinstance(target.get(last), dict):
            target[last] = {**target[last], **value}
        else:
            target[last] = value
    return out


def parse_value(text: str, tp) -> Any:
    """Parse a command-line string into the field type: int, float, bool, str, None,
    tuples/lists (comma separated or JSON)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(text, inner[0]) if len(inner) == 1 else json.loads(text)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"expected {tp.__name__}, got {text!r}") from None
    if tp is str:
        return text
    if origin in (tuple, list):
        items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t]
        elem = args[0] if args else str
        vals = [v if not isinstance(v, str) else parse_value(v, elem) for v in items]
        return tuple(vals) if origin is tuple else vals
    return json.loads(text)


def field_type(cls, dotted: str):
    """The type of a (dotted) field of dataclass `cls`."""
    tcls = cls
    parts = dotted.split(".")
    for p in parts[:-1]:
        p = renamed_field(tcls, p)
        types_ = _field_types(tcls)
        if p not in types_:
            raise _unknown(tcls, p)
        tcls = _dataclass_in(types_[p])
        if tcls is None:
            raise ValueError(f"{p!r} is not a nested config")
    types_ = _field_types(tcls)
    last = renamed_field(tcls, parts[-1])
    if last not in types_:
        raise _unknown(tcls, last)
    return types_[last]
