"""Recipes: a model preset paired with a dataset and a schedule, each documented with the
result it is expected to reach. Every model family adds its own module here
(train/recipes/<family>.py) calling `register_recipe(Recipe(...))`; modules are discovered
automatically. Run one with `python -m train --recipe NAME [--set ...] [--out DIR]`."""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

_RECIPES: dict[str, "Recipe"] = {}
_LOADED = False


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # a registered preset (mmgen.list_models())
    data: str  # a dataset name for mmgen.data.build_dataset
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    model_overrides: dict[str, Any] = field(default_factory=dict)  # dotted model config overrides
    data_kwargs: dict[str, Any] = field(default_factory=dict)  # build_dataset keyword arguments
    description: str = ""
    expected: str = ""  # the result a run reaches, with the hardware and time it took

    def overrides(self) -> dict[str, Any]:
        """All fields as the dotted overrides --set takes (model.*, data.*, train.*)."""
        out = {f"model.{k}": v for k, v in self.model_overrides.items()}
        out.update({f"data.{k}": v for k, v in self.data_kwargs.items()})
        out.update({f"train.{k}": v for k, v in self.train.items()})
        return out


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    from ..config import TrainConfig
    TrainConfig(**recipe.train)  # fail at registration, not at first use
    _RECIPES[recipe.name] = recipe
    return recipe


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def get_recipe(name: str) -> Recipe:
    _load_all()
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, list(_RECIPES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}{hint} (known: {', '.join(sorted(_RECIPES)) or 'none'})")
    return _RECIPES[name]


def list_recipes() -> list[Recipe]:
    _load_all()
    return [_RECIPES[n] for n in sorted(_RECIPES)]
