"""The state of a run: the EMA of the weights, RNG states, and the Checkpointer that writes and
reads train_state.pt and exports the mmgen checkpoint, with full (unsharded) state dicts that
work the same for one process, DDP and FSDP. Also the rule of which directories a run may
write (check_out_dir)."""
from __future__ import annotations

import copy
import dataclasses
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mmgen.checkpoint import CONFIG_NAME, WEIGHTS_NAME, apply_umask, atomic_save_file, make_temp_dir

from . import dist as D
from .config import TrainConfig

STATE_NAME = "train_state.pt"
RUN_CONFIG_NAME = "run_config.json"


class EMA:
    """Exponential moving average of the parameters (same tensor type as the parameter, so
    under FSDP each rank averages its own shard). Buffers are not averaged: the exported
    model takes them from the live model."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Start over from the model's current weights."""
        self.updates = 0
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters()}

    def current_decay(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        params = dict(model.named_parameters())
        shadow = [self.shadow[n] for n in self.names]
        src = [params[n].detach().float() for n in self.names]
        if D.is_sharded(model):  # DTensor shards: one at a time
            for e, p in zip(shadow, src):
                e.lerp_(p, 1.0 - d)
        else:
            torch._foreach_lerp_(shadow, src, 1.0 - d)
        self.updates += 1

    def full_state(self) -> dict[str, torch.Tensor]:
        """Gathered to plain CPU tensors (collective under FSDP)."""
        return {n: D.full_tensor(t).detach().cpu() for n, t in self.shadow.items()}

    def load_full_state(self, state: dict[str, torch.Tensor], updates: int) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor
        for n, t in self.shadow.items():
            src = state[n]
            if isinstance(t, DTensor):
                t.copy_(distribute_tensor(src.to(t.device), t.device_mesh, t.placements))
            else:
                t.copy_(src)
        self.updates = updates


# RNG state (weights_only-safe: tensors, lists, ints)

def get_rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(x) if isinstance(x, float) else int(x) for x in np_state[2:]]],
           "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shipped_checkpoint_roots() -> list[Path]:
    """Where shipped checkpoints live: the repository's checkpoints/ folder and anything inside
    the installed mmgen package. Training never writes there."""
    import mmgen
    pkg = Path(mmgen.__file__).resolve().parent
    return [pkg.parent / "checkpoints", pkg]


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse a run directory the run did not create: a shipped checkpoint, or a directory
    holding a checkpoint (config.json / model.safetensors) without the train_state.pt every
    save of this engine writes first. A directory with train_state.pt is a run: it needs
    --resume to continue."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a run directory: choose another --out")
    real = out.resolve()
    for root in shipped_checkpoint_roots():
        if real == root or root in real.parents:
            raise ValueError(f"{str(out)!r} is inside the shipped checkpoints ({root}), which training never "
                             "writes to: choose another --out (e.g. runs/NAME)")
    if (out / STATE_NAME).exists():
        if not resume:
            raise ValueError(f"{str(out)!r} already holds a run ({STATE_NAME}); pass --resume to continue it or "
                             "choose another --out")
        return
    found = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if (out / n).exists()]
    if found:
        raise ValueError(f"{str(out)!r} holds a checkpoint ({', '.join(found)}) that no training run wrote there "
                         f"(no {STATE_NAME}); refusing to overwrite it: choose another --out (or leave --out out "
                         "for a fresh runs/ directory); --resume continues only a run directory")


def export_checkpoint(model: nn.Module, out: Path, extra: dict) -> None:
    """model.save_pretrained into a temporary folder, then rename each file into `out`
    (files of `out` it does not write are left alone)."""
    tmp = make_temp_dir(out, ".export.")
    try:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp / "ckpt", extra=extra)
        else:  # a plain nn.Module given to train.fit: weights only
            from safetensors.torch import save_model
            (tmp / "ckpt").mkdir()
            save_model(model, str(tmp / "ckpt" / WEIGHTS_NAME))
        # weights first, config last: a reader that sees the new config sees the new weights
        for f in sorted((tmp / "ckpt").iterdir(), key=lambda p: p.name == CONFIG_NAME):
            apply_umask(f)  # the user's umask, not the temporary files' 0600
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def param_aliases(model: nn.Module) -> dict[str, list[str]]:
    """name (as named_parameters dedupes it) -> every state-dict key of that tensor (tied)."""
    by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(n)
    return {names[0]: names for names in by_id.values()}


