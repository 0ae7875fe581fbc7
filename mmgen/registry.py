"""Model families and their named presets.

A family is a model class with a `config_class` dataclass, registered with
`@register_model("gpt")`; a preset is a name bound to config values, registered with
`register_preset("gpt_tiny", GPT, embed_dim=64, ...)`. Preset names encode their shape
(timm style: `vit_small_patch4_32`), and every family has a `*_tiny` preset."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

_FAMILIES: dict[str, type] = {}
_PRESETS: dict[str, "Preset"] = {}


@dataclass(frozen=True)
class Preset:
    name: str
    model_cls: type
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def register_model(model_type: str):
    """Class decorator: register a model family under `model_type` (stored in checkpoints)."""
    def wrap(cls):
        if model_type in _FAMILIES and _FAMILIES[model_type] is not cls:
            raise ValueError(f"model type {model_type!r} is already registered by {_FAMILIES[model_type]}")
        if not hasattr(cls, "config_class"):
            raise TypeError(f"{cls.__name__} needs a `config_class` attribute")
        cls.model_type = model_type
        _FAMILIES[model_type] = cls
        return cls
    return wrap


def register_preset(name: str, model_cls: type, description: str = "", **config: Any) -> None:
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _build(model_cls, config)  # fail at registration, not at first use
    _PRESETS[name] = Preset(name, model_cls, config, description)


def _build(model_cls, config):
    from .config import config_from_dict
    return config_from_dict(model_cls.config_class, config)


_LOADED = False


def _load_all() -> None:
    """Import every module of mmgen.models so that their presets register."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import mmgen.models as pkg
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"mmgen.models.{mod.name}")


def get_family(model_type: str) -> type:
    _load_all()
    if model_type not in _FAMILIES:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[model_type]


def get_preset(name: str) -> Preset:
    _load_all()
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, list(_PRESETS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see mmgen.list_models())")
    return _PRESETS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a shell-style pattern, sorted."""
    _load_all()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def preset_config(name: str, **overrides: Any):
    """The config dataclass of a preset, with (dotted) overrides applied."""
    from .config import config_from_dict, merge_overrides
    p = get_preset(name)
    return config_from_dict(p.model_cls.config_class, merge_overrides(p.model_cls.config_class, p.config, overrides))


def create_model(name: str, **overrides: Any):
    """Build a registered preset: `create_model("gpt_tiny", depth=4, **{"text.depth": 2})`."""
    p = get_preset(name)
    model = p.model_cls.create(preset_config(name, **overrides))
    model.preset_name = name
    return model
