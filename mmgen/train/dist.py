"""torch.distributed plumbing: the process group from torchrun's environment, DDP or FSDP2
wrapping, and full (rank-0) state dicts that work the same for every mode."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK env vars):
    NCCL on CUDA, gloo on CPU. A single process (no WORLD_SIZE or WORLD_SIZE=1) needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, **kw)
    return info


def resolve_device(name: str, info_local_rank: int | None = None) -> torch.device:
    """The torch device of train.device ('auto': CUDA when present, else CPU). A device that
    is not there is a ValueError naming the fix, never a CUDA traceback."""
    from ..devices import check_device
    dev = check_device(name, f"train.device={name}")
    if dev.type == "cuda":
        if dev.index is None:
            local = int(os.environ.get("LOCAL_RANK", "0")) if info_local_rank is None else info_local_rank
            dev = check_device(f"cuda:{local}", f"train.device={name} on local rank {local}")
        torch.cuda.set_device(dev)
    return dev


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_true(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank when flag is true on any rank (so all stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules fully_shard wraps one by one: model.fsdp_units() when the model defines it,
    else every mmgen.layers.TransformerBlock (the shared block all models are built from)."""
    if hasattr(model, "fsdp_units"):
        return list(model.fsdp_units())
    from mmgen.layers import TransformerBlock
    return [m for m in model.modules() if isinstance(m, TransformerBlock)]


class LossModule(nn.Module):
    """forward(batch) = model.loss(batch): lets DDP see a forward call (it arms gradient
    synchronisation in forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def wrap_model(model: nn.Module, mode: str, info: DistInfo, device: torch.device, *,
               find_unused_parameters: bool = False):
    """Returns (loss_fn, sync_ctx) where loss_fn(batch) -> (loss, logs) and sync_ctx(is_last)
    is a context manager that skips gradient synchronisation on accumulation micro-steps."""
    import contextlib
    if not info.enabled:
        return model.loss, lambda last: contextlib.nullcontext()
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp = DDP(LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=find_unused_parameters)
        return ddp, lambda last: contextlib.nullcontext() if last else ddp.no_sync()
    if mode == "fsdp":
        import warnings
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
        # the loop never modifies the loss in place (it divides out of place), so FSDP2's
        # warning about views returned from a forward does not apply
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        # fully_shard cannot shard 0-d parameters (CLIP's logit_scale): they stay replicated
        # plain tensors and their gradients are averaged by all_reduce_replicated_grads
        scalars = {p for p in model.parameters() if p.ndim == 0}
        for unit in fsdp_units(model):
            fully_shard(unit, ignored_params=scalars or None)
        fully_shard(model, ignored_params=scalars or None)
        register_fsdp_forward_method(model, "loss")

        @contextlib.contextmanager
        def sync(last):
            model.set_requires_gradient_sync(last)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return model.loss, sync
    raise ValueError(f"train.distributed must be 'ddp' or 'fsdp', got {mode!r}")


def replicated_params(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters FSDP left unsharded (plain tensors among DTensors)."""
    from torch.distributed.tensor import DTensor
    if not is_sharded(model):
        return []
    return [p for p in model.parameters() if p.requires_grad and not isinstance(p, DTensor)]


def all_reduce_replicated_grads(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of replicated parameters over ranks (FSDP does it for shards)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not info.enabled:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    for g, v in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(v.view_as(g))


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global gradient norm (clipped to max_norm) over plain and DTensor (sharded) gradients
    alike; a collective under FSDP. Returns the norm before clipping as a plain tensor."""
    from torch.distributed.tensor import DTensor
    sharded = [p for p in params if isinstance(p, DTensor)]
    if not sharded or len(sharded) == len(params):
        return full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
    plain = [p for p in params if not isinstance(p, DTensor)]
    norms = []
    for group in (sharded, plain):
        grads = [p.grad for p in group if p.grad is not None]
        if grads:
            norms.append(full_tensor(torch.nn.utils.get_total_norm(grads)).float())
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    for group in (sharded, plain):  # one call per kind: foreach ops do not mix DTensors and tensors
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain tensor (collective: call on every rank); others as is."""
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t
