"""mmgen.pipelines: every shipped generator through load_pipeline (from another working
directory), seeds, companion paths, captioned grids, progress, the vocabulary and the docs'
example prompts."""
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import mmgen
from mmgen.pipelines import DALLEPipeline, DDPMPipeline, PipelineOutput, load_pipeline, make_grid

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "checkpoints"
needs_ckpt = pytest.mark.skipif(not (CKPT / "dalle_shapes" / "config.json").exists(),
                                reason="the shipped checkpoints are not in this checkout")
PROMPT = {"dalle_shapes": "a red circle above a blue square", "dalle_emoji": "red heart",
          "ddpm_shapes": "a green cross"}


@needs_ckpt
def test_every_shipped_checkpoint_loads():
    for d in sorted(CKPT.iterdir()):
        if (d / "config.json").is_file():
            assert mmgen.load_pretrained(d).model_type == json.loads((d / "config.json").read_text())["model_type"]


@needs_ckpt
@pytest.mark.parametrize("name", sorted(PROMPT))
def test_shipped_pipelines_from_another_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # companions resolve relative to the checkpoint, not the working directory
    pipe = load_pipeline(name)
    assert pipe.kind == name.split("_")[0] and isinstance(pipe, (DALLEPipeline, DDPMPipeline))
    kw = dict(num_images=2, seed=3, steps=2)
    a, b = pipe([PROMPT[name]], **kw), pipe([PROMPT[name]], **kw)
    assert a.images.shape == (1, 2, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.scores.shape == (1, 2) and a.scores.dtype == torch.float32 and a.scores[0, 0] >= a.scores[0, 1]
    assert torch.equal(a.images, b.images) and a.seed == 3 and a.prompts == [PROMPT[name]] and a.warnings == []
    c = pipe([PROMPT[name]], num_images=1, steps=2)  # no seed: one is drawn and reported
    assert isinstance(c.seed, int) and torch.equal(pipe([PROMPT[name]], num_images=1, steps=2, seed=c.seed).images,
                                                   c.images)


@needs_ckpt
def test_companion_paths_are_saved_relative_and_old_values_still_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = DALLEPipeline.from_pretrained(CKPT / "dalle_shapes")
    pipe.save_pretrained(tmp_path / "mine" / "dalle")
    cfg = json.loads((tmp_path / "mine" / "dalle" / "config.json").read_text())["config"]
    assert (cfg["vq_path"], cfg["clip_path"]) == ("palette_shapes", "clip_shapes_coca")  # shipped: by name
    assert cfg["layout_path"] == "dalle_shapes_layout"  # the outline stage of two-stage sampling
    assert cfg["extra_clip_paths"] == ["clip_shapes_coca_negimg", "clip_shapes_reranker", "clip_shapes_coca_bank"]
    assert len(DALLEPipeline.from_pretrained(tmp_path / "mine" / "dalle").clip.members) == 4  # the reranker ensemble
    pipe.model.config.vq_path = str(tmp_path / "myvq")  # others: relative to the checkpoint directory
    shutil.copytree(CKPT / "palette_shapes", tmp_path / "myvq")
    pipe.save_pretrained(tmp_path / "mine" / "dalle2")
    cfg = json.loads((tmp_path / "mine" / "dalle2" / "config.json").read_text())["config"]
    assert cfg["vq_path"] == os.path.join("..", "..", "myvq")
    os.chdir(ROOT)  # the saved checkpoint works from any working directory
    assert DALLEPipeline.from_pretrained(tmp_path / "mine" / "dalle").vq is not None
    os.chdir(tmp_path)
    # what a recipe run from the repository root wrote before ("checkpoints/vq_shapes"), and a
    # shipped checkpoint copied away from its siblings ("../vq_shapes"): both find the shipped ones
    for i, (vq, clip) in enumerate([("checkpoints/palette_shapes", "checkpoints/clip_shapes_reranker"),
                                    ("../palette_shapes", "../clip_shapes_reranker")]):
        d = tmp_path / f"old{i}"
        shutil.copytree(CKPT / "dalle_shapes", d)
        meta = json.loads((d / "config.json").read_text())
        meta["config"].update(vq_path=vq, clip_path=clip)
        (d / "config.json").write_text(json.dumps(meta))
        old = DALLEPipeline.from_pretrained(d)
        assert old.vq.vocab_size == 384 and old.clip is not None
        assert old.model.layout.config.image_vocab == 64  # "../dalle_shapes_layout", found by its shipped name


def _fake_output(P=2, N=3, scores=True):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (P, N, 3, 32, 32), dtype=torch.uint8, generator=g)
    return PipelineOutput(images, torch.rand(P, N) * 100 if scores else None, ["a red circle", "a blue square"][:P], 0)


