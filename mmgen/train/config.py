"""TrainConfig: every knob of the one training loop, with defaults, parsed from
`--set train.key=value` through mmgen.config's typed dotted overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

AMP_MODES = ("auto", "bf16", "fp32")
DIST_MODES = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    # schedule
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # global batch per optimizer step (all ranks x all accumulation micro-steps)
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 3e-4  # peak learning rate
    min_lr: float = 0.0  # the cosine decays to this
    warmup: int = 100  # linear warm-up steps (lr / warmup, 2 lr / warmup, ..., lr)
    schedule: str = "cosine"  # cosine | constant (after warm-up)
    # optimizer (AdamW)
    weight_decay: float = 0.01  # on >=2-D weights only; see mmgen.train.optim.param_groups
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float = 1.0  # max global grad norm, 0 = no clipping
    # EMA of the weights (used for evaluation, sampling and the exported model.safetensors)
    ema: float = 0.0  # decay, 0 = off (e.g. 0.999 / 0.9999)
    ema_warmup: bool = True  # decay_t = min(ema, (1 + t) / (10 + t))
    ema_every: int = 1  # update the EMA every N optimizer steps
    # numerics / speed
    amp: str = "auto"  # auto (bf16 on CUDA with bf16 support, fp32 on CPU) | bf16 | fp32
    compile: bool = False  # torch.compile(model.loss)
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps
    seed: int = 0
    init_from: str = ""  # start from this checkpoint's weights (a run directory or shipped name), not at random
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    # evaluation, sampling, logging, checkpoints (every N optimizer steps; 0 = never, the
    # final step always evaluates, samples and saves)
    eval_every: int = 0
    eval_batches: int = 10  # a fixed random subset of eval_batches batches (the whole split when smaller)
    val_split: str = "val"  # split given to build_dataset for evaluation ("" = no evaluation)
    sample_every: int = 0
    num_samples: int = 16
    log_every: int = 10
    save_every: int = 500
    keep_every: int = 0  # also keep the exported weights of every N-th step in <out>/steps/<step> (0 = off):
    #                      the checkpoints that quality-against-training-time curves are drawn from
    save_every_minutes: float = 3.0  # also save when this much time passed since the last save (0 = off):
    #                                  a SIGKILL loses at most this much work, whatever save_every is
    progress: bool = True  # rank 0: a tqdm bar on a terminal, else a plain line every progress_every_s
    progress_every_s: float = 30.0  # seconds between progress lines off a terminal (0: first and last step only)
    # data loading
    num_workers: int = 0
    # distributed (under torchrun)
    distributed: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard per TransformerBlock, then the root)
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient in a step

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, (tuple, list)) else (v,)
            if any(isinstance(x, float) and not math.isfinite(x) for x in vals):
                raise ValueError(f"train.{f.name} must be a finite number, got {v}")
        check_device_name(self.device)
        if self.amp not in AMP_MODES:
            raise ValueError(f"train.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.distributed not in DIST_MODES:
            raise ValueError(f"train.distributed must be one of {DIST_MODES}, got {self.distributed!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("steps", "batch_size", "grad_accum", "ema_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "eval_batches", "sample_every", "num_samples", "log_every",
                     "save_every", "keep_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train.ema must be a decay in [0, 1) (0 = off), got {self.ema}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= train.min_lr <= train.lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.clip < 0:
            raise ValueError(f"train.clip must be >= 0 (0 = off), got {self.clip}")
        for name in ("save_every_minutes", "progress_every_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        self.betas = tuple(self.betas)

    def micro_batch(self, world_size: int = 1) -> int:
        """Examples per rank per micro-step."""
        per = self.batch_size / (world_size * self.grad_accum)
        if per != int(per) or per < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be divisible by world_size x grad_accum "
                             f"= {world_size} x {self.grad_accum}")
        return int(per)


def check_device_name(name: str) -> None:
    """A device torch can name (auto, cpu, cuda, cuda:N, mps, ...); whether it is present is
    checked when training starts (train.dist.resolve_device)."""
    if name == "auto":
        return
    import torch
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"train.device: unknown device {name!r} (expected auto, cpu, cuda, cuda:N or mps)") from None


def train_fields() -> list[tuple[str, str, object]]:
    """(name, type, default) of every TrainConfig field, for --help."""
    import typing
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        out.append((f.name, getattr(tp, "__name__", str(tp)) if not typing.get_args(tp) else str(tp), f.default))
    return out
