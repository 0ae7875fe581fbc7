"""Two CPU processes (gloo, torchrun's environment) with global batch B follow the loss curve of one
process with batch B, for DDP and for FSDP2; the FSDP run is also SIGKILLed mid-run and
resumed, so sharded optimizer / EMA state must round-trip through train_state.pt."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import mmgen
from tests.train_toy import SIGKILL_ENV, launch  # also registers train_toy_tiny for load_pretrained

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["train_toy_tiny", "--data", "tests.train_toy:toy_data", "--data-set", "n=32", "--set", "model.dropout=0",
        "--set", "train.steps=6", "--set", "train.batch_size=8", "--set", "train.grad_accum=2",
        "--set", "train.log_every=1", "--set", "train.progress=false", "--set", "train.lr=1e-2",
        "--set", "train.warmup=1", "--set", "train.ema=0.9", "--set", "train.save_every=3",
        "--set", "train.eval_batches=2"]


def _records(out: Path):
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = torch.tensor([r["loss"] for r in recs if "loss" in r])
    val = [r["val/loss"] for r in recs if "val/loss" in r]
    return losses, torch.tensor(val)


def test_ddp_and_fsdp_follow_the_single_process_curve(tmp_path):
    assert launch(1, ARGS + ["--out", str(tmp_path / "single")]) == [0]
    ref_loss, ref_val = _records(tmp_path / "single")
    assert len(ref_loss) == 6

    assert launch(2, ARGS + ["--out", str(tmp_path / "ddp")]) == [0, 0]
    loss, val = _records(tmp_path / "ddp")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "ddp" / "run_config.json").read_text())["world_size"] == 2

    fsdp = ARGS + ["--set", "train.distributed=fsdp", "--out", str(tmp_path / "fsdp")]
    assert launch(2, fsdp, **{SIGKILL_ENV: "9"}) == [-9, -9]  # both ranks killed after step 4 (grad_accum=2)
    assert torch.load(tmp_path / "fsdp" / "train_state.pt", weights_only=True)["step"] == 3
    assert launch(2, ["--resume", "--out", str(tmp_path / "fsdp")]) == [0, 0]
    loss, val = _records(tmp_path / "fsdp")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-6)
    # the exported checkpoint of the sharded run is a normal, loadable mmgen checkpoint

    ref = mmgen.load_pretrained(tmp_path / "single")
    got = mmgen.load_pretrained(tmp_path / "fsdp")
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(got(x), ref(x), rtol=1e-3, atol=1e-3)


def test_a_signal_on_one_rank_stops_every_rank_after_a_save(tmp_path):
    out = tmp_path / "stop"
    # rank 0 alone gets SIGTERM during its 3rd loss call (step 2 with grad_accum=2)
    assert launch(2, ARGS + ["--set", "model.sigterm_at=3", "--out", str(out)]) == [143, 143]
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == 2


def test_fsdp_trains_a_clip(tmp_path):
    """FSDP on CLIP, whose logit_scale is a 0-d parameter fully_shard cannot shard: the engine
    leaves it replicated and averages its gradient, so two FSDP ranks follow the curve of one
    process (a small CLIP on toy captions)."""
    args = ["clip_tiny", "--data", "tests.train_toy:captions", "--set", 'model.vision={"dim": 32, "depth": 1, '
            '"num_heads": 2}', "--set", "model.text.depth=1",
            "--set", "model.text.width=32", "--set", "model.text.heads=2", "--set", "model.embed_dim=32",
            "--set", "model.text.context_length=16", "--set", "train.steps=3", "--set", "train.batch_size=8",
            "--set", "train.warmup=1", "--set", "train.eval_batches=1", "--set", "train.progress=false",
            "--set", "train.lr=1e-2", "--set", "train.log_every=1"]
    assert launch(1, args + ["--out", str(tmp_path / "single")]) == [0]
    assert launch(2, args + ["--set", "train.distributed=fsdp", "--out", str(tmp_path / "fsdp")]) == [0, 0]
    ref, _ = _records(tmp_path / "single")
    got, _ = _records(tmp_path / "fsdp")
    assert len(got) == 3 and torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    model = mmgen.load_pretrained(tmp_path / "fsdp")
    assert model.logit_scale.shape == ()
    torch.testing.assert_close(model.logit_scale, mmgen.load_pretrained(tmp_path / "single").logit_scale)


def test_ranks_agree_on_the_default_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the forked ranks start here
    # no --out: rank 0 names runs/NAME-TIME and the other rank receives it (clocks may differ)
    assert launch(2, ARGS + ["--set", "train.steps=1", "--set", "train.eval_batches=0"]) == [0, 0]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("train_toy_tiny-")
    assert json.loads((runs[0] / "run_config.json").read_text())["world_size"] == 2
