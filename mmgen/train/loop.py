"""The one training loop. It knows nothing model-specific: it calls `model.loss(batch) ->
(loss, logs)` and, when present, the hooks `model.collate(items)`, `model.evaluate(batch) ->
logs` and `model.sample_images(n, seed)`.

Run directory (`out`):
  config.json + model.safetensors  an mmgen checkpoint (EMA weights when EMA is on)
  train_state.pt                   everything to resume: raw weights, EMA, optimizer, LR
                                   schedule, RNG states of every rank, step, data position
  run_config.json                  the resolved model / data / train config
  metrics.jsonl                    one JSON record per log / eval
  samples/step_XXXXXX.png          sample grids of generative models
Every file is written to a temporary name and renamed, so a kill never leaves a torn file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mmgen.checkpoint import atomic_save_file

from . import dist as D
from .config import TrainConfig
from .data import batch_stream, eval_batches

STATE_NAME = "train_state.pt"
RUN_CONFIG_NAME = "run_config.json"
METRICS_NAME = "metrics.jsonl"
KILL_ENV = "MMGEN_TRAIN_KILL_AT_STEP"  # test hook: SIGKILL right after this step (and its saves)


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or inf; the run stopped without saving."""


# ---------------------------------------------------------------------------------------------
# optimizer, schedule, EMA

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
_NO_DECAY_NAMES = re.compile(r"(^|[._])(pos|pos_embed|pos_emb|positions|cls_token|mask_token|register_tokens|"
                             r"null_cond|null_emb|logit_scale|temperature|gamma|bias)($|[._])")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups. Weight decay applies to the >= 2-D weights of linear / conv / attention
    layers only; no decay for: biases and every other 1-D tensor (norm gains, LayerScale),
    parameters owned by an embedding or norm module (nn.Embedding, LayerNorm, RMSNorm,
    GroupNorm, BatchNorm, mmgen.layers.LayerNorm/RMSNorm/LearnedPositions), names like
    pos / pos_embed / cls_token / mask_token / logit_scale, and whatever the model lists in
    `model.no_weight_decay()` (timm's convention). A tied parameter is exempt when any of its
    owners is."""
    from mmgen.layers import LayerNorm, LearnedPositions, RMSNorm
    no_decay_types = _NO_DECAY_MODULES + (LayerNorm, RMSNorm, LearnedPositions)
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    exempt: set[int] = set()
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if (isinstance(mod, no_decay_types) or p.ndim < 2 or full in extra
                    or _NO_DECAY_NAMES.search(full)):
                exempt.add(id(p))
    decay, no_decay = [], []
    for p in model.parameters():  # deduplicated: tied weights once
        if p.requires_grad:
            (no_decay if id(p) in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up from lr / warmup to lr over `warmup` steps, then cosine to min_lr at
    `steps` (or constant). Returns the multiplier of cfg.lr for optimizer step s (0-based)."""
    def f(s: int) -> float:
        if cfg.warmup and s < cfg.warmup:
            return (s + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / cfg.lr
    return f


class EMA:
    """Exponential moving average of the parameters (same tensor type as the parameter, so
    under FSDP each rank averages its own shard). Buffers are not averaged: the exported
    model takes them from the live model."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup, self.updates = decay, warmup, 0
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


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# helpers

def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        return type(batch)(to_device(v, device) for v in batch) if not hasattr(batch, "_fields") else \
            type(batch)(*(to_device(v, device) for v in batch))
    return batch


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        for v in batch.values():
            n = batch_size_of(v)
            if n:
                return n
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = batch_size_of(v)
            if n:
                return n
    return 0


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast dtype, or None for fp32. 'auto' = bf16 on CUDA GPUs that support it."""
    if amp == "fp32":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _float(v) -> float:
    return float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)


def append_jsonl(path: Path, record: dict) -> None:
    # Open per write: the file must survive (and never be held open across) a kill.
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class MetricsWriter:
    """metrics.jsonl (always) and TensorBoard scalars under out/tb (when tensorboard is
    installed); rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.path, self.tb = out / METRICS_NAME, None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:  # tensorboard not installed: JSONL only
                pass
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records logged after the checkpoint we resume from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line torn by the kill
            pass
    atomic_save_file(lambda tmp: Path(tmp).write_text("".join(l + "\n" for l in keep)), path)


def export_checkpoint(model: nn.Module, out: Path, extra: dict) -> None:
    """model.save_pretrained into a temporary folder, then rename each file into `out`
    (files of `out` it does not write are left alone)."""
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out))
    try:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp / "ckpt", extra=extra)
        else:  # a plain nn.Module given to train.fit: weights only
            from safetensors.torch import save_model
            (tmp / "ckpt").mkdir()
            save_model(model, str(tmp / "ckpt" / "model.safetensors"))
        # weights first, config last: a reader that sees the new config sees the new weights
        for f in sorted((tmp / "ckpt").iterdir(), key=lambda p: p.name == "config.json"):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_image_grid(images: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image
    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)  # [-1, 1] -> [0, 1]
    nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_file(lambda tmp: save_image(images, tmp, nrow=nrow, format="png"), path)


# ---------------------------------------------------------------------------------------------
# the trainer

class Trainer:
    """fit() trains `model` on `train_ds` for cfg.steps optimizer steps, writing the run
    directory `out` (see the module docstring). resume=True continues from out/train_state.pt
    when it exists."""

    def __init__(self, model: nn.Module, train_ds, cfg: TrainConfig, out: str | os.PathLike, *, val_ds=None,
                 resume: bool = False, run_config: dict | None = None, collate: Callable | None = None):
        self.cfg, self.out, self.val_ds, self.resume = cfg, Path(out), val_ds, resume
        self.device = D.resolve_device(cfg.device)
        self.info = D.init_distributed(self.device)
        self.train_ds = train_ds
        self.collate = collate or getattr(model, "collate", None)
        self.micro = cfg.micro_batch(self.info.world_size)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.run_config = run_config or {}
        if not hasattr(model, "loss"):
            raise TypeError(f"{type(model).__name__} has no loss(batch) -> (loss, logs): the loop needs one")
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

        model.to(self.device)
        # an unsharded copy on rank 0 for evaluation, sampling and export (loaded with EMA or
        # raw weights when needed); taken before FSDP shards the model in place
        self.eval_model = copy.deepcopy(model) if self.info.is_main else None
        if self.eval_model is not None:
            self.eval_model.eval().requires_grad_(False)
        self.model = model
        self.loss_fn, self.sync_ctx = D.wrap_model(model, cfg.distributed, self.info, self.device,
                                                   find_unused_parameters=cfg.find_unused_parameters)
        self.fsdp = self.info.enabled and cfg.distributed == "fsdp"
        self.aliases = self._param_aliases(model)
        groups = param_groups(model, cfg.weight_decay)
        self.params = [p for g in groups for p in g["params"]]
        fused = self.device.type == "cuda" and not self.fsdp
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                           **({"fused": True} if fused else {}))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))
        self.ema = EMA(model, cfg.ema, cfg.ema_warmup) if cfg.ema > 0 else None
        if cfg.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        self.step, self.data_pos = 0, 0
        self.stop_signal = 0  # SIGTERM / SIGINT received: save after this step and return
        self.last_saved_step = None

    @staticmethod
    def _param_aliases(model: nn.Module) -> dict[str, list[str]]:
        """name (as named_parameters dedupes it) -> every state-dict key of that tensor (tied)."""
        by_id: dict[int, list[str]] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            by_id.setdefault(id(p), []).append(n)
        return {names[0]: names for names in by_id.values()}

    # -- state ---------------------------------------------------------------------------------

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
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

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
        state = self.weights_for_eval() if state is None else state
        if self.info.is_main:
            self.eval_model.load_state_dict(state)

    def save(self) -> None:
        """Write the exported checkpoint and train_state.pt (collective; rank 0 writes)."""
        model_state = self.full_model_state()
        ema_state = self.ema.full_state() if self.ema is not None else None
        optim_state = self.full_optimizer_state()
        rngs = D.all_gather_object(get_rng_state(), self.info)
        self.last_saved_step = self.step  # on every rank: ranks must agree on whether to save
        if not self.info.is_main:
            D.barrier(self.info)
            return
        self.sync_eval_model(self.weights_for_eval(model_state, ema_state))
        export_checkpoint(self.eval_model, self.out, {"train_step": self.step, "ema": self.ema is not None})
        state = {"version": 1, "step": self.step, "data_position": self.data_pos, "world_size": self.info.world_size,
                 "model": model_state, "ema": ema_state, "ema_updates": self.ema.updates if self.ema else 0,
                 "optimizer": optim_state, "scheduler": self.scheduler.state_dict(), "rng": rngs,
                 "train_config": dataclasses.asdict(self.cfg)}
        atomic_save_file(lambda tmp: torch.save(state, tmp), self.out / STATE_NAME)
        D.barrier(self.info)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
            opts = self._sd_options()
            set_model_state_dict(self.model, state["model"], options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema") is None:
                print(f"train: {path} has no EMA; starting the EMA from the current weights", file=sys.stderr)
                self.ema = EMA(self.model, self.cfg.ema, self.cfg.ema_warmup)
            else:
                self.ema.load_full_state(state["ema"], state.get("ema_updates", 0))
        self.step, self.data_pos = int(state["step"]), int(state["data_position"])
        old_cfg = state.get("train_config", {})
        old_g = old_cfg.get("batch_size", self.cfg.batch_size) // old_cfg.get("grad_accum", self.cfg.grad_accum)
        new_g = self.cfg.batch_size // self.cfg.grad_accum
        if old_g != new_g:  # the position counts global micro-batches: convert through examples
            self.data_pos = self.data_pos * old_g // new_g
            if self.info.is_main:
                print(f"train: the global micro-batch changed from {old_g} to {new_g} examples; continuing "
                      f"at example {self.data_pos * new_g} of the data order", file=sys.stderr)
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            if self.info.is_main:
                print(f"train: resuming a {len(rngs)}-process run on {self.info.world_size}: RNG streams are "
                      "re-seeded, so the result will not match an uninterrupted run bit for bit", file=sys.stderr)
            seed_everything(self.cfg.seed * 1000 + self.info.rank + self.step)
        self.last_saved_step = self.step

    # -- evaluation and samples -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean of model.evaluate(batch) (or loss + logs) over the first eval_batches of val_ds,
        with the EMA weights, under a fixed seed (the training RNG stream is untouched)."""
        m = self.eval_model
        sums: dict[str, float] = {}
        n = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            # batches of the global micro-batch size: the same numbers whatever the world size
            size = self.cfg.batch_size // self.cfg.grad_accum
            for batch in eval_batches(self.val_ds, size, self.cfg.eval_batches, self.collate):
                batch = to_device(batch, self.device)
                with self.autocast():
                    if hasattr(m, "evaluate"):
                        logs = m.evaluate(batch)
                    else:
                        loss, logs = m.loss(batch)
                        logs = {"loss": loss, **logs}
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + _float(v)
                n += 1
        return {f"val/{k}": v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def sample(self) -> Path | None:
        if not hasattr(self.eval_model, "sample_images") or self.cfg.num_samples == 0:
            return None
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            with self.autocast():
                images = self.eval_model.sample_images(self.cfg.num_samples, seed=self.cfg.seed)
        path = self.out / "samples" / f"step_{self.step:06d}.png"
        save_image_grid(images, path)
        return path

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- the loop -----------------------------------------------------------------------------

    def stop_all_signal(self) -> int:
        return self.stop_signal or signal.SIGTERM  # another rank's signal: report SIGTERM

    def _install_signal_handlers(self) -> dict:
        """First SIGTERM / SIGINT: finish the step, save, return (preemption, Ctrl-C).
        A second one acts as usual."""
        import threading
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum, frame):
            if self.stop_signal:
                signal.signal(signum, old.get(signum, signal.SIG_DFL))
                signal.raise_signal(signum)
                return
            self.stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, handler)
        return old

    def fit(self) -> dict:
        old = self._install_signal_handlers()
        try:
            return self._fit()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _fit(self) -> dict:
        cfg, info = self.cfg, self.info
        state_path = self.out / STATE_NAME
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        D.barrier(info)
        if state_path.exists():
            if not self.resume:
                raise ValueError(f"{str(self.out)!r} already holds a run ({STATE_NAME}); pass --resume to continue "
                                 "it or choose another --out")
            self.load(state_path)
            if info.is_main:
                truncate_metrics(self.out / METRICS_NAME, self.step)
                print(f"train: resumed {self.out} at step {self.step} (data position {self.data_pos})", file=sys.stderr)
        else:
            if self.resume and info.is_main:
                print(f"train: nothing to resume in {self.out}: starting from scratch", file=sys.stderr)
            seed_everything(cfg.seed + info.rank)
        if info.is_main:
            rc = {**self.run_config, "train": dataclasses.asdict(cfg), "world_size": info.world_size}
            atomic_save_file(lambda tmp: Path(tmp).write_text(json.dumps(rc, indent=2, default=str) + "\n"),
                             self.out / RUN_CONFIG_NAME)
        if self.step >= cfg.steps:
            return {"step": self.step, "resumed_finished": True}

        kill_at = int(os.environ.get(KILL_ENV, "0"))
        stream = batch_stream(self.train_ds, self.micro, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                              start=self.data_pos, collate=self.collate, num_workers=cfg.num_workers)
        metrics = MetricsWriter(self.out, info.is_main)
        bar = None
        if info.is_main and cfg.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True, file=sys.stderr)
        self.model.train()
        window = {"loss": 0.0, "n": 0, "examples": 0, "t0": time.perf_counter(), "logs": {}}
        summary: dict = {}
        t_start = time.perf_counter()
        t_saved = t_start  # for save_every_min
        say = (lambda line: print(line, file=sys.stderr, flush=True)) if info.is_main and not cfg.progress else None
        try:
            while self.step < cfg.steps:
                loss, logs, grad_norm, examples = self.train_step(stream)
                self.step += 1
                window["loss"] += loss
                window["n"] += 1
                window["examples"] += examples
                for k, v in logs.items():
                    window["logs"][k] = window["logs"].get(k, 0.0) + v
                last = self.step == cfg.steps
                if bar is not None:
                    bar.update(1)
                if cfg.log_every and (self.step % cfg.log_every == 0 or last):
                    dt = time.perf_counter() - window["t0"]
                    rec = {"step": self.step, "loss": window["loss"] / window["n"], "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm, "examples_per_s": window["examples"] * info.world_size / max(dt, 1e-9),
                           "steps_per_s": window["n"] / max(dt, 1e-9), "epoch": self._epoch(),
                           "elapsed_s": time.perf_counter() - t_start,  # wall time of this process, evals included
                           **{k: v / window["n"] for k, v in window["logs"].items()}}
                    summary.update(rec)
                    metrics.write(rec)
                    if info.is_main:
                        if bar is not None:
                            bar.set_postfix(loss=f"{rec['loss']:.4g}", ex_s=f"{rec['examples_per_s']:.0f}", refresh=False)
                    if say is not None:
                        say(f"train: step {self.step}/{cfg.steps} loss {rec['loss']:.4g} lr {rec['lr']:.3g} "
                            f"{rec['examples_per_s']:.1f} ex/s, {(time.perf_counter() - t_start) / 60:.1f} min")
                    window = {"loss": 0.0, "n": 0, "examples": 0, "t0": time.perf_counter(), "logs": {}}
                do_eval = self.val_ds is not None and cfg.eval_batches > 0 and (
                    last or (cfg.eval_every and self.step % cfg.eval_every == 0))
                do_sample = hasattr(self.model, "sample_images") and cfg.num_samples > 0 and (
                    last or (cfg.sample_every and self.step % cfg.sample_every == 0))
                t_side = time.perf_counter()  # evaluation / sampling / saving: not in the throughput
                if do_eval or do_sample:
                    self.sync_eval_model()
                    if info.is_main:
                        rec = {"step": self.step, "elapsed_s": time.perf_counter() - t_start}
                        if do_eval:
                            rec.update(self.evaluate())
                        if do_sample:
                            rec["samples"] = str(self.sample().relative_to(self.out))
                        summary.update(rec)
                        metrics.write(rec)
                        line = f"step {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                                  if isinstance(v, float))
                        if bar is not None and do_eval:
                            bar.write(line)
                        elif say is not None and do_eval:
                            say("train: " + line)
                    D.barrier(info)
                by_time = bool(cfg.save_every_min) and D.any_true(
                    time.perf_counter() - t_saved >= 60.0 * cfg.save_every_min, info, self.device)
                if last or by_time or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
                    t_saved = time.perf_counter()
                    if say is not None and not last:
                        say(f"train: saved {self.out} at step {self.step}")
                window["t0"] += time.perf_counter() - t_side
                if kill_at and self.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.stop_all and self.step < cfg.steps:
                    if self.last_saved_step != self.step:
                        self.save()
                    if info.is_main:
                        print(f"\ntrain: stopped by a signal at step {self.step}; saved {self.out}; continue with "
                              f"--resume", file=sys.stderr)
                    summary["interrupted"] = int(self.stop_all_signal())
                    break
        finally:
            if bar is not None:
                bar.close()
            metrics.close()
        summary["wall_s"] = time.perf_counter() - t_start
        summary["step"] = self.step
        return summary

    def _epoch(self) -> float:
        n = len(self.train_ds) if hasattr(self.train_ds, "__len__") else 0
        return self.data_pos * self.micro * self.info.world_size / n if n else 0.0

    def train_step(self, stream) -> tuple[float, dict, float | None, int]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        logs_sum: dict[str, float] = {}
        examples = 0
        for m in range(cfg.grad_accum):
            batch = to_device(next(stream), self.device)
            examples += batch_size_of(batch)
            with self.sync_ctx(m == cfg.grad_accum - 1):
                with self.autocast():
                    loss, logs = self.loss_fn(batch)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + _float(v)
        self.data_pos += cfg.grad_accum
        max_norm = cfg.clip if cfg.clip > 0 else float("inf")
        gn = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        gn = D.full_tensor(gn)
        # mean loss and logs over ranks (one small all-reduce); NaN on any rank reaches all
        keys = sorted(logs_sum)
        stop = torch.tensor(float(self.stop_signal), device=self.device)  # a signal on any rank stops all
        stats = torch.stack([loss_sum, *[torch.tensor(logs_sum[k], device=self.device) for k in keys], stop]).float()
        if self.info.enabled:
            torch.distributed.all_reduce(stats)
            stats[:-1] /= self.info.world_size
        stats = stats.tolist()
        self.stop_all = stats[-1] > 0
        stats = [v / cfg.grad_accum for v in stats[:-1]]
        loss_val, logs_mean = stats[0], dict(zip(keys, stats[1:]))
        gn_val = float(gn)
        if not (math.isfinite(loss_val) and math.isfinite(gn_val)):
            where = (f"the last good checkpoint is {self.out} (step {self.last_saved_step})"
                     if self.last_saved_step is not None else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"non-finite {'loss' if not math.isfinite(loss_val) else 'gradient norm'} at step {self.step + 1} "
                f"(loss={loss_val}, grad_norm={gn_val}); stopped without saving: {where}. Try a lower train.lr, "
                f"a longer train.warmup, train.clip > 0 or train.amp=fp32.")
        self.optimizer.step()
        if hasattr(self.model, "post_step"):  # e.g. CLIP clamps its logit scale after every step
            with torch.no_grad():
                self.model.post_step()
        self.scheduler.step()
        if self.ema is not None and (self.step + 1) % cfg.ema_every == 0:
            self.ema.update(self.model)
        return loss_val, logs_mean, gn_val, examples


def fit(model: nn.Module, train_ds, cfg: TrainConfig | None = None, *, out: str | os.PathLike, val_ds=None,
        resume: bool = False, run_config: dict | None = None, collate: Callable | None = None, **overrides) -> dict:
    """Train `model` on `train_ds` (a map-style or iterable dataset of items the model's
    collate / default_collate turns into the batch `model.loss` takes). Keyword overrides
    are TrainConfig fields: fit(model, ds, out="runs/x", steps=100, lr=1e-3)."""
    if cfg is None:
        cfg = TrainConfig(**overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return Trainer(model, train_ds, cfg, out, val_ds=val_ds, resume=resume, run_config=run_config,
                   collate=collate).fit()
