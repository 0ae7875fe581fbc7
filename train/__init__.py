"""`python -m train ...` from the repository root. The engine ships inside the package as
`mmgen.train` (so an installed mmgen runs it as `mmgen train ...`, and a user's own
`train.py` can never shadow it); this folder only points the old name at it."""
import mmgen.train as _engine
from mmgen.train import *  # noqa: F401,F403  (main, fit, Trainer, TrainConfig, recipes)

__path__ = _engine.__path__  # `python -m train`, `train.loop`, ... resolve to mmgen/train
