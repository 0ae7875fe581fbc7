"""Resumable, shardable batch streams.

The data position is the number of *global micro-batches* consumed. Global micro-batch k
holds G = batch_size / grad_accum examples; rank r of W takes the r-th contiguous slice of
b = G / W of them, so W ranks with global batch B see exactly the examples one process
with batch B sees (the DDP/FSDP equivalence rests on this).

- Map-style datasets: a seeded permutation per epoch (torch.Generator(seed + epoch)),
  epochs drop their last incomplete global micro-batch. Restoring position k skips
  straight to epoch k // per_epoch, offset k % per_epoch: no data is read.
- Iterable datasets (streams): items are read in order; restoring position k reads and
  drops k * G items (a dataset may define `skip(n)` to jump without generating them).
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler
from torch.utils.data import default_collate


class ResumableBatchSampler(Sampler[list[int]]):
    """Infinite batch sampler over a map-style dataset of `n` items: yields this rank's index
    lists of global micro-batches start, start+1, ... (DistributedSampler-compatible sharding:
    rank r of world takes slice [r*b, (r+1)*b) of each global micro-batch)."""

    def __init__(self, n: int, micro_batch: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start: int = 0, shuffle: bool = True):
        self.n, self.b, self.seed, self.rank, self.world = n, micro_batch, seed, rank, world_size
        self.global_micro = micro_batch * world_size
        self.per_epoch = n // self.global_micro
        if self.per_epoch < 1:
            raise ValueError(f"the dataset has {n} items, fewer than one global micro-batch of "
                             f"{self.global_micro} (batch_size / grad_accum): lower train.batch_size")
        self.start, self.shuffle = start, shuffle

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        epoch, order = None, None
        while True:
            e, j = divmod(k, self.per_epoch)
            if e != epoch:
                epoch, order = e, self.epoch_order(e)
            lo = j * self.global_micro + self.rank * self.b
            yield order[lo:lo + self.b].tolist()
            k += 1

    def __len__(self) -> int:  # one epoch; the sampler itself never ends
        return self.per_epoch


def _stream_batches(ds, micro_batch: int, rank: int, world: int, start: int, collate: Callable) -> Iterator:
    """Batches of this rank's slices of the global micro-batches of an iterable dataset."""
    G = micro_batch * world
    if start and hasattr(ds, "skip"):
        it = iter(ds.skip(start * G))
    else:
        it = iter(ds)
        if start:
            it = itertools.islice(it, start * G, None)
    epoch = 0
    while True:
        chunk = list(itertools.islice(it, G))
        if len(chunk) < G:  # a finite stream ended: start it again
            epoch += 1
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
            it = iter(ds)
            rest = list(itertools.islice(it, G - len(chunk)))
            if not chunk and not rest:
                raise ValueError("the iterable dataset yielded no items")
            chunk += rest
            if len(chunk) < G:
                raise ValueError(f"the iterable dataset yields fewer items ({len(chunk)}) than one global "
                                 f"micro-batch ({G})")
        yield collate(chunk[rank * micro_batch:(rank + 1) * micro_batch])


def batch_stream(ds, micro_batch: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
                 collate: Callable | None = None, num_workers: int = 0) -> Iterator:
    """An endless iterator of this rank's micro-batches from global micro-batch `start` on."""
    collate = collate or default_collate
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__getitem__"):
        return _stream_batches(ds, micro_batch, rank, world_size, start, collate)
    sampler = ResumableBatchSampler(len(ds), micro_batch, seed=seed, rank=rank, world_size=world_size, start=start)
    if num_workers == 0:
        def gen():
            for idx in sampler:
                yield collate([ds[i] for i in idx])
        return gen()
    # Workers get a seed derived from (seed, rank, start), never from the global RNG, so the
    # training RNG stream is untouched by the loader.
    g = torch.Generator().manual_seed(seed * 7919 + rank * 104729 + start)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                        generator=g, persistent_workers=True, pin_memory=torch.cuda.is_available())
    return iter(loader)


EVAL_ORDER_SEED = 0  # the evaluation subset is the same for every run and every train.seed


def eval_indices(n: int, count: int) -> list[int]:
    """Which `count` of a map-style split's `n` items are evaluated: all of them when count >=
    n, else the first `count` of a fixed seeded permutation (a uniform random subset, the same
    every evaluation). Splits are often stored sorted by class; reading their first items
    would evaluate a few classes only."""
    if count >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(EVAL_ORDER_SEED)
    return torch.randperm(n, generator=g)[:count].tolist()


def eval_batches(ds, micro_batch: int, n_batches: int, collate: Callable | None = None) -> Iterator:
    """n_batches batches of ds, the same every evaluation: for a map-style dataset, a fixed
    uniform random subset of n_batches x micro_batch items (the whole split when it is no
    larger); an iterable dataset (a stream) is read from its start."""
    collate = collate or default_collate
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__getitem__"):
        it = iter(ds)
        for _ in range(n_batches):
            chunk = list(itertools.islice(it, micro_batch))
            if not chunk:
                return
            yield collate(chunk)
        return
    idx = eval_indices(len(ds), n_batches * micro_batch)
    for k in range(0, len(idx), micro_batch):
        yield collate([ds[i] for i in idx[k:k + micro_batch]])
