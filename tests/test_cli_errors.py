"""User errors get one line that names the file or the flag, and exit code 2 (no traceback):
damaged checkpoints, a checkpoint of another model, a device this machine lacks, non-finite
or out-of-range numbers. Also the lookup of shipped checkpoints by name."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import mmgen
from mmgen.checkpoint import CHECKPOINT_PATH_ENV, find_checkpoint, list_shipped
from mmgen.cli import build_parser, main
from mmgen.commands import _args


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, err


def assert_one_line(rc, err, *names):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert str(name) in err, (name, err)


# ------------------------------------------------------------------------------ finding checkpoints
def test_find_checkpoint_by_path_name_and_repository_path(tmp_path, monkeypatch):
    assert {"dalle_shapes", "vq_shapes", "clip_shapes"} <= set(list_shipped())
    monkeypatch.chdir(tmp_path)  # away from the repository: names still resolve
    by_name = find_checkpoint("dalle_shapes")
    assert (by_name / "config.json").is_file() and by_name.name == "dalle_shapes"
    assert find_checkpoint("checkpoints/vq_shapes") == find_checkpoint("vq_shapes")
    (tmp_path / "dalle_shapes").mkdir()  # an existing path wins over a shipped name
    assert find_checkpoint("dalle_shapes") == tmp_path.joinpath("dalle_shapes").relative_to(tmp_path)
    with pytest.raises(FileNotFoundError, match="not the name of a shipped checkpoint.*dalle_shapes"):
        find_checkpoint("no_such_model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint("some/dir/vq_shapes")  # a path is a path: no silent fallback to a shipped name


def test_checkpoint_path_env_adds_places_to_look(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    m = mmgen.create_model("gpt_tiny")
    m.save_pretrained(mine / "my_gpt")
    monkeypatch.setenv(CHECKPOINT_PATH_ENV, str(mine))
    monkeypatch.chdir(tmp_path.parent)
    assert find_checkpoint("my_gpt") == mine / "my_gpt"
    assert mmgen.load_pretrained("my_gpt").checkpoint_dir == (mine / "my_gpt").resolve()


def test_load_pretrained_by_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vq = mmgen.load_pretrained("vq_shapes")
    assert vq.model_type == "vq" and vq.checkpoint_dir.name == "vq_shapes"


# ------------------------------------------------------------------------------ damaged checkpoints
@pytest.fixture
def gpt_ckpt(tmp_path):
    m = mmgen.create_model("gpt_tiny")
    return m.save_pretrained(tmp_path / "gpt")


def test_truncated_weights(gpt_ckpt, capsys):
    w = gpt_ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt), "-n", "2"], capsys)
    assert_one_line(rc, err, w, "damaged or truncated")


def test_pickled_weights_are_refused_not_unpickled(gpt_ckpt, capsys):
    w = gpt_ckpt / "model.safetensors"
    torch.save(mmgen.load_pretrained(gpt_ckpt).state_dict(), w)
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt), "-n", "2"], capsys)
    assert_one_line(rc, err, w, "pickled")


def test_garbage_and_wrong_shaped_config(gpt_ckpt, capsys):
    cfg = gpt_ckpt / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text("{ this is not json")
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt)], capsys)
    assert_one_line(rc, err, cfg, "not valid JSON")
    cfg.write_text("[1, 2]")
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt)], capsys)
    assert_one_line(rc, err, cfg, "JSON object")
    meta["config"]["dim"] = 128  # weights of another size
    cfg.write_text(json.dumps(meta))
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt)], capsys)
    assert_one_line(rc, err, gpt_ckpt / "model.safetensors")


def test_checkpoint_of_another_model(capsys):
    rc, err = run_cli(["text", "hi", "--checkpoint", "vq_shapes"], capsys)
    assert_one_line(rc, err, "vq", "GPT")
    rc, err = run_cli(["zero-shot", "x.png", "--labels", "a,b", "--checkpoint", "vq_shapes"], capsys)
    assert_one_line(rc, err, "CLIP")


def test_a_file_instead_of_the_directory(gpt_ckpt, capsys):
    rc, err = run_cli(["text", "hi", "--checkpoint", str(gpt_ckpt / "model.safetensors")], capsys)
    assert_one_line(rc, err, "pass the checkpoint directory")


# ------------------------------------------------------------------------------ flags
def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != "train"}  # train: the engine's own flags


def _flags(types):
    return [(name, max(a.option_strings, key=len), a.type) for name, p in _subcommands().items() for a in p._actions
            if a.option_strings and a.type in types]


def test_no_subcommand_parses_a_bare_float():
    bare = [(name, a.option_strings) for name, p in _subcommands().items() for a in p._actions if a.type is float]
    assert not bare, f"use a type from mmgen.commands._args (finite_float, unit_float, ...) for {bare}"


FLOAT_TYPES = (_args.finite_float, _args.non_negative_float, _args.positive_float, _args.unit_float)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_everywhere(value, capsys):
    flags = _flags(FLOAT_TYPES)
    assert {("text", "--temperature"), ("text", "--top-p"), ("generate", "--guidance")} <= {f[:2] for f in flags}
    for cmd, flag, _ in flags:
        rc, err = run_cli([cmd, f"{flag}={value}"], capsys)
        assert_one_line(rc, err, flag, "finite")


def test_out_of_range_numbers(capsys):
    for argv, flag in ((["text", "--top-p", "1.5"], "--top-p"), (["text", "-n", "0"], "--max-new-tokens"),
                       (["generate", "a", "--num-images", "-1"], "--num-images"),
                       (["cost", "gpt_tiny", "--peak", "0"], "--peak")):
        rc, err = run_cli(argv, capsys)
        assert_one_line(rc, err, flag)


def test_device_flags(capsys):
    with_device = [name for name, p in _subcommands().items()
                   if any("--device" in a.option_strings for a in p._actions)]
    assert {"text", "retrieve", "zero-shot", "generate"} <= set(with_device)
    bad = ["tpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for cmd in with_device:
        for dev in bad:
            rc, err = run_cli([cmd, "--device", dev], capsys)
            assert_one_line(rc, err, "--device", dev)
    assert _args.device("CPU") == "cpu" and _args.device("auto") in ("cpu", "cuda")


def test_usage_errors_are_one_line(capsys):
    rc, err = run_cli(["text"], capsys)
    assert_one_line(rc, err, "required", "mmgen text --help")


def test_evaluate_refuses_non_finite_guidance(capsys):
    rc, err = run_cli(["evaluate", "--model", "ddpm_shapes", "--guidance", "1", "nan"], capsys)
    assert_one_line(rc, err, "--guidance", "mmgen evaluate")


# ------------------------------------------------------------------------------ documented behaviour
def test_text_slides_past_the_context_by_default(tmp_path, capsys):
    m = mmgen.create_model("gpt_tiny")
    path = m.save_pretrained(tmp_path / "gpt")
    n = m.config.context_length + 5
    rc = main(["text", "ab", "--checkpoint", str(path), "-n", str(n), "--seed", "0", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert rc == 0 and "window slides" in err and len(out.encode()) >= 2
    rc, err = run_cli(["text", "ab", "--checkpoint", str(path), "-n", str(n), "--overflow", "error"], capsys)
    assert_one_line(rc, err, "--overflow slide")


def test_heldout_split_needs_no_extra_flag():
    from mmgen.commands._clip_common import dataset_kwargs
    assert dataset_kwargs("shapes", "heldout_test", []) == {"holdout": "default"}
    assert dataset_kwargs("shapes", "test", []) == {}
    assert dataset_kwargs("shapes", "heldout_test", ['holdout=[["red", "circle"]]']) == {
        "holdout": [["red", "circle"]]}


def test_demo_needs_its_checkpoint(tmp_path, monkeypatch, capsys):
    """Without the shipped checkpoint the demo says so (no silent benchmark)."""
    from mmgen import demo
    monkeypatch.setattr(demo, "MODEL", "no_such_checkpoint")
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(["demo"], capsys)
    assert rc == 2 and "no_such_checkpoint" in err and not (tmp_path / "out").exists()


def test_key_value_flags_read_json_or_text(capsys):
    assert _args.key_value("holdout=\"default\"") == ("holdout", "default")
    assert _args.key_value("image_size=32") == ("image_size", 32)
    assert _args.key_value("name=plain text") == ("name", "plain text")
    assert _args.key_value("pairs=[1, 2]") == ("pairs", [1, 2])
    for bad in ("novalue", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            _args.key_value(bad)
    import runpy
    import sys
    argv = sys.argv[:]
    sys.argv = ["fit_palette.py", "--out", "unused", "--data-set", "holdout"]
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts" / "fit_palette.py"),
                           run_name="__main__")
    finally:
        sys.argv = argv
    assert exc.value.code == 2
    assert_one_line(2, capsys.readouterr().err, "--data-set", "KEY=VALUE")
