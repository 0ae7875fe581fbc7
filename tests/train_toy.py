"""A tiny registered model and dataset for the training-engine tests (imported as
tests.train_toy, also by the CLI: `--data tests.train_toy:toy_data`)."""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import mmgen
from mmgen.layers import LearnedPositions, Transformer, TransformerConfig
from mmgen.models.base import Model
from mmgen.registry import register_model, register_preset


# the kill/resume tests: each process SIGKILLs itself at this loss call (an environment variable,
# not a model field, so the resumed run, which reads the model fields back, does not inherit it)
SIGKILL_ENV = "TRAIN_TOY_SIGKILL_AT_CALL"


@dataclass
class ToyConfig:
    dim: int = 16
    depth: int = 2
    in_dim: int = 6
    seq: int = 4
    dropout: float = 0.1  # exercises the RNG restore on resume
    nan_after: int = 0  # loss calls after which the loss is NaN (0 = never): the NaN-stop test
    sigterm_at: int = 0  # rank 0 sends itself SIGTERM at this loss call (0 = never): the stop test


@register_model("train_toy")
class ToyModel(Model):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        c = config
        self.inp = nn.Linear(c.in_dim, c.dim)
        self.pos = LearnedPositions(c.seq, c.dim)
        self.body = Transformer(TransformerConfig(dim=c.dim, depth=c.depth, num_heads=2, dropout=c.dropout))
        self.head = nn.Linear(c.dim, 1)
        self.calls = 0

    def forward(self, x):  # (B, T, in_dim) -> (B, T)
        return self.head(self.body(self.pos(self.inp(x)))).squeeze(-1)

    def loss(self, batch):
        pred = self(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        self.calls += 1
        if self.config.sigterm_at and self.calls == self.config.sigterm_at and os.environ.get("RANK", "0") == "0":
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        if self.calls == int(os.environ.get(SIGKILL_ENV, "0")):  # every rank: as if the machine died
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        if self.config.nan_after and self.calls > self.config.nan_after:
            loss = loss * float("nan")
        return loss, {"mae": (pred - batch["y"]).abs().mean().item()}

    def example_batch(self, batch_size=2, device="cpu"):
        return {k: v.to(device) for k, v in _items(batch_size, 123, self.config).items()}

    @torch.no_grad()
    def sample_images(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, self.config.seq, self.config.in_dim, generator=g).to(self.device)
        y = torch.tanh(self(x))  # (n, T) in [-1, 1]
        return y[:, None, None, :].expand(n, 3, self.config.seq, self.config.seq).contiguous()  # (n, 3, T, T)


if "train_toy_tiny" not in mmgen.list_models():
    register_preset("train_toy_tiny", ToyModel, description="a 2-block regression toy for the train tests")


def _items(n, seed, c: ToyConfig):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c.seq, c.in_dim, generator=g)
    w = torch.linspace(-1, 1, c.in_dim)
    y = torch.tanh(x @ w) + 0.5 * x[:, :, 0].roll(1, dims=1)  # (n, T): needs attention across positions
    return {"x": x, "y": y}


class ToyData(torch.utils.data.Dataset):
    def __init__(self, split="train", n=64, seed=None, **cfg):
        c = ToyConfig(**cfg)
        self.data = _items(n, seed if seed is not None else (0 if split == "train" else 1), c)

    def __len__(self):
        return self.data["x"].shape[0]

    def __getitem__(self, i):
        return {"x": self.data["x"][i], "y": self.data["y"][i]}


class ToyStream(torch.utils.data.IterableDataset):
    """An endless stream: item i is a function of i only."""

    def __init__(self, seed=0):
        self.seed = seed

    def __iter__(self):
        i = 0
        while True:
            d = _items(1, self.seed * 100_003 + i, ToyConfig())
            yield {"x": d["x"][0], "y": d["y"][0]}
            i += 1


class ToyCaptions(torch.utils.data.Dataset):
    """{"image" (3, 32, 32), "label", "caption"}: a colour field with a caption naming it (a CLIP
    stand-in that needs no rendering)."""
    COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1)}

    def __init__(self, split="train", n=32):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        names = list(self.COLOURS)
        self.labels = torch.randint(0, len(names), (n,), generator=g).tolist()
        self.noise = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
        self.names = names

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        c = self.labels[i]
        image = (torch.tensor(self.COLOURS[self.names[c]], dtype=torch.float)[:, None, None] + self.noise[i]).clamp(-1, 1)
        return {"image": image, "label": c, "caption": self.names[c]}


def captions(split="train", n=32):
    return ToyCaptions(split, n)


def toy_data(split="train", n=64, stream=False):
    if stream:
        return ToyStream(0 if split == "train" else 1)
    return ToyData(split, n=n)


class ByteText(torch.utils.data.Dataset):
    """Byte-token blocks {"input_ids" (T,), "labels" (T,)} of a repeated sentence (a text
    stand-in for the GPT smoke test that needs no data files)."""

    def __init__(self, split="train", block=16):
        text = ("to be, or not to be, that is the question. " * 40).encode()
        ids = torch.tensor(list(text))
        starts = range(0 if split == "train" else 7, len(ids) - block - 1, block)
        self.blocks = [ids[s:s + block + 1] for s in starts]

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        b = self.blocks[i]
        return {"input_ids": b[:-1], "labels": b[1:]}


def byte_text(split="train", block=16):
    return ByteText(split, block)


# ---------------------------------------------------------------------------------------------
# launching the CLI in child processes

def _child(rank: int, world: int, port: int, args: list[str], env: dict) -> None:
    # what torchrun would set; forked from pytest, so torch is already imported (fast start)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **env})
    torch.set_num_threads(1)
    try:
        import mmgen.train
        code = mmgen.train.main(args)
    except BaseException:  # noqa: BLE001 - report, then leave without running pytest's atexit
        import traceback
        traceback.print_exc()
        code = 1
    os._exit(code)


def launch(world: int, args: list[str], **env) -> list[int]:
    """Run `python -m train ARGS` (train.main) in `world` forked processes with torchrun's
    environment (gloo when world > 1). Forked, not fresh interpreters: torch is already
    imported, which saves seconds per process on a loaded machine. Returns the exit codes
    (-9 for a SIGKILL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_child, args=(r, world, port, args, env)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]
