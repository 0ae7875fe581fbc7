"""mmgen.metrics: Fréchet distance, KID, feature extraction, CLIP score, prompt fidelity."""
import pytest
import torch
from torch import nn

from mmgen.metrics import (clip_score, fd_kid, frechet_distance, gaussian_stats, image_features,
                           kernel_inception_distance, prompt_fidelity)


def test_frechet_distance_closed_form():
    """N(0, I) vs N(mu, s^2 I): FD = |mu|^2 + D (1 - s)^2."""
    D = 8
    mu = torch.linspace(-1, 1, D, dtype=torch.float64)
    a = (torch.zeros(D), torch.eye(D))
    b = (mu, 4 * torch.eye(D))
    assert frechet_distance(a, b) == pytest.approx(float(mu.square().sum()) + D * (1 - 2) ** 2, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_full_covariances():
    """Against FID's own form tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1 S2) (non-symmetric)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    y = torch.randn(400, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    (m1, s1), (m2, s2) = gaussian_stats(x), gaussian_stats(y)
    covmean_trace = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    ref = float((m1 - m2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * covmean_trace)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)


def test_kid_unbiased_estimator():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=g).double(), torch.randn(60, 4, generator=g).double()
    # one subset holding every sample = the plain unbiased MMD^2, written as loops
    k = lambda u, v: (u @ v / 4 + 1) ** 3
    m = 60
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, _ = kernel_inception_distance(x, y, num_subsets=1, subset_size=m)
    assert mean == pytest.approx(float(xx + yy - 2 * xy), rel=1e-6)
    same, _ = kernel_inception_distance(torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g),
                                        num_subsets=5, subset_size=200)
    shifted, _ = kernel_inception_distance(torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g) + 1,
                                           num_subsets=5, subset_size=200)
    assert abs(same) < 0.5 < 5 < shifted  # the cubic kernel is noisy at 300 samples; a shift of 1 is not


def test_image_features_and_fd_kid_with_an_encoder():
    enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1  # grey, converted to the encoder's 3 channels
    f = image_features(enc, real, batch_size=10, channels=3, image_size=8)
    assert f.shape == (64, 8)
    torch.testing.assert_close(f[:10], enc(nn.functional.interpolate(real[:10].expand(-1, 3, -1, -1), size=8,
                                                                       mode="bilinear")))
    res = fd_kid(enc, real, real.flip(0), channels=3)
    assert res["fd_ours"] == pytest.approx(0.0, abs=1e-6)
    far = fd_kid(enc, real, -real.abs(), channels=3)
    assert far["fd_ours"] > 1e-3 and far["kid_ours"] > res["kid_ours"]
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.randn(1, 4))


class _FakeCLIP(nn.Module):
    """Images and texts embedded by their colour: red -> e0, blue -> e1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def encode_image(self, x):
        return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], -1) + 2

    def encode_text(self, texts):
        return torch.tensor([[3.0, 2.0] if "red" in t else [2.0, 3.0] for t in texts])


def test_clip_score_prefers_matching_prompts():
    red = -torch.ones(4, 3, 8, 8)
    red[:, 0] = 1
    clip = _FakeCLIP()
    good = clip_score(clip, red, ["a red circle"] * 4)
    bad = clip_score(clip, red, ["a blue circle"] * 4)
    assert 0 < bad < good <= 100
    assert clip_score(clip, red, ["a red circle"] * 4, reduction="none").shape == (4,)
    with pytest.raises(ValueError, match="one prompt per image"):
        clip_score(clip, red, ["a red circle"])


def test_caption_retrieval_asks_whether_an_image_is_specific_to_its_prompt():
    from mmgen.metrics import caption_retrieval
    red, blue = -torch.ones(2, 3, 8, 8), -torch.ones(2, 3, 8, 8)
    red[:, 0], blue[:, 2] = 1, 1
    images, clip = torch.cat([red, blue]), _FakeCLIP()
    prompts = ["a red circle", "a red circle", "a blue square", "a blue square"]
    assert caption_retrieval(clip, images, prompts, ks=(1,)) == {"r1": 1.0}
    assert caption_retrieval(clip, images, prompts[::-1], ks=(1, 2)) == {"r1": 0.0, "r2": 1.0}
    grey = torch.zeros(4, 3, 8, 8)  # the same score against every prompt: never counted as found
    assert caption_retrieval(clip, grey, prompts, ks=(1,)) == {"r1": 0.0}
    with pytest.raises(ValueError, match="two distinct prompts"):
        caption_retrieval(clip, red, ["a red circle"] * 2)


