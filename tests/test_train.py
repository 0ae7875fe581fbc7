"""The training engine: CLI smoke test, resume after SIGKILL == uninterrupted run, the NaN
stop, typed overrides, weight-decay groups, the schedule and resumable data order."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

import mmgen
from mmgen import train
from tests.train_toy import SIGKILL_ENV, ToyStream, launch, toy_data
from tests.train_toy import byte_text as make_byte_text
from mmgen.train.data import ResumableBatchSampler, batch_stream
from mmgen.train.optim import lr_factor, param_groups

ROOT = Path(__file__).resolve().parents[1]
TOY = ["train_toy_tiny", "--data", "tests.train_toy:toy_data"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != SIGKILL_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT), **extra}


def _cli(args, **env):
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_cli_smoke_and_load_pretrained(tmp_path):
    out = tmp_path / "run"
    rc = train.main(TOY + ["--data-set", "n=32", "--set", "train.steps=12", "--set", "train.batch_size=8",
                           "--set", "train.lr=3e-3", "--set", "train.warmup=2", "--set", "train.ema=0.5",
                           "--set", "train.log_every=1", "--set", "train.sample_every=6",
                           "--set", "train.num_samples=4", "--set", "train.progress=false",
                           "--set", "model.depth=1", "--out", str(out)])
    assert rc == 0
    model = mmgen.load_pretrained(out)
    assert model.config.depth == 1 and model.preset_name == "train_toy_tiny"
    rc_cfg = json.loads((out / "run_config.json").read_text())
    assert rc_cfg["train"]["lr"] == 3e-3 and rc_cfg["model_overrides"] == {"depth": 1}
    assert rc_cfg["data_kwargs"] == {"n": 32}
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0]  # it learns
    assert any("val/loss" in r for r in records)
    assert (out / "samples" / "step_000006.png").is_file() and (out / "samples" / "step_000012.png").is_file()
    # the exported weights are the EMA; train_state keeps both
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] == 12 and state["data_position"] == 12
    exported = load_file(out / "model.safetensors")
    for k, v in state["ema"].items():
        assert torch.equal(exported[k], v)
    assert not torch.equal(state["ema"]["head.weight"], state["model"]["head.weight"])
    # a second run into the same directory without --resume is refused
    assert train.main(TOY + ["--set", "train.steps=2", "--out", str(out)]) == 2


def test_cli_gpt_tiny_learns_and_loads(tmp_path):
    out = tmp_path / "gpt"
    rc = train.main(["gpt_tiny", "--data", "tests.train_toy:byte_text", "--data-set", "block=16",
                     "--set", "train.steps=30", "--set", "train.batch_size=16", "--set", "train.lr=3e-3",
                     "--set", "train.warmup=5", "--set", "train.log_every=10", "--set", "train.eval_batches=2",
                     "--set", "train.progress=false", "--out", str(out)])
    assert rc == 0
    model = mmgen.load_pretrained(out)
    assert model.preset_name == "gpt_tiny"
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "val/loss" not in r]
    assert losses[-1] < 0.7 * losses[0] and losses[0] > 4.0  # from ~ln(259) to well below
    val = [r["val/loss"] for r in records if "val/loss" in r][-1]
    batch = default_collate([make_byte_text("val")[i] for i in range(4)])
    with torch.no_grad():
        assert model.loss(batch)[0].item() == pytest.approx(val, rel=0.2)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    common = TOY + ["--set", "train.steps=8", "--set", "train.batch_size=8", "--set", "train.grad_accum=2",
                    "--set", "train.save_every=3", "--set", "train.ema=0.9", "--set", "train.lr=3e-3",
                    "--set", "train.warmup=2", "--set", "train.log_every=1", "--set", "train.progress=false",
                    "--set", "train.eval_every=4", "--set", "train.eval_batches=1", "--data-set", "n=24"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert launch(1, common + ["--out", str(full)]) == [0]  # forked child running train.main
    # the real `python -m train` in a fresh interpreter, SIGKILLed mid-run after step 5 (in the
    # first loss call of step 6: grad_accum=2)
    r = _cli(common + ["--out", str(killed)], **{SIGKILL_ENV: "11"})
    assert r.returncode == -9, r.stderr
    assert torch.load(killed / "train_state.pt", weights_only=True)["step"] == 3
    assert launch(1, ["--resume", "--out", str(killed)]) == [0]  # the rest comes from run_config.json
    a = torch.load(full / "train_state.pt", weights_only=True)
    b = torch.load(killed / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 8 and a["data_position"] == b["data_position"] == 16
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    wa, wb = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # metrics logged after the checkpoint and before the kill were dropped, then re-logged once
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == list(range(1, 9))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    # nan_after=10 loss calls = optimizer step 6 with grad_accum=2
    rc = train.main(TOY + ["--set", "model.nan_after=10", "--set", "train.steps=10", "--set", "train.batch_size=8",
                           "--set", "train.grad_accum=2", "--set", "train.save_every=4",
                           "--set", "train.progress=false", "--out", str(out)])
    assert rc == 3
    err = capsys.readouterr().err
    assert "non-finite loss at step 6" in err and "(step 4)" in err
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    m = mmgen.create_model("train_toy_tiny", nan_after=3)
    with pytest.raises(train.NonFiniteLossError, match="no checkpoint was written yet"):
        train.fit(m, toy_data(), out=tmp_path / "nan2", steps=5, batch_size=4, progress=False)


def test_sigterm_saves_and_resume_is_exact(tmp_path):
    """SIGTERM (preemption) finishes the step, saves and returns; resuming in the same process
    ends bit-identical to an uninterrupted run."""
    kw = dict(steps=7, batch_size=4, lr=3e-3, warmup=2, ema=0.9, progress=False, save_every=100)
    torch.manual_seed(0)
    ref = mmgen.create_model("train_toy_tiny")
    train.fit(ref, toy_data(n=16), out=tmp_path / "ref", **kw)
    torch.manual_seed(0)
    m = mmgen.create_model("train_toy_tiny", sigterm_at=3)
    summary = train.fit(m, toy_data(n=16), out=tmp_path / "stop", **kw)
    assert summary["interrupted"] == 15 and summary["step"] == 3
    assert torch.load(tmp_path / "stop" / "train_state.pt", weights_only=True)["step"] == 3
    torch.manual_seed(123)  # the resumed run must not depend on the RNG state it starts with
    m2 = mmgen.create_model("train_toy_tiny")
    train.fit(m2, toy_data(n=16), out=tmp_path / "stop", resume=True, **kw)
    a, b = ref.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_overrides_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    assert "train_toy_tiny" in text and "grad_accum" in text and "recipes" in text
    args = TOY + ["--set", "train.betas=0.8,0.95", "--set", "train.compile=false", "--set", "model.dim=8",
                  "--print-config"]
    assert train.main(args) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["betas"] == [0.8, 0.95] and cfg["model_overrides"] == {"dim": 8}
    for bad, msg in ((["--set", "lr=1"], "did you mean train.lr"), (["--set", "train.lrr=1"], "did you mean 'lr'"),
                     (["--set", "train.steps=x"], "expected int"), (["--set", "train.amp=fp16"], "amp must be"),
                     (["--set", "train.batch_size=6", "--set", "train.grad_accum=4"], "divisible"),
                     (["--set", "model.nope=1"], "has no field 'nope'")):
        assert train.main(TOY + bad + ["--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err
    assert train.main(["--list-recipes"]) == 0


def test_weight_decay_groups():
    m = mmgen.create_model("train_toy_tiny")
    decay, no_decay = param_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    dec = {names[id(p)] for p in decay["params"]}
    nod = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "inp.weight" in dec and "body.blocks.0.attn.qkv.weight" in dec and "head.weight" in dec
    assert {"inp.bias", "pos.weight", "body.blocks.0.norm1.weight", "body.norm.bias"} <= nod
    assert dec.isdisjoint(nod) and len(dec) + len(nod) == len(list(m.parameters()))
    emb = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    groups = param_groups(emb, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 2]  # the linear weight decays; embedding + bias do not


def test_lr_schedule():
    cfg = train.TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup=10)
    f = lr_factor(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_data_order_resumes_and_shards():
    s = ResumableBatchSampler(10, 3, seed=1)  # 3 batches an epoch, one item dropped
    it = iter(s)
    seq = [next(it) for _ in range(7)]
    assert sorted(sum(seq[:3], [])) != sorted(sum(seq[3:6], [])) or seq[:3] != seq[3:6]
    assert len(set(sum(seq[:3], []))) == 9  # no repeats inside an epoch
    it5 = iter(ResumableBatchSampler(10, 3, seed=1, start=5))
    assert [next(it5), next(it5)] == seq[5:7]
    # two ranks of micro-batch 2 see exactly the single-process micro-batches of 4
    one = iter(ResumableBatchSampler(20, 4, seed=3))
    r0 = iter(ResumableBatchSampler(20, 2, seed=3, rank=0, world_size=2))
    r1 = iter(ResumableBatchSampler(20, 2, seed=3, rank=1, world_size=2))
    for _ in range(8):
        assert next(one) == next(r0) + next(r1)
    # DataLoader workers deliver the same batches as the main process, from any start
    ds = toy_data(n=20)
    main_proc = batch_stream(ds, 4, seed=2, start=3)
    workers = batch_stream(ds, 4, seed=2, start=3, num_workers=2)
    for _ in range(6):
        assert torch.equal(next(main_proc)["x"], next(workers)["x"])
    # an iterable stream resumes at the same place
    a = batch_stream(ToyStream(), 3, seed=0)
    seq = [next(a)["x"] for _ in range(4)]
    b = batch_stream(ToyStream(), 3, seed=0, start=2)
    assert torch.equal(next(b)["x"], seq[2]) and torch.equal(next(b)["x"], seq[3])


def _losses(out: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if "loss" in l]


def test_fit_api_with_stream_and_accumulation_equivalence(tmp_path):
    """grad_accum=2 with batch B follows grad_accum=1 with batch B (same examples, same
    update up to float rounding; weights are not compared because Adam turns rounding noise
    in exactly-zero gradients, like the key bias, into +-lr steps)."""
    curves = []
    for accum in (1, 2):
        torch.manual_seed(0)
        m = mmgen.create_model("train_toy_tiny", dropout=0.0)
        train.fit(m, ToyStream(), out=tmp_path / f"a{accum}", steps=6, batch_size=8, grad_accum=accum,
                  progress=False, lr=1e-2, warmup=0, log_every=1)
        curves.append(_losses(tmp_path / f"a{accum}"))
    assert len(curves[0]) == 6
    torch.testing.assert_close(torch.tensor(curves[0]), torch.tensor(curves[1]), rtol=1e-4, atol=1e-6)


def test_bf16_autocast_trains(tmp_path):
    torch.manual_seed(0)
    m = mmgen.create_model("train_toy_tiny")
    s = train.fit(m, toy_data(n=16), out=tmp_path / "bf16", steps=4, batch_size=4, amp="bf16", progress=False,
                  log_every=1)
    assert math.isfinite(s["loss"]) and s["step"] == 4
    assert next(m.parameters()).dtype == torch.float32  # autocast, not a cast of the weights


def test_keep_every_keeps_the_weights_of_those_steps(tmp_path):
    torch.manual_seed(0)
    m = mmgen.create_model("train_toy_tiny")
    train.fit(m, toy_data(n=16), out=tmp_path / "k", steps=5, batch_size=4, progress=False, keep_every=2,
              save_every=0)
    assert sorted(p.name for p in (tmp_path / "k" / "steps").iterdir()) == ["2", "4"]
    two, final = (mmgen.load_pretrained(d) for d in (tmp_path / "k" / "steps" / "2", tmp_path / "k"))
    assert not torch.equal(next(two.parameters()), next(final.parameters()))  # step 2's weights, not the last
    with pytest.raises(ValueError, match="keep_every must be >= 0"):
        train.TrainConfig(keep_every=-1)


def test_init_from_starts_from_another_runs_weights(tmp_path, capsys):
    base, ft = tmp_path / "base", tmp_path / "ft"
    quiet = ["--set", "train.progress=false", "--set", "train.save_every=0"]
    assert train.main(TOY + quiet + ["--set", "train.steps=3", "--out", str(base)]) == 0
    # one step at a learning rate too small to move anything: the run starts at base's weights
    assert train.main(TOY + quiet + ["--set", "train.steps=1", "--set", "train.lr=1e-12", "--set", "train.warmup=0",
                                     "--set", f"train.init_from={base}", "--out", str(ft)]) == 0
    theirs, ours = load_file(base / "model.safetensors"), load_file(ft / "model.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.allclose(theirs[k], ours[k], atol=1e-6) for k in theirs)
    fresh = train.main(TOY + quiet + ["--set", "train.steps=1", "--set", "train.lr=1e-12", "--set", "train.warmup=0",
                                      "--out", str(tmp_path / "fresh")])
    assert fresh == 0 and not torch.allclose(load_file(tmp_path / "fresh" / "model.safetensors")["head.weight"],
                                             theirs["head.weight"])  # without init_from: random weights
    capsys.readouterr()
    # other weights, another family or no checkpoint at all: one line naming the problem
    mmgen.create_model("ddpm_unet_tiny").save_pretrained(tmp_path / "ddpm")
    for source, needle in ((base, "does not fit this model"), (tmp_path / "ddpm", "holds a 'ddpm' checkpoint"),
                           (tmp_path / "nothing", "not found")):
        extra = ["--set", "model.depth=1"] if source == base else []
        assert train.main(TOY + quiet + extra + ["--set", f"train.init_from={source}",
                                                 "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("train: error:") and "train.init_from" in err and needle in err, err


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_never_writes_over_a_checkpoint_it_did_not_make(tmp_path, monkeypatch, capsys):
    # a checkpoint as shipped: config.json + model.safetensors (+ a card), no train_state.pt
    ckpt = tmp_path / "shipped_like"
    mmgen.create_model("train_toy_tiny").save_pretrained(ckpt)
    (ckpt / "README.md").write_text("a model card\n")
    before = _snapshot(ckpt)
    quick = TOY + ["--set", "train.steps=2", "--set", "train.progress=false"]
    for extra in ([], ["--resume"]):
        assert train.main(quick + ["--out", str(ckpt)] + extra) == 2
        err = capsys.readouterr().err
        assert str(ckpt) in err and "choose another --out" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(ckpt) == before
    with pytest.raises(ValueError, match="no training run wrote"):  # the Python API refuses too
        train.fit(mmgen.create_model("train_toy_tiny"), toy_data(n=8), out=ckpt, steps=1, batch_size=4,
                  progress=False)
    assert _snapshot(ckpt) == before
    # the repository's shipped checkpoints are read-only to training, whatever they hold
    shipped = ROOT / "checkpoints" / "clip_shapes"
    assert train.main(quick + ["--out", str(shipped / "sub")]) == 2
    assert "shipped" in capsys.readouterr().err
    # without --out: a fresh, timestamped run directory under runs/, named on stderr
    monkeypatch.chdir(tmp_path)
    assert train.main(quick) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("train_toy_tiny-")
    assert (runs[0] / "train_state.pt").is_file() and str(runs[0].relative_to(tmp_path)) in capsys.readouterr().err
    assert train.main(["--resume"]) == 2  # --resume names the run it continues
    assert "--resume needs --out" in capsys.readouterr().err


def test_timed_saves_let_a_killed_run_resume(tmp_path, capsys):
    """save_every=0 (as vit_tiny_animal_mnist): the time-based save still bounds what a SIGKILL loses."""
    args = TOY + ["--set", "train.steps=8", "--set", "train.batch_size=8", "--set", "train.save_every=0",
                  "--set", "train.save_every_minutes=1e-9", "--set", "train.progress=false",
                  "--set", "train.eval_batches=0", "--data-set", "n=24", "--out", str(tmp_path / "run")]
    assert launch(1, args, **{SIGKILL_ENV: "6"}) == [-9]  # killed in step 6
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 5
    assert launch(1, ["--resume", "--out", str(tmp_path / "run")]) == [0]
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 8
    # every recipe saves by time, and shows its progress
    for r in train.list_recipes():
        cfg = train.TrainConfig(**r.train)
        assert cfg.save_every_minutes > 0 and cfg.progress, r.name
    assert 0 < train.TrainConfig().save_every_minutes <= 5


def test_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TOY + ["--set", "train.steps=2", "--set", "train.progress=false", "--out", str(out)]) == 0
    capsys.readouterr()
    cases = [(["--resume", "--out", str(out), "--set", "model.depth=1"], "model.depth"),
             (TOY + ["--device", "tpu", "--out", str(tmp_path / "x")], "tpu"),
             (TOY + ["--set", "train.device=tpu", "--out", str(tmp_path / "x")], "tpu"),
             (TOY + ["--set", "train.lr=nan", "--out", str(tmp_path / "x")], "train.lr"),
             (TOY + ["--set", "train.betas=0.9,inf", "--out", str(tmp_path / "x")], "train.betas"),
             (TOY + ["--set", "model.dropout=inf", "--out", str(tmp_path / "x")], "model.dropout"),
             (["train_toy_tiny", "--data", "no_such_module:fn", "--out", str(tmp_path / "x")], "no_such_module"),
             (["train_toy_tiny", "--data", "tests.train_toy:nope", "--out", str(tmp_path / "x")], "nope")]
    if not torch.cuda.is_available():
        cases.append((TOY + ["--device", "cuda", "--out", str(tmp_path / "x")], "no CUDA GPU"))
    for args, needle in cases:
        assert train.main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("train: error:") and needle in err[-1], err
        assert not any("Traceback" in line for line in err)
    # a train_state.pt that does not fit the model is a one-line error too, not a state_dict dump
    state = torch.load(out / "train_state.pt", weights_only=True)
    state["model"] = {k + "_renamed": v for k, v in state["model"].items()}
    torch.save(state, out / "train_state.pt")
    assert train.main(["--resume", "--out", str(out), "--set", "train.steps=3"]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_progress_lines_without_a_terminal(tmp_path, capsys):
    import io
    from mmgen.train.progress import Progress
    buf = io.StringIO()  # not a terminal: plain lines, the first step and the last one at least
    p = Progress(4, enabled=True, every_s=3600, stream=buf)
    for s in range(1, 5):
        p.update(s, loss=1.0 / s, examples=8)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train: step 1/4") and lines[1].startswith("train: step 4/4")
    assert all("loss" in l and "steps/s" in l and "ETA" in l for l in lines)
    train.fit(mmgen.create_model("train_toy_tiny"), toy_data(n=16), out=tmp_path / "p", steps=3, batch_size=4,
              progress_every_s=0)  # pytest's captured stderr is not a terminal
    err = capsys.readouterr().err
    assert "train: step 1/3" in err and "train: step 3/3" in err and "ETA" in err


def test_evaluation_is_a_fixed_random_subset_not_the_first_items():
    from mmgen.train.data import eval_batches
    sorted_by_class = [{"x": torch.zeros(1), "label": i // 10} for i in range(100)]  # 10 classes, sorted
    seen = [b["label"] for b in eval_batches(sorted_by_class, 8, 2)]
    again = [b["label"] for b in eval_batches(sorted_by_class, 8, 2)]
    labels = torch.cat(seen)
    assert len(labels) == 16 and len(set(labels.tolist())) >= 6  # the first 16 items hold classes 0-1 only
    assert all(torch.equal(a, b) for a, b in zip(seen, again))  # the same items every evaluation
    whole = torch.cat([b["label"] for b in eval_batches(sorted_by_class, 32, 10)])
    assert sorted(whole.tolist()) == [i // 10 for i in range(100)]  # enough batches: every item once


def test_evaluation_means_are_per_example(tmp_path):
    ds = toy_data("val", n=10)  # batches of 4, 4, 2: the last batch weighs 2, not 4
    m = mmgen.create_model("train_toy_tiny")
    s = train.fit(m, toy_data(n=8), out=tmp_path / "e", val_ds=ds, steps=1, batch_size=4, eval_batches=3,
                  progress=False)
    with torch.no_grad():
        e = mmgen.load_pretrained(tmp_path / "e").eval()
        full = default_collate([ds[i] for i in range(10)])
        expected = torch.nn.functional.mse_loss(e(full["x"]), full["y"]).item()
    assert s["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train.fit(mmgen.create_model("train_toy_tiny"), toy_data(n=8), out=tmp_path / "run", steps=2, batch_size=4,
                  progress=False, num_samples=2)
        mmgen.create_model("train_toy_tiny").save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    for name in ("run/model.safetensors", "run/config.json", "run/train_state.pt", "run/run_config.json",
                 "run/metrics.jsonl", "run/samples/step_000002.png", "saved/model.safetensors", "saved/config.json"):
        assert modes[name] == 0o644, (name, oct(modes[name]))
    for name in ("run", "run/samples", "saved"):
        assert modes[name] == 0o755, (name, oct(modes[name]))


def test_usage_names_the_command_it_was_called_by(capsys):
    from mmgen.cli import main as mmgen_main
    with pytest.raises(SystemExit):
        mmgen_main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: mmgen train")
    with pytest.raises(SystemExit):
        train.main(["--help"], prog="python -m train")
    assert capsys.readouterr().out.startswith("usage: python -m train")


def test_docs_recipe_table_is_the_registry():
    from mmgen.train.recipes import TABLE_BEGIN, TABLE_END, markdown_table
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == markdown_table(), ("docs/training.md's recipe table is stale: replace it with the output of "
                                       "`python -m train --list-recipes markdown`")


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    import warnings

    from mmgen import devices
    from mmgen.train.loop import resolve_amp
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="train.amp=fp32"):
        assert resolve_amp("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_amp("bf16", cpu) is torch.bfloat16
        assert resolve_amp("auto", cpu) is None and resolve_amp("fp32", cpu) is None
    assert devices.cpu_has_native_bf16() in (True, False, None)