def test_make_grid_size_and_pixels():
    out = _fake_output()
    raw_w, raw_h = 3 * 32 + 4 * 2, 2 * 32 + 3 * 2  # the 32 px grid with 2 px padding
    grid = make_grid(out, scale=4)
    assert grid.size == (raw_w * 4, raw_h * 4 + 2 * 2 * 14)  # a caption and a score line per row
    assert make_grid(out, scale=4, captions=False, scores=False).size == (raw_w * 4, raw_h * 4)
    plain = make_grid(_fake_output(scores=False), scale=1, captions=False)
    assert plain.size == (raw_w, raw_h)
    # nearest upscaling: each source pixel becomes a 4x4 block; the first image sits after the
    # padding (8 px) and the caption line (14 px)
    import numpy as np
    px = torch.tensor(np.array(grid))
    torch.testing.assert_close(px[8 + 14 + 1:8 + 14 + 128:4, 8 + 1:8 + 128:4], out.images[0, 0].permute(1, 2, 0))
    with pytest.raises(ValueError, match="scale"):
        make_grid(out, scale=0)


def test_progress_callable_counts_to_the_total():
    pipe = DDPMPipeline(mmgen.create_model("ddpm_unet_text_tiny").eval())
    seen = []
    out = pipe(["a red circle", "a blue square"], num_images=3, steps=3, progress=lambda d, t: seen.append((d, t)),
               batch_size=4)
    assert out.images.shape == (2, 3, 3, 16, 16)
    assert seen == [(i, 6) for i in range(1, 7)]  # 2 batches (6 samples, 4 a batch) x 3 steps
    with pytest.raises(TypeError, match="progress"):
        pipe(["a red circle"], progress="yes")


@needs_ckpt
def test_vocabulary_punctuation_and_unknown_words():
    shapes = load_pipeline("dalle_shapes")
    assert shapes.vocabulary() == ["a", "above", "below", "blue", "circle", "cross", "cyan", "diamond", "green",
                                   "left", "magenta", "of", "red", "right", "square", "triangle", "yellow"]
    assert shapes.check_prompts(["a red circle.", "A Cyan cross, left of a green square!"]) == []
    with pytest.raises(ValueError, match="has no word the DALL-E generator"):
        shapes.check_prompts(["zebra"])
    emoji = load_pipeline("dalle_emoji")
    (note,) = emoji.check_prompts(["red xylophone"])
    assert "'xylophone' is not in the vocabulary of the DALL-E generator" in note and "nor of the CLIP reranker" in note
    vocab = emoji.vocabulary()
    assert len(vocab) > 500 and "heart" in vocab and "xylophone" not in vocab and vocab == sorted(vocab)
    # a reranker that reads fewer words than the generator: the note names it alone
    with_shapes_clip = DALLEPipeline.from_pretrained("dalle_emoji", clip=mmgen.load_pretrained("clip_shapes"))
    (note,) = with_shapes_clip.check_prompts(["red heart"])
    assert "'heart' is not in the vocabulary of the CLIP reranker" in note and "generator" not in note


@needs_ckpt
def test_vocab_command(capsys):
    from mmgen.cli import main
    assert main(["vocab", "ddpm_shapes"]) == 0
    out = capsys.readouterr().out
    assert "17 words" in out and "cyan" in out and "magenta" in out
    assert main(["vocab", "dalle_shapes", "-1"]) == 0
    assert capsys.readouterr().out.split() == load_pipeline("dalle_shapes").vocabulary()


def _doc_commands():
    """Every `mmgen generate ...` command in README.md and docs/ (with its continuation lines)."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("mmgen generate "):
                cmd = line
                while cmd.rstrip().endswith("\\"):
                    i += 1
                    cmd = cmd.rstrip()[:-1] + " " + lines[i]
                yield doc.name, shlex.split(cmd, comments=True)[1:]


@needs_ckpt
def test_docs_example_prompts_are_readable_by_their_models():
    from mmgen.cli import build_parser
    pipes, checked = {}, 0
    for doc, argv in _doc_commands():
        args = build_parser().parse_args(argv)
        if args.model.startswith("runs/"):  # a documented training run's output: test_doc_commands trains and runs it
            continue
        name = args.model if not Path(args.model).exists() else str(args.model)
        if name not in pipes:
            pipes[name] = load_pipeline(name)
        notes = pipes[name].check_prompts(args.prompts)  # raises for a prompt the model cannot read
        if "test_names" not in " ".join(argv):  # that row shows unseen emoji names on purpose
            assert notes == [], (doc, argv, notes)
        checked += 1
    assert checked >= 8


def test_cli_estimates_large_requests_and_refuses_absurd_ones(tmp_path, capsys):
    from mmgen.cli import main
    mmgen.create_model("ddpm_unet_text_tiny").save_pretrained(tmp_path / "m")
    base = ["generate", "a red circle", "--model", str(tmp_path / "m"), "-o", str(tmp_path / "g.png"), "--quiet"]
    assert main([*base, "--num-images", "100000"]) == 2
    assert "--num-images must be in [1, 1024]" in capsys.readouterr().err
    assert main([*base, "--num-images", "64", "--steps", "1", "--scale", "1"]) == 0
    err = capsys.readouterr().err
    assert "64 samples" in err and "about" in err and "seed" in err