def test_prompt_fidelity_with_a_checker():
    imgs = torch.zeros(4, 3, 8, 8)
    imgs[:2, 0] = 1
    checker = lambda img, cap: ("red" in cap) == bool(img[0].mean() > 0.5)
    assert prompt_fidelity(imgs, ["red", "red", "blue", "red"], checker=checker) == 0.75
    with pytest.raises(ValueError, match="one caption per image"):
        prompt_fidelity(imgs, ["red"], checker=checker)


def test_prompt_fidelity_with_the_shapes_checker():
    from mmgen.data import build_dataset
    ds = build_dataset("shapes", split="test")
    items = [ds[i] for i in range(12)]
    imgs = torch.stack([it["image"] for it in items])
    caps = [it["caption"] for it in items]
    assert prompt_fidelity(imgs, caps) >= 0.9  # real images match their own captions
    assert prompt_fidelity(-torch.ones_like(imgs), caps) == 0.0  # blank images match nothing


def test_evaluate_cli_on_emoji_captions(tmp_path):
    """The evaluate module on a captioned set other than shapes: emoji at 32 px, random tiny
    models; FD/KID/CLIP score are written, shapes-only fidelity is not."""
    import json

    import mmgen
    from mmgen.cli import main

    mmgen.create_model("ddpm_dit_tiny", img_size=32).eval().save_pretrained(tmp_path / "ddpm")
    mmgen.create_model("clip_tiny").eval().save_pretrained(tmp_path / "clip")
    assert main(["evaluate", "--model", str(tmp_path / "ddpm"), "--clip", str(tmp_path / "clip"), "--dataset", "emoji",
                 "--data-set", "image_size=32", "--n", "4", "--guidance", "2", "--steps", "2",
                 "--out", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    (run,) = res["runs"]
    assert {"fd_ours", "kid_ours", "clip_score"} <= set(run), run
    assert not any(k.startswith("fidelity") for k in run)
    assert "fd_ours" in res["real_val_vs_real_test"]
    assert res["data_kwargs"] == {"image_size": 32}


def test_evaluate_cli_best_of_n_and_captions_a_dalle_cannot_read(tmp_path, capsys):
    """--candidates adds one row per value (the best of N by the model's reranker); test
    captions the generator refuses (no word it can read) are skipped and counted; a model
    without a reranker refuses --candidates 2 in one line."""
    import json
    from pathlib import Path

    import mmgen
    from mmgen.cli import main

    if not (Path(__file__).parents[1] / "checkpoints" / "dalle_emoji" / "config.json").exists():
        pytest.skip("needs the shipped dalle_emoji")
    mmgen.create_model("clip_tiny").eval().save_pretrained(tmp_path / "clip")
    assert main(["evaluate", "--model", "dalle_emoji", "--clip", str(tmp_path / "clip"), "--dataset", "emoji",
                 "--data-set", "image_size=32", "--n", "3", "--guidance", "2", "--candidates", "1", "2", "--quiet",
                 "--out", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [r.get("candidates", 1) for r in res["runs"]] == [1, 2]
    assert res["skipped_unreadable"] > 0  # unseen emoji names with no word of the training names
    assert (tmp_path / "eval" / "samples_g2_best2.png").is_file()
    mmgen.create_model("ddpm_dit_tiny", img_size=32).eval().save_pretrained(tmp_path / "ddpm")
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "ddpm"), "--dataset", "emoji", "--data-set", "image_size=32",
                 "--n", "2", "--candidates", "2", "--quiet", "--out", str(tmp_path / "eval2")]) == 2
    assert "names none" in capsys.readouterr().err


def test_class_agreement_counts_samples_the_classifier_reads_as_asked():
    from mmgen.metrics.classifier import class_agreement

    class Brightness(nn.Module):  # class 1 for bright images, 0 for dark
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            m = x.mean((1, 2, 3)) * self.w
            return torch.stack([-m, m], -1)

    images = torch.cat([torch.ones(3, 3, 8, 8), -torch.ones(2, 3, 8, 8)])
    assert class_agreement(Brightness(), images, [1, 1, 1, 0, 0]) == 1.0
    assert class_agreement(Brightness(), images, [1, 1, 0, 1, 0]) == pytest.approx(0.6)
    assert class_agreement(Brightness(), images, [1, 1, 0, 1, 0], class_names=["dark", "bright"]) == \
        pytest.approx({"all": 0.6, "dark": 0.5, "bright": 2 / 3})
    with pytest.raises(ValueError, match="one label per image"):
        class_agreement(Brightness(), images, [1, 0])


def test_evaluate_cli_on_a_labelled_set_with_a_classifier(tmp_path):
    """Class-conditional samples on animal-mnist: with a classifier of its ten classes as the
    encoder, the share of samples it reads as the asked class is reported, beside the real
    test images' share; a CLIP scores them against the class names."""
    import json

    import mmgen
    from mmgen.cli import main

    mmgen.create_model("ddpm_unet_class_tiny", img_size=32).eval().save_pretrained(tmp_path / "ddpm")
    mmgen.create_model("vit_tiny_patch4_32", num_classes=10).eval().save_pretrained(tmp_path / "vit")
    mmgen.create_model("clip_tiny").eval().save_pretrained(tmp_path / "clip")
    assert main(["evaluate", "--model", str(tmp_path / "ddpm"), "--encoder", str(tmp_path / "vit"),
                 "--clip", str(tmp_path / "clip"), "--dataset", "animal_mnist", "--n", "10", "--guidance", "1",
                 "--steps", "2", "--quiet", "--out", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    (run,) = res["runs"]
    assert {"fd_ours", "class_agreement", "clip_score", "clip_score_real"} <= set(run), run
    assert 0.0 <= run["class_agreement"] <= 1.0 and len(run["class_agreement_per_class"]) == 10
    assert {"fd_ours", "class_agreement", "clip_score"} <= set(res["real_val_vs_real_test"])


def test_relation_failures_split_into_axis_and_order():
    from mmgen.data import shapes as S
    from mmgen.metrics.shapes_fidelity import score
    red, blue = dict(colour="red", shape="circle", size=9), dict(colour="blue", shape="square", size=9)
    top_bottom = [dict(red, x=11, y=2), dict(blue, x=11, y=20)]  # red above blue
    bottom_top = [dict(red, x=11, y=20), dict(blue, x=11, y=2)]  # order swapped
    side = [dict(red, x=2, y=11), dict(blue, x=20, y=11)]  # red left of blue: the other axis
    images = torch.stack([S._to_float(S.render(o)) for o in (top_bottom, bottom_top, side)])
    r = score(images, ["a red circle above a blue square"] * 3)
    assert r["relation"] == pytest.approx(1 / 3) and r["axis"] == pytest.approx(2 / 3) and r["order"] == 0.5
    # "B below A" names the same scene: its first object is the lower one
    assert score(images[:1], ["a blue square below a red circle"])["order"] == 1.0


def test_shapes_fidelity_groups_and_extra_objects():
    from mmgen.data import shapes as S
    from mmgen.metrics.shapes_fidelity import prompt_groups, score
    groups = prompt_groups(12)
    assert [len(v) for v in groups.values()] == [12, 12, 12]
    assert all(S.parse_caption(c)[1] is None for c in groups["one"])
    assert all(S.parse_caption(c)[1] is not None for c in groups["two"] + groups["heldout"])
    held = {f"{c} {s}" for c, s in S.DEFAULT_HOLDOUT}
    assert all(any(h in c for h in held) for c in groups["heldout"])
    assert not any(h in c for c in groups["two"] for h in held)
    assert prompt_groups(12) == groups  # fixed prompts
    val = prompt_groups(12, split="val")  # the prompts to choose sampling settings on: other scenes
    assert all(S.parse_caption(c)[1] is None for c in val["one"])
    assert all(any(h in c for h in held) for c in val["heldout"])
    assert val != groups
    with pytest.raises(ValueError, match="prompt split must be one of"):
        prompt_groups(2, split="train")
    # Rendered ground truth is all correct with nothing extra; an added object is "extra".
    objs = [dict(colour="red", shape="circle", x=4, y=4, size=10)]
    stray = dict(colour="blue", shape="square", x=20, y=20, size=8)
    images = torch.stack([S._to_float(S.render(objs)), S._to_float(S.render(objs + [stray]))])
    assert score(images[:1], ["a red circle"]) == {"count": 1.0, "colour": 1.0, "shape": 1.0, "correct": 1.0,
                                                   "relation": None, "axis": None, "order": None, "extra": 0.0,
                                                   "clean": 1.0}
    both = score(images, ["a red circle", "a red circle"])
    assert both["extra"] == 0.5 and both["correct"] == 0.5 and both["colour"] == 1.0
    # Background noise of 10/255 on a third of the pixels: the scene still reads right, the
    # background is no longer clean; faint noise below 8/255 leaves it clean.
    g = torch.Generator().manual_seed(0)
    speckle = (torch.rand(images[0].shape[1:], generator=g) < 1 / 3).float() * 20 / 255  # (H, W), 0 or 10/255 in [-1, 1]
    noisy = score((images[:1] + speckle).clamp(-1, 1), ["a red circle"])
    assert noisy["correct"] == 1.0 and 0.6 < noisy["clean"] < 0.72, noisy
    faint = score((images[:1] + speckle * 0.6).clamp(-1, 1), ["a red circle"])
    assert faint["clean"] == 1.0, faint


def test_evaluate_curve_reads_minutes_from_piecewise_rates(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("evaluate_curve", Path(__file__).parents[1] / "scripts" /
                                                  "evaluate_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for step, share in ((600, 0.2), (1200, 0.5)):
        (tmp_path / str(step)).mkdir()
        (tmp_path / str(step) / "results.json").write_text(json.dumps(
            {"runs": [{"guidance": 3.0, "class_agreement": share, "fd_ours": 9.0}]}))
    # 600 steps at 1 step/s (10 min), then 600 more at 2 steps/s (5 min)
    assert mod.main([str(tmp_path / "600"), str(tmp_path / "1200"), "--rate", "0:1", "600:2", "--metric",
                     "class_agreement", "--percent", "--out", str(tmp_path / "c.png")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["minutes"] for r in rows] == [10.0, 15.0] and (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "600"), "--rate", "10:1", "--out", str(tmp_path / "d.png")])
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "600"), "--rate", "0:1", "--metric", "clip_score", "--out", str(tmp_path / "d.png")])


def test_fidelity_curve_reuses_logged_rows_and_draws_a_baseline(tmp_path):
    """Rows already in --log are not scored again (no checkpoint is loaded), and --baseline draws
    another run's rows beside them; a baseline that is not a file is refused."""
    import importlib.util
    import json
    from pathlib import Path

    from PIL import Image
    spec = importlib.util.spec_from_file_location("fidelity_curve", Path(__file__).parents[1] / "scripts" /
                                                  "fidelity_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def log(path, run, points):
        rows = []
        for step, minutes, correct in points:
            (tmp_path / run / str(step)).mkdir(parents=True)  # empty: loading one would fail
            rows.append({"checkpoint": str(tmp_path / run / str(step)), "step": step, "minutes": minutes,
                         "guidance": None, "top_k": None, "steps": None, "scheduler": None, "group": "one",
                         "n": 2, "correct": correct, "extra": 0.0})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    log(tmp_path / "ours.jsonl", "ours", [(100, 1.0, 0.5), (200, 2.0, 0.9)])
    log(tmp_path / "base.jsonl", "base", [(100, 1.5, 0.2)])
    ckpts = [str(tmp_path / "ours" / "100"), str(tmp_path / "ours" / "200")]
    out = tmp_path / "c.png"
    assert mod.main([*ckpts, "--steps-per-s", "1", "--n", "2", "--groups", "one", "--log", str(tmp_path / "ours.jsonl"),
                     "--baseline", str(tmp_path / "base.jsonl"), "--label", "a", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    with pytest.raises(SystemExit):
        mod.main([*ckpts, "--steps-per-s", "1", "--n", "2", "--groups", "one", "--log", str(tmp_path / "ours.jsonl"),
                  "--baseline", str(tmp_path / "missing.jsonl"), "--out", str(out)])
