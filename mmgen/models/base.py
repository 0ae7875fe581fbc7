"""The base class of every mmgen model: checkpointing plus the training contract."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import PretrainedMixin


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block with `module.eval()` (sampling, evaluation), then restore its training flag."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


class Model(nn.Module, PretrainedMixin):
    """Subclasses set `config_class`, are decorated with `@register_model("name")`, take
    their config as the only constructor argument and implement:

    - `loss(batch) -> (loss, logs)`: the one method the training loop calls; logs is a dict
      of floats.
    - `example_batch(batch_size=2, device="cpu")`: a small valid batch for `loss`, used by the
      preset tests (forward, backward reaching every parameter) and the benchmarks.
    """

    config_class: type
    # config fields naming checkpoints the model reads when it is used (DALL-E's VQ and CLIP,
    # a DDPM's reranker CLIP): written relative to the checkpoint, so it loads from anywhere
    companion_fields: tuple[str, ...] = ()
    _ckpt_dir: Path | None = None  # the directory this model was loaded from
    # False for a model fitted in closed form (the k-means palette tokenizer): no gradients,
    # `loss` refuses, and `evaluate(example_batch())` is its check
    trainable: bool = True

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        model = super().from_pretrained(path, **kwargs)
        model._ckpt_dir = Path(path).resolve()
        return model

    def save_pretrained(self, path, **kwargs):
        """As PretrainedMixin's, with the companion_fields rewritten relative to `path`."""
        if not self.companion_fields:
            return super().save_pretrained(path, **kwargs)
        from ..checkpoint import relative_companion
        kept = self.config

        def rewrite(field: str):  # a path, or a tuple of paths (a field named *_paths)
            value, what = getattr(kept, field), field.removesuffix("_paths").removesuffix("_path")
            if isinstance(value, tuple):
                return tuple(relative_companion(v, self._ckpt_dir, path, what) for v in value)
            return relative_companion(value, self._ckpt_dir, path, what)

        # what config.json holds; the model's own config is left as it was
        self.config = dataclasses.replace(kept, **{f: rewrite(f) for f in self.companion_fields})
        try:
            return super().save_pretrained(path, **kwargs)
        finally:
            self.config = kept

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    @classmethod
    def create(cls, config, **kwargs):
        """A freshly initialised model: `resolve_config(config, **kwargs)`, then the
        constructor, then `load_sources()`. `mmgen.create_model` builds presets this way;
        `from_pretrained` needs neither step (a saved config is resolved, its weights are
        its own)."""
        model = cls(cls.resolve_config(config, **kwargs))
        model.load_sources()
        return model

    @classmethod
    def resolve_config(cls, config):
        """A copy of `config` with every derived value filled in (a vocabulary pruned to a
        dataset's captions, a companion checkpoint's config, sizes taken from a tokenizer),
        read once and visibly before the model is built; the config given is left as it was.
        Constructors never read datasets or other checkpoints."""
        return config

    def load_sources(self) -> None:
        """Copy weights named by the config from other checkpoints (a pretrained image tower,
        a frozen text encoder) into a freshly built model. Not run by from_pretrained."""

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def example_batch(self, batch_size: int = 2, device: str | torch.device = "cpu") -> Any:
        raise NotImplementedError

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, each tied tensor counted once."""
        seen, total = set(), 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
