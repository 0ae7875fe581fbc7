"""`python -m train finetune`: every fine-tuning method trains through the engine's loop
(one engine run per method, resumable state, metrics.jsonl) and keeps only what it adapts."""
from __future__ import annotations

import json

import pytest
import torch

import mmgen
from mmgen.train import main as train_main

FAST = ["--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.eval_batches=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base") / "gpt"
    mmgen.create_model("gpt_tiny", vocab_size=259, context_length=128).save_pretrained(d)
    return d


def test_gpt_methods_are_engine_runs(base, tmp_path):
    out = tmp_path / "ft"
    assert train_main(["finetune", "gpt", "--base", str(base), "--out", str(out),
                       "--methods", "lora_r8,prefix_16,full", *FAST]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["runs"]) == ["lora_r8", "prefix_16", "full"] and res["steps"] == 2
    for name in res["runs"]:
        run = out / name
        assert (run / "train_state.pt").exists() and (run / "run_config.json").exists()
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2]  # the engine logged every step
    # each run keeps what it adapts: the adapter, the prefix, or (full) the whole checkpoint
    assert (out / "lora_r8" / "adapter.safetensors").exists() and not (out / "lora_r8" / "config.json").exists()
    assert (out / "prefix_16" / "prefix.safetensors").exists()
    full = mmgen.load_pretrained(out / "full")
    assert not torch.equal(full.state_dict()["lm_head.weight"], mmgen.load_pretrained(base).state_dict()["lm_head.weight"])
    # the same command again replaces its own runs
    assert train_main(["finetune", "gpt", "--base", str(base), "--out", str(out), "--methods", "lora_r8", *FAST]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"]["lora_r8"]["val_loss"] == res["runs"]["lora_r8"]["val_loss"]  # seeded: the same run


def test_dpo_evaluates_held_out_pairs_through_the_engine(base, tmp_path):
    out = tmp_path / "dpo"
    assert train_main(["finetune", "dpo", "--base", str(base), "--out", str(out), "--set", "train.steps=2",
                       "--set", "train.batch_size=4"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [h["step"] for h in res["dpo"]] == [0, 2] and [h["step"] for h in res["reward_model"]] == [2]
    assert res["dpo"][1]["heldout_margin"] != 0.0 and "loss" in res["dpo"][1]
    assert mmgen.load_pretrained(out / "dpo").config.embed_dim == mmgen.load_pretrained(base).config.embed_dim


def test_bad_input_is_one_line(base, tmp_path, capsys):
    assert train_main(["finetune", "gpt", "--base", str(base), "--out", str(tmp_path / "x"),
                       "--methods", "lora_r9"]) == 2
    err = capsys.readouterr().err
    assert "lora_r9" in err and len(err.strip().splitlines()) == 1
    assert train_main(["finetune", "gpt", "--base", str(base), "--out", str(tmp_path / "x"),
                       "--set", "model.depth=2"]) == 2
