"""The one training loop. It knows nothing model-specific: it calls `model.loss(batch) ->
(loss, logs)` and, when present, the hooks `model.collate(items)`, `model.evaluate(batch) ->
logs`; sample grids come from `mmgen.pipelines.training_samples(model, n, seed)` (the
model's generation pipeline, or its own `sample_images(n, seed)`). Its parts live beside it: optimiser and schedule in
optim.py, EMA / RNG / save and load in state.py, metrics in metrics.py, the progress display in
progress.py, data order in data.py, process groups and sharding in dist.py.

Run directory (`out`):
  config.json + model.safetensors  an mmgen checkpoint (EMA weights when EMA is on)
  train_state.pt                   everything to resume: raw weights, EMA, optimizer, LR
                                   schedule, RNG states of every rank, step, data position
  run_config.json                  the resolved model / data / train config
  metrics.jsonl                    one JSON record per log / eval
  samples/step_XXXXXX.png          sample grids of generative models
Every file is written to a temporary name and renamed, so a kill never leaves a torn file.
A directory holding a checkpoint that no run wrote (config.json / model.safetensors without
train_state.pt), or a shipped checkpoint, is never written to.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mmgen.checkpoint import atomic_save_file
from mmgen.pipelines import has_samples, training_samples

from . import dist as D
from .config import TrainConfig
from .data import batch_stream, eval_batches
from .metrics import METRICS_NAME, MetricsWriter, Window, save_image_grid, truncate_metrics
from .optim import build_optimizer, lr_factor, param_groups  # noqa: F401  (lr_factor, param_groups: re-exported)
from .progress import Progress
from .state import (RUN_CONFIG_NAME, STATE_NAME, EMA, Checkpointer, check_out_dir,  # noqa: F401  (re-exported)
                    export_checkpoint, get_rng_state, seed_everything, set_rng_state)


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or inf; the run stopped without saving."""


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
        from ..devices import cpu_has_native_bf16
        if device.type == "cpu" and cpu_has_native_bf16() is False:
            warnings.warn(f"train.amp=bf16 on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}, "
                          f"no AVX-512 BF16 or AMX): autocast is emulated and can train 10x slower than fp32; "
                          f"pass --set train.amp=fp32", stacklevel=2)
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _float(v) -> float:
    return float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)


