"""The one training engine of mmgen: `python -m train ...` or `train.main(argv)` /
`train.fit(model, dataset, cfg, out=...)` from Python. See docs/training.md."""
from .cli import main
from .config import TrainConfig
from .loop import NonFiniteLossError, Trainer, fit
from .optim import param_groups
from .recipes import Recipe, get_recipe, list_recipes, register_recipe

__all__ = ["main", "fit", "Trainer", "TrainConfig", "NonFiniteLossError", "param_groups", "Recipe",
           "register_recipe", "get_recipe", "list_recipes"]
