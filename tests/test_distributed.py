"""Two CPU processes (gloo, torchrun's environment) with global batch B follow the loss curve of one
process with batch B, for DDP and for FSDP2; the FSDP run is also SIGKILLed mid-run and
resumed, so sharded optimizer / EMA state must round-trip through train_state.pt."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import torch

import mmgen
import tests.train_toy  # noqa: F401  (registers train_toy_tiny for load_pretrained)
import train
from train.loop import KILL_ENV

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["train_toy_tiny", "--data", "tests.train_toy:toy_data", "--data-set", "n=32", "--set", "model.dropout=0",
        "--set", "train.steps=6", "--set", "train.batch_size=8", "--set", "train.grad_accum=2",
        "--set", "train.log_every=1", "--set", "train.progress=false", "--set", "train.lr=1e-2",
        "--set", "train.warmup=1", "--set", "train.ema=0.9", "--set", "train.save_every=3",
        "--set", "train.eval_batches=2"]


def _child(rank: int, world: int, port: int, args: list[str], env: dict) -> None:
    # what torchrun would set; forked from pytest, so torch is already imported (fast start)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **env})
    torch.set_num_threads(1)
    try:
        code = train.main(args)
    except BaseException:  # noqa: BLE001 - report, then leave without running pytest's atexit
        import traceback
        traceback.print_exc()
        code = 1
    os._exit(code)


def _launch(world: int, args: list[str], **env) -> list[int]:
    """Run `python -m train ARGS` as `world` gloo processes (torchrun's environment, forked
    processes instead of fresh interpreters); returns their exit codes."""
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


def _records(out: Path):
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = torch.tensor([r["loss"] for r in recs if "loss" in r])
    val = [r["val/loss"] for r in recs if "val/loss" in r]
    return losses, torch.tensor(val)


def test_ddp_and_fsdp_follow_the_single_process_curve(tmp_path):
    assert _launch(1, ARGS + ["--out", str(tmp_path / "single")]) == [0]
    ref_loss, ref_val = _records(tmp_path / "single")
    assert len(ref_loss) == 6

    assert _launch(2, ARGS + ["--out", str(tmp_path / "ddp")]) == [0, 0]
    loss, val = _records(tmp_path / "ddp")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "ddp" / "run_config.json").read_text())["world_size"] == 2

    fsdp = ARGS + ["--set", "train.distributed=fsdp", "--out", str(tmp_path / "fsdp")]
    assert _launch(2, fsdp, **{KILL_ENV: "4"}) == [-9, -9]  # both ranks killed after step 4
    assert torch.load(tmp_path / "fsdp" / "train_state.pt", weights_only=True)["step"] == 3
    assert _launch(2, ["--resume", "--out", str(tmp_path / "fsdp")]) == [0, 0]
    loss, val = _records(tmp_path / "fsdp")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-6)
    # the exported checkpoint of the sharded run is a normal, loadable mmgen checkpoint

    ref = mmgen.load_pretrained(tmp_path / "single")
    got = mmgen.load_pretrained(tmp_path / "fsdp")
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(got(x), ref(x), rtol=1e-3, atol=1e-3)