class Trainer:
    """fit() trains `model` on `train_ds` for cfg.steps optimizer steps, writing the run
    directory `out` (see the module docstring). resume=True continues from out/train_state.pt
    when it exists."""

    def __init__(self, model: nn.Module, train_ds, cfg: TrainConfig, out: str | os.PathLike, *, val_ds=None,
                 resume: bool = False, run_config: dict | None = None, collate: Callable | None = None,
                 export: Callable[[nn.Module, Path, dict], None] | None = None):
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
        self.optimizer, self.scheduler, self.params = build_optimizer(
            model, cfg, fused=self.device.type == "cuda" and not self.fsdp)
        self.ema = EMA(model, cfg.ema, cfg.ema_warmup) if cfg.ema > 0 else None
        self.ckpt = Checkpointer(model, self.optimizer, self.scheduler, self.ema, cfg, self.info, self.out,
                                 self.eval_model, self.fsdp, export)
        if cfg.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        self.step, self.data_pos = 0, 0
        self.stop_signal = 0  # SIGTERM / SIGINT received: save after this step and return
        self.stop_all = self.save_due = False  # agreed by all ranks in each step's all-reduce
        self.last_saved_step = None
        self.last_save_time = time.perf_counter()
        self.replicated = D.replicated_params(model)  # FSDP left these unsharded (0-d parameters)

    # -- state (mmgen.train.state.Checkpointer) ------------------------------------------------

    def sync_eval_model(self) -> None:
        self.ckpt.sync_eval_model()

    def save(self) -> None:
        """train_state.pt and the exported checkpoint (collective; rank 0 writes)."""
        self.ckpt.save(self.step, self.data_pos)
        self.last_saved_step = self.step  # on every rank: ranks must agree on whether to save
        self.last_save_time = time.perf_counter()

    def load(self, path: Path) -> None:
        self.step, self.data_pos = self.ckpt.load(path)
        self.last_saved_step = self.step

    # -- evaluation and samples -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean of model.evaluate(batch) (or loss + logs) over eval_batches batches of val_ds (a
        fixed random subset, or all of it: mmgen.train.data.eval_batches), per example, with the EMA
        weights, under a fixed seed (the training RNG stream is untouched)."""
        m = self.eval_model
        sums: dict[str, float] = {}
        n = 0  # examples: a smaller last batch weighs by its size
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
                b = batch_size_of(batch) or 1
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + _float(v) * b
                n += b
        return {f"val/{k}": v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def sample(self) -> Path | None:
        if not has_samples(self.eval_model) or self.cfg.num_samples == 0:
            return None
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            with self.autocast():
                images = training_samples(self.eval_model, self.cfg.num_samples, seed=self.cfg.seed)
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
        check_out_dir(self.out, self.resume)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        D.barrier(info)
        if state_path.exists():
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

        stream = batch_stream(self.train_ds, self.micro, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                              start=self.data_pos, collate=self.collate, num_workers=cfg.num_workers)
        metrics = MetricsWriter(self.out, info.is_main)
        progress = Progress(cfg.steps, self.step, enabled=info.is_main and cfg.progress, every_s=cfg.progress_every_s)
        self.model.train()
        window = Window()
        summary: dict = {}
        t_start = self.t_start = self.last_save_time = time.perf_counter()
        try:
            while self.step < cfg.steps:
                loss, logs, grad_norm, examples = self.train_step(stream)
                self.step += 1
                window.add(loss, logs, examples)
                progress.update(self.step, loss, examples * info.world_size)
                last = self.step == cfg.steps
                if cfg.log_every and (self.step % cfg.log_every == 0 or last):
                    rec = {"step": self.step, **window.means(info.world_size), "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm, "epoch": self._epoch(),
                           "elapsed_s": time.perf_counter() - t_start}  # this process's wall time, evals included
                    summary.update(rec)
                    metrics.write(rec)
                    progress.set_postfix(loss=f"{rec['loss']:.4g}", ex_s=f"{rec['examples_per_s']:.0f}")
                    window = Window()
                t_side = time.perf_counter()  # evaluation / sampling / saving: not in the throughput
                summary.update(self._evaluate_and_sample(last, metrics, progress))
                if (last or (cfg.save_every and self.step % cfg.save_every == 0) or self.save_due
                        or (cfg.keep_every and self.step % cfg.keep_every == 0)):
                    self.save()
                window.pause(time.perf_counter() - t_side)
                if self.stop_all and not last:
                    if self.last_saved_step != self.step:
                        self.save()
                    if info.is_main:
                        progress.write(f"train: stopped by a signal at step {self.step}; saved {self.out}; "
                                       "continue with --resume")
                    summary["interrupted"] = int(self.stop_all_signal())
                    break
        finally:
            progress.close()
            metrics.close()
        summary["wall_s"] = time.perf_counter() - t_start
        summary["step"] = self.step
        return summary

    def _evaluate_and_sample(self, last: bool, metrics: "MetricsWriter", progress: Progress) -> dict:
        """Evaluation and sample grid when due (collective: rank 0 works, the others wait)."""
        cfg = self.cfg
        do_eval = self.val_ds is not None and cfg.eval_batches > 0 and (
            last or (cfg.eval_every and self.step % cfg.eval_every == 0))
        do_sample = has_samples(self.model) and cfg.num_samples > 0 and (
            last or (cfg.sample_every and self.step % cfg.sample_every == 0))
        if not (do_eval or do_sample):
            return {}
        self.sync_eval_model()
        rec = {"step": self.step, "elapsed_s": time.perf_counter() - self.t_start}
        if self.info.is_main:
            if do_eval:
                rec.update(self.evaluate())
            if do_sample:
                rec["samples"] = str(self.sample().relative_to(self.out))
            metrics.write(rec)
            if do_eval:
                progress.write(f"train: step {self.step}: " + ", ".join(
                    f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float)))
        D.barrier(self.info)
        return rec if self.info.is_main else {}

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
        if self.replicated:
            D.all_reduce_replicated_grads(self.replicated, self.info)
        max_norm = cfg.clip if cfg.clip > 0 else float("inf")
        gn = D.clip_grad_norm(self.params, max_norm)
        # mean loss and logs over ranks (one small all-reduce); NaN on any rank reaches all; so do
        # a stop signal on any rank and rank 0's clock saying a timed save is due
        keys = sorted(logs_sum)
        stop = float(self.stop_signal)
        due = float(self.info.is_main and cfg.save_every_minutes > 0
                    and time.perf_counter() - self.last_save_time >= 60 * cfg.save_every_minutes)
        stats = torch.stack([loss_sum, *[torch.tensor(logs_sum[k], device=self.device) for k in keys],
                             torch.tensor(stop, device=self.device), torch.tensor(due, device=self.device)]).float()
        if self.info.enabled:
            torch.distributed.all_reduce(stats)
            stats[:-2] /= self.info.world_size
        stats = stats.tolist()
        self.stop_all, self.save_due = stats[-2] > 0, stats[-1] > 0
        stats = [v / cfg.grad_accum for v in stats[:-2]]
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
        resume: bool = False, run_config: dict | None = None, collate: Callable | None = None,
        export: Callable[[nn.Module, Path, dict], None] | None = None, **overrides) -> dict:
    """Train `model` on `train_ds` (a map-style or iterable dataset of items the model's
    collate / default_collate turns into the batch `model.loss` takes). Keyword overrides
    are TrainConfig fields: fit(model, ds, out="runs/x", steps=100, lr=1e-3). `export(model,
    out, extra)` writes what each save leaves beside train_state.pt (default: the mmgen
    checkpoint, config.json + model.safetensors; a fine-tuning run writes its adapter)."""
    if cfg is None:
        cfg = TrainConfig(**overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return Trainer(model, train_ds, cfg, out, val_ds=val_ds, resume=resume, run_config=run_config,
                   collate=collate, export=export).fit()