class Checkpointer:
    """train_state.pt (raw weights, EMA, optimizer, schedule, every rank's RNG states, step,
    data position) and the exported checkpoint (EMA weights over the raw model) of one run.
    save / load / weights_for_eval are collectives under FSDP: call them on every rank."""

    def __init__(self, model: nn.Module, optimizer, scheduler, ema: EMA | None, cfg: TrainConfig,
                 info: D.DistInfo, out: Path, eval_model: nn.Module | None, fsdp: bool,
                 export: Callable[[nn.Module, Path, dict], None] | None = None):
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self.cfg, self.info, self.out, self.eval_model, self.fsdp = cfg, info, out, eval_model, fsdp
        self.export = export or export_checkpoint  # what a save writes beside train_state.pt
        self.aliases = param_aliases(model)

    def _sd_options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        return StateDictOptions(full_state_dict=True, cpu_offload=self.info.enabled)

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """Unsharded CPU weights (collective under FSDP; complete on rank 0)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict
            return get_model_state_dict(self.model, options=self._sd_options())
        if not self.info.is_main:  # DDP replicas: rank 0's copy is the one written
            return {}
        return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)  # extra state
                for k, v in self.model.state_dict().items()}

    def full_optimizer_state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        if self.fsdp:
            return get_optimizer_state_dict(self.model, self.optimizer, options=self._sd_options())
        return self.optimizer.state_dict()

    def weights_for_eval(self, model_state: dict | None = None, ema_state: dict | None = None) -> dict | None:
        """The state dict the exported / evaluated model uses: EMA params over the raw model."""
        state = model_state if model_state is not None else self.full_model_state()
        if self.ema is not None:
            ema = ema_state if ema_state is not None else self.ema.full_state()
            state = dict(state)
            for n, t in ema.items():
                for alias in self.aliases.get(n, [n]):
                    state[alias] = t
        return state if self.info.is_main else None

    def sync_eval_model(self, state: dict | None = None) -> None:
        """Load the evaluation weights into rank 0's unsharded copy (collective under FSDP)."""
        state = self.weights_for_eval() if state is None else state
        if self.info.is_main:
            self.eval_model.load_state_dict(state)

    def save(self, step: int, data_pos: int) -> None:
        """Write train_state.pt, then the exported checkpoint (collective; rank 0 writes)."""
        model_state = self.full_model_state()
        ema_state = self.ema.full_state() if self.ema is not None else None
        optim_state = self.full_optimizer_state()
        rngs = D.all_gather_object(get_rng_state(), self.info)
        if not self.info.is_main:
            D.barrier(self.info)
            return
        state = {"version": 1, "step": step, "data_position": data_pos, "world_size": self.info.world_size,
                 "model": model_state, "ema": ema_state, "ema_updates": self.ema.updates if self.ema else 0,
                 "optimizer": optim_state, "scheduler": self.scheduler.state_dict(), "rng": rngs,
                 "train_config": dataclasses.asdict(self.cfg)}
        # train_state.pt first: a directory with a checkpoint always holds the state that made it
        # (check_out_dir refuses a checkpoint without one), and a kill in between resumes fine
        atomic_save_file(lambda tmp: torch.save(state, tmp), self.out / STATE_NAME)
        self.sync_eval_model(self.weights_for_eval(model_state, ema_state))
        self.export(self.eval_model, self.out, {"train_step": step, "ema": self.ema is not None})
        if self.cfg.keep_every and step % self.cfg.keep_every == 0:
            kept = self.out / "steps" / str(step)
            kept.mkdir(parents=True, exist_ok=True)
            self.export(self.eval_model, kept, {"train_step": step, "ema": self.ema is not None})
        D.barrier(self.info)

    def load(self, path: Path) -> tuple[int, int]:
        """Restore everything from train_state.pt; returns (step, data position in global
        micro-batches of the current config)."""
        cfg, info = self.cfg, self.info
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torn, foreign or pickled-object files
            raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        try:
            if self.fsdp:
                from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
                opts = self._sd_options()
                set_model_state_dict(self.model, state["model"], options=opts)
                set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
            else:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = " ".join(str(e).split())[:300]
            raise ValueError(f"{path} does not fit this model (a model field differs from the run that wrote it; "
                             f"model fields cannot change on --resume): {first}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema") is None:
                print(f"train: {path} has no EMA; starting the EMA from the current weights", file=sys.stderr)
                self.ema.reset(self.model)
            else:
                self.ema.load_full_state(state["ema"], state.get("ema_updates", 0))
        step, data_pos = int(state["step"]), int(state["data_position"])
        old_cfg = state.get("train_config", {})
        old_g = old_cfg.get("batch_size", cfg.batch_size) // old_cfg.get("grad_accum", cfg.grad_accum)
        new_g = cfg.batch_size // cfg.grad_accum
        if old_g != new_g:  # the position counts global micro-batches: convert through examples
            data_pos = data_pos * old_g // new_g
            if info.is_main:
                print(f"train: the global micro-batch changed from {old_g} to {new_g} examples; continuing "
                      f"at example {data_pos * new_g} of the data order", file=sys.stderr)
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            if info.is_main:
                print(f"train: resuming a {len(rngs)}-process run on {info.world_size}: RNG streams are "
                      "re-seeded, so the result will not match an uninterrupted run bit for bit", file=sys.stderr)
            seed_everything(cfg.seed * 1000 + info.rank + step)
        return step, data_pos
