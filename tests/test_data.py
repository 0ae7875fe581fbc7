import numpy as np
import pytest
import torch

from mmgen.data import build_dataset, list_datasets
from mmgen.data import shapes as S


# ------------------------------------------------------------------------------ shapes
def test_shapes_item_contract_and_determinism():
    ds = build_dataset("shapes", split="train")
    it = ds[7]
    assert it["image"].shape == (3, 32, 32) and it["image"].dtype == torch.float32
    assert it["image"].min() >= -1 and it["image"].max() <= 1
    assert isinstance(it["label"], int) and 0 <= it["label"] < len(ds.classes) == 30
    S.parse_caption(it["caption"])
    again = build_dataset("shapes", split="train")[7]
    assert torch.equal(again["image"], it["image"]) and again["caption"] == it["caption"]
    assert build_dataset("shapes", split="train", seed=1)[7]["caption"] != it["caption"] or \
        not torch.equal(build_dataset("shapes", split="train", seed=1)[7]["image"], it["image"])
    assert len(build_dataset("shapes", split="val")) == len(build_dataset("shapes", split="test")) == 1000


def test_shapes_splits_disjoint():
    caps_imgs = {}
    for split in ("train", "val", "test"):
        ds = build_dataset("shapes", split=split, length=300)
        caps_imgs[split] = {ds[i]["image"].numpy().tobytes() for i in range(300)}
    assert not caps_imgs["train"] & caps_imgs["val"]
    assert not caps_imgs["train"] & caps_imgs["test"]
    assert not caps_imgs["val"] & caps_imgs["test"]


def test_shapes_holdout():
    hold = [("red", "circle"), ("blue", "square")]
    tr = build_dataset("shapes", split="train", holdout=hold, length=400)
    for i in range(400):
        objs, _, _ = tr.scene(i)
        assert all((o["colour"], o["shape"]) not in hold for o in objs)
    ho = build_dataset("shapes", split="heldout_test", holdout=hold, length=200)
    for i in range(200):
        objs, _, _ = ho.scene(i)
        assert any((o["colour"], o["shape"]) in hold for o in objs)
    assert build_dataset("shapes", split="train", holdout="default").holdout == sorted(
        S.DEFAULT_HOLDOUT, key=S.PAIRS.index)
    with pytest.raises(ValueError, match="holdout"):
        build_dataset("shapes", split="heldout_val")
    with pytest.raises(ValueError, match="colour must be one of"):
        build_dataset("shapes", split="train", holdout=[("mauve", "circle")])


def test_shapes_stream_is_endless_and_seeded():
    a = [x["caption"] for _, x in zip(range(5), build_dataset("shapes", "train", stream=True))]
    b = [x["caption"] for _, x in zip(range(5), build_dataset("shapes", "train", stream=True))]
    assert a == b and len(a) == 5


@pytest.mark.parametrize("split", ["test", "heldout_test"])
def test_checker_reads_all_rendered_ground_truth(split):
    ds = build_dataset("shapes", split=split, seed=3, length=300,
                       **({"holdout": "default"} if split.startswith("heldout") else {}))
    scenes = [ds.scene(i) for i in range(300)]
    rs = [S.check(S.render(o), c) for o, _, c in scenes]
    assert all(r["correct"] for r in rs), [c for r, (_, _, c) in zip(rs, scenes) if not r["correct"]][:5]


def test_checker_rejects_or_names_near_misses():
    """The kept near-miss set: stretched, rounded, blurred, merged and star-like objects are
    unknown (or, for a plus sign, a cross); never a square, circle or diamond."""
    cases = S.near_misses()
    assert len(cases) == 20
    for name, img, allowed in cases:
        got = [o["shape"] for o in S.detect(img)]
        assert got and all(g in allowed for g in got), (name, got)
        assert "diamond" not in got
    # and so a caption about any of them is never judged correct
    for name, img, allowed in cases:
        for shape in set(S.SHAPES) - allowed:
            assert not S.check(img, f"a red {shape}")["correct"], (name, shape)


def test_checker_keeps_mildly_soft_shapes_and_confusion_matrix():
    """A slight blur (sigma 0.5 px) keeps every shape readable; the confusion matrix has the
    drawn shapes on its diagonal for clean renders."""
    ds = build_dataset("shapes", split="test", seed=5, length=120)
    scenes = [ds.scene(i) for i in range(120)]
    from PIL import Image, ImageFilter
    soft = [np.asarray(Image.fromarray(S.render(o)).filter(ImageFilter.GaussianBlur(0.5))) for o, _, _ in scenes]
    assert all(S.check(im, c)["correct"] for im, (_, _, c) in zip(soft, scenes))
    m = S.confusion([S.render(o) for o, _, _ in scenes], scenes)
    assert m.shape == (5, 7) and m.sum() == sum(len(o) for o, _, _ in scenes)
    assert (np.diag(m[:, :5]) == m.sum(1)).all()


def test_checker_ground_truth_and_shuffled():
    n = 500
    ds = build_dataset("shapes", split="test", seed=3, length=n)
    scenes = [ds.scene(i) for i in range(n)]
    found = [S.detect(S.render(o)) for o, _, _ in scenes]
    caps = [c for _, _, c in scenes]
    # shuffled captions: the checker scores what is in fact true, i.e. chance level
    perm = np.random.default_rng(0).permutation(n)
    shuf = [caps[j] for j in perm]
    rs = [S.check(None, c, f) for c, f in zip(shuf, found)]
    truth = [S._truth(o, r, c) for (o, r, _), c in zip(scenes, shuf)]
    assert np.mean([r["correct"] for r in rs]) < 0.02
    for k in ("colour", "shape", "count", "correct"):
        acc, chance = np.mean([r[k] for r in rs]), np.mean([t[k] for t in truth])
        assert abs(acc - chance) < 0.03, (k, acc, chance)
    assert np.mean([r["colour"] for r in rs]) < 0.2 and np.mean([r["shape"] for r in rs]) < 0.2


def test_checker_reads_tensor_and_reports_each_attribute():
    objs = [dict(colour="red", shape="circle", x=4, y=2, size=10),
            dict(colour="blue", shape="square", x=6, y=18, size=10)]
    img = S._to_float(S.render(objs))
    r = S.check(img, "a red circle above a blue square")
    assert r["correct"] and r["relation"] is True
    r = S.check(img, "a red circle below a blue square")
    assert r["colour"] and r["shape"] and r["relation"] is False and not r["correct"]
    r = S.check(img, "a red triangle above a blue square")
    assert r["colour"] and not r["shape"] and r["relation"]
    r = S.check(img, "a green circle")
    assert not r["colour"] and not r["count"] and r["relation"] is None
    with pytest.raises(ValueError, match="grammar"):
        S.check(img, "two red circles")
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        S.check(torch.zeros(1, 32, 32), "a red circle")


def test_list_datasets_and_unknown():
    names = list_datasets()
    for n in ("cifar10", "cifar100", "animal_mnist", "mnist5k", "emoji", "shapes", "shakespeare", "text"):
        assert n in names
    with pytest.raises(ValueError, match="expected one of"):
        build_dataset("imagenet")


# ------------------------------------------------------------------------------ CIFAR (fake)
def _write_fake_cifar10(root, n_train_per_batch=20, n_test=20):
    """A tiny cifar-10-batches-py in the real pickle format (latin1 dicts, uint8 rows)."""
    import os
    import pickle

    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    rng = np.random.default_rng(0)

    def batch(n, offset):
        labels = [(i + offset) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        data[:, 0] = np.array(labels, dtype=np.uint8)  # red channel, pixel (0, 0) encodes the label
        return {"batch_label": "fake", "labels": labels, "data": data,
                "filenames": [f"img{offset + i}.png" for i in range(n)]}

    for k in range(1, 6):
        with open(os.path.join(d, f"data_batch_{k}"), "wb") as f:
            pickle.dump(batch(n_train_per_batch, k * 100), f)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump(batch(n_test, 0), f)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": n_train_per_batch}, f)
    return d


def test_fake_cifar10_loads_through_cifar_path(tmp_path):
    _write_fake_cifar10(str(tmp_path))
    tr = build_dataset("cifar10", split="train", root=str(tmp_path), check_md5=False)
    va = build_dataset("cifar10", split="val", root=str(tmp_path), check_md5=False)
    te = build_dataset("cifar10", split="test", root=str(tmp_path), check_md5=False)
    assert (len(tr), len(va), len(te)) == (90, 10, 20)
    assert tr.classes[0] == "airplane" and len(tr.classes) == 10
    assert va.label_counts() == {c: 1 for c in range(10)}  # stratified 10% val
    it = tr[3]
    assert it["image"].shape == (3, 32, 32) and -1 <= it["image"].min() and it["image"].max() <= 1
    # the pixel that encodes the label survived HWC conversion and the split indexing
    assert round((it["image"][0, 0, 0].item() + 1) * 127.5) == it["label"]
    assert tr.classes[it["label"]] in it["caption"]
    # train/val disjoint and deterministic
    key = lambda ds: {ds[i]["image"].numpy().tobytes() for i in range(len(ds))}  # noqa: E731
    assert not key(tr) & key(va)
    tr2 = build_dataset("cifar10", split="train", root=str(tmp_path), check_md5=False)
    assert np.array_equal(tr.images, tr2.images)
    # the real class (md5 checked) refuses the fake files with a clear message
    with pytest.raises(FileNotFoundError, match="check_md5=False"):
        build_dataset("cifar10", split="test", root=str(tmp_path))


def test_fake_cifar100_loads(tmp_path):
    import os
    import pickle

    d = os.path.join(tmp_path, "cifar-100-python")
    os.makedirs(d)
    names = [f"class_{i}" for i in range(100)]
    for fn, n in (("train", 1000), ("test", 100)):
        labels = [i % 100 for i in range(n)]
        with open(os.path.join(d, fn), "wb") as f:
            pickle.dump({"data": np.zeros((n, 3072), np.uint8), "fine_labels": labels,
                         "coarse_labels": [x // 5 for x in labels], "filenames": [""] * n}, f)
    with open(os.path.join(d, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": names[:20]}, f)
    tr = build_dataset("cifar100", split="train", root=str(tmp_path), check_md5=False)
    te = build_dataset("cifar100", split="test", root=str(tmp_path), check_md5=False)
    assert (len(tr), len(te), len(tr.classes)) == (900, 100, 100)
    assert tr.classes[7] == "class 7" and "class " in te[0]["caption"]


def test_missing_cifar_names_root_and_flag(tmp_path):
    for name in ("cifar10", "cifar100"):
        with pytest.raises(FileNotFoundError) as e:
            build_dataset(name, split="train", root=str(tmp_path / "nowhere"))
        msg = str(e.value)
        assert str(tmp_path / "nowhere") in msg and "download=True" in msg


# ------------------------------------------------------------------------------ offline image sets
@pytest.mark.parametrize("name,sizes,n_classes,shape", [
    ("animal_mnist", (8000, 1000, 1000), 10, (3, 32, 32)),
    ("mnist5k", (4000, 500, 500), 10, (1, 28, 28)),
])
def test_offline_labelled_sets(name, sizes, n_classes, shape):
    dss = [build_dataset(name, split=s) for s in ("train", "val", "test")]
    assert tuple(len(d) for d in dss) == sizes and sum(sizes) in (10_000, 5_000)
    for d, n in zip(dss, sizes):
        assert d.label_counts() == {c: n // n_classes for c in range(n_classes)}
        assert len(d.classes) == n_classes
    it = dss[0][0]
    assert it["image"].shape == shape and it["image"].dtype == torch.float32
    assert float(it["image"].min()) >= -1 and float(it["image"].max()) <= 1
    assert dss[0].classes[it["label"]] in it["caption"]
    # disjoint (duplicate source images share a split) + deterministic
    keys = [{d.images[i].tobytes() for i in range(len(d))} for d in dss]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    again = build_dataset(name, split="val")
    assert np.array_equal(again.images, dss[1].images) and np.array_equal(again.labels, dss[1].labels)


def test_animal_mnist_options_and_transform():
    from torchvision.transforms import v2

    d = build_dataset("animal_mnist", split="val", channels=1, resize="resize")
    assert d[0]["image"].shape == (1, 32, 32)
    d = build_dataset("animal_mnist", split="val", image_size=28)
    assert d[0]["image"].shape == (3, 28, 28)
    flip = build_dataset("animal_mnist", split="val", transform=v2.RandomHorizontalFlip(p=1.0))
    plain = build_dataset("animal_mnist", split="val")
    assert torch.equal(flip[5]["image"], plain[5]["image"].flip(-1))
    # caption modes: val deterministic by index, train draws a template from torch's RNG
    assert plain[0]["caption"] == "a photo of a bear."
    tr = build_dataset("animal_mnist", split="train")
    torch.manual_seed(1)
    a = [tr[0]["caption"] for _ in range(20)]
    torch.manual_seed(1)
    assert a == [tr[0]["caption"] for _ in range(20)] and len(set(a)) > 3


def test_emoji():
    dss = {s: build_dataset("emoji", split=s) for s in ("train", "val", "test")}
    n = sum(len(d) for d in dss.values())
    assert n == 3655 and [len(d) for d in dss.values()] == [2923, 366, 366]
    assert dss["train"].classes[0] == "Smileys & Emotion" and len(dss["train"].classes) == 9
    per_group = [sum(d.label_counts().get(g, 0) for d in dss.values()) for g in range(9)]
    assert per_group == [166, 2148, 152, 133, 218, 85, 261, 223, 269]  # docs/data.md
    it = dss["train"][0]
    assert it["image"].shape == (3, 64, 64) and it["caption"] == "grinning face"
    # composited on white: corners are white
    assert float(it["image"][:, 0, 0].min()) == 1.0
    small = build_dataset("emoji", split="test", image_size=32)
    assert small[0]["image"].shape == (3, 32, 32) and small[0]["caption"] == dss["test"][0]["caption"]
    # skin-tone variants of one emoji fall in the same split; captions disjoint across splits
    bases = {s: set(d.base) for s, d in dss.items()}
    assert not bases["train"] & bases["val"] and not bases["train"] & bases["test"] and not bases["val"] & bases["test"]
    tr = dss["train"]
    tone = [i for i, c in enumerate(tr.captions()) if c.startswith("waving hand")]
    assert len(tone) in (0, 6)
    caps = {s: set(d.captions()) for s, d in dss.items()}
    assert not caps["train"] & caps["test"]


# ------------------------------------------------------------------------------ text
def test_shakespeare_blocks_and_split():
    tr = build_dataset("shakespeare", split="train", block_size=64)
    va = build_dataset("shakespeare", split="val", block_size=64)
    n = len(tr.text) + len(va.text)
    assert 4_500_000 < n < 5_000_000 and abs(len(va.text) / n - 0.1) < 0.01
    assert tr.text.startswith("THESEUS:\nNow, fair Hippolyta") and "_" not in tr.text
    assert va.text.split("\n", 1)[0].endswith(":")  # val starts at a speech boundary
    it = va[0]
    assert it["input_ids"].shape == (64,) and torch.equal(it["input_ids"][1:], it["labels"][:-1])
    assert va.tokenizer.decode(it["input_ids"].tolist()) == va.text[:64]
    assert torch.equal(va[3]["input_ids"], build_dataset("shakespeare", "val", block_size=64)[3]["input_ids"])
    torch.manual_seed(0)
    a = tr[0]["input_ids"]
    torch.manual_seed(0)
    assert torch.equal(a, tr[0]["input_ids"])
    assert build_dataset("shakespeare", split="test", block_size=64).text == va.text  # test = val block
    with pytest.raises(ValueError, match="'train' and 'val'"):
        build_dataset("shakespeare", split="heldout")


def test_text_file_and_captions(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("你好 😀 hello\n" * 200, encoding="utf-8")
    tr = build_dataset("text", split="train", path=str(p), block_size=16)
    va = build_dataset("text", split="val", path=str(p), block_size=16)
    assert tr.text + va.text == p.read_text(encoding="utf-8")
    assert max(int(tr[0]["input_ids"].max()), int(va[0]["labels"].max())) < 256
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_dataset("text", path=str(tmp_path / "missing.txt"))
    caps = build_dataset("captions", split="val", source="shapes", block_size=32)
    assert caps.text.startswith("a ") and caps[0]["input_ids"].shape == (32,)


def test_canonical_caption_names_the_same_scene_with_one_word_per_axis():
    assert S.canonical_caption("a red circle below a blue square") == "a blue square above a red circle"
    assert S.canonical_caption("a red circle right of a blue square") == "a blue square left of a red circle"
    for same in ("a red circle above a blue square", "a cyan cross left of a red circle", "a red circle", "a cat", ""):
        assert S.canonical_caption(same) == same
    ds = build_dataset("shapes", split="test")
    rewritten = 0
    for i in range(100):
        objs, _, caption = ds.scene(i)
        canonical = S.canonical_caption(caption)
        rewritten += canonical != caption
        assert S.check(S.render(objs), canonical)["correct"], (caption, canonical)  # the same scene
        assert S.parse_caption(canonical)[1] in (None, "above", "left of")
    assert rewritten > 20


def test_shapes_hard_negatives_change_one_binding_and_keep_held_out_pairs_unseen():
    from mmgen.data.shapes import DEFAULT_HOLDOUT, parse_caption
    ds = build_dataset("shapes", "train", holdout="default", negatives=True, length=300)
    kinds = set()
    for i in range(300):
        item = ds[i]
        pos, neg = parse_caption(item["caption"]), parse_caption(item["negative_caption"])
        assert neg != pos and len(neg[0]) == len(pos[0]), (item["caption"], item["negative_caption"])
        assert not set(neg[0]) & set(DEFAULT_HOLDOUT), item["negative_caption"]
        (objs, rel), (nobjs, nrel) = pos, neg
        if rel is not None and {rel, nrel} in ({"above", "below"}, {"left of", "right of"}):
            assert objs[0] != objs[1] and nobjs == objs  # a reversed relation of two different objects
            kinds.add("relation")
        elif rel is not None and nobjs != objs and sorted(c for c, _ in objs) == sorted(c for c, _ in nobjs) \
                and sorted(s for _, s in objs) == sorted(s for _, s in nobjs):
            assert nrel == rel  # the two objects' colours (or shapes) swapped
            kinds.add("swap")
        else:
            assert nrel == rel and sum(a != b for a, b in zip(objs, nobjs)) == 1
            kinds.add("replace")
    assert kinds == {"relation", "swap", "replace"}
    counts = {k: 0 for k in kinds}  # the kind is drawn first: reversed relations are common, not 1 in 20
    for i in range(300):
        item = ds[i]
        (objs, rel), (nobjs, nrel) = parse_caption(item["caption"]), parse_caption(item["negative_caption"])
        counts["relation" if rel != nrel else "swap" if sorted(objs) == sorted(nobjs) or
               sum(a != b for a, b in zip(objs, nobjs)) == 2 else "replace"] += 1
    assert counts["relation"] > 60 and counts["swap"] > 30, counts
    assert ds[5]["negative_caption"] == ds[5]["negative_caption"]  # a pure function of the index
    assert "negative_caption" not in build_dataset("shapes", "val", length=2)[0]


def test_shapes_negative_images_distort_one_object_out_of_its_shape():
    from mmgen.data.shapes import DISTORTIONS, check, render_distorted
    ds = build_dataset("shapes", "train", holdout="default", negative_images=True, length=200)
    items = [ds[i] for i in range(200)]
    assert all(check(it["image"], it["caption"])["correct"] for it in items)
    rejected = sum(not check(it["negative_image"], it["caption"])["correct"] for it in items)
    assert rejected >= 170, rejected  # a stretched, bumped or merged object is no longer its shape
    assert torch.equal(ds[3]["negative_image"], ds[3]["negative_image"])  # a pure function of the index
    assert "negative_image" not in build_dataset("shapes", "val", length=2)[0]
    objs = ds.scene(0)[0]
    drawn = {render_distorted(objs, np.random.default_rng(s)).tobytes() for s in range(30)}
    assert len(drawn) > 10 and len(DISTORTIONS) == 3


def test_shapes_negative_weights_set_the_share_of_each_kind_and_bad_weights_are_refused():
    from mmgen.data.shapes import parse_caption
    ds = build_dataset("shapes", "train", holdout="default", negatives={"relation": 1.0}, length=200)
    reversed_, possible = 0, 0
    for i in range(200):
        item = ds[i]
        (objs, rel), (nobjs, nrel) = parse_caption(item["caption"]), parse_caption(item["negative_caption"])
        if rel is not None and objs[0] != objs[1]:
            possible += 1
            reversed_ += nrel != rel and nobjs == objs
        else:  # no reversal possible (one object, or two equal ones): another kind, still one change
            assert item["negative_caption"] != item["caption"]
    assert possible > 100 and reversed_ == possible  # every scene that can be reversed is
    for bad in ({"order": 1.0}, {"relation": -1.0}, {"relation": 0.0}):
        with pytest.raises(ValueError, match="negatives weights"):
            build_dataset("shapes", "train", negatives=bad, length=2)


def _load_script(name):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_bank_resumes_to_the_same_file_and_feeds_the_train_split(tmp_path, capsys):
    from safetensors.torch import load_file
    script = _load_script("sample_bank")
    whole, parts = tmp_path / "whole.safetensors", tmp_path / "parts.safetensors"
    assert script.main(["--n", "6", "--chunk", "4", "--out", str(whole)]) == 0
    assert script.main(["--n", "3", "--chunk", "4", "--out", str(parts)]) == 0  # a run stopped inside chunk 0
    assert script.main(["--n", "6", "--chunk", "4", "--out", str(parts)]) == 0
    assert "continuing" in capsys.readouterr().out
    assert torch.is_grad_enabled()  # the script leaves the caller's autograd on
    a, b = load_file(whole), load_file(parts)
    assert a.keys() == {"real", "generated"} and a["real"].shape == (6, 3, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resuming changes nothing
    assert script.main(["--n", "4", "--chunk", "4", "--out", str(parts)]) == 0  # fewer: the first 4 items
    assert all(torch.equal(a[k][:4], v) for k, v in load_file(parts).items())

    ds = build_dataset("shapes", "train", holdout="default", negatives=True, sample_bank=str(whole))
    plain = build_dataset("shapes", "train", holdout="default", length=6)
    assert len(ds) == 6
    for i in range(6):
        item = ds[i]
        assert item["caption"] == plain[i]["caption"] and "negative_caption" in item
        torch.testing.assert_close(item["negative_image"], a["generated"][i].float() / 127.5 - 1)
        torch.testing.assert_close(item["image"], a["real"][i].float() / 127.5 - 1)
        # the image is the scene through the VQ: close to the render, not the render itself
        assert (item["image"] - plain[i]["image"]).abs().mean() < 0.1
    assert "negative_image" not in build_dataset("shapes", "val", sample_bank=str(whole), length=2)[0]
    with pytest.raises(ValueError, match="holdout"):
        build_dataset("shapes", "train", sample_bank=str(whole))  # the bank holds the held-out-pairs split
    with pytest.raises(ValueError, match="not both"):
        build_dataset("shapes", "train", holdout="default", negative_images=True, sample_bank=str(whole))
    with pytest.raises(ValueError, match="6 items"):
        build_dataset("shapes", "train", holdout="default", length=10, sample_bank=str(whole))
    with pytest.raises(FileNotFoundError, match="sample_bank.py"):
        build_dataset("shapes", "train", holdout="default", sample_bank=str(tmp_path / "none.safetensors"))
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a sample bank"):
        build_dataset("shapes", "train", holdout="default", sample_bank=str(tmp_path / "other.safetensors"))


def test_sample_bank_replace_correct_keeps_only_wrong_negatives(tmp_path):
    """--replace-correct: a sample the strict checker passes is no negative for its caption, so
    it is replaced by a distorted render of the scene; the wrong samples stay as drawn."""
    from safetensors.torch import load_file

    from mmgen.data.shapes import check, load_sample_bank
    script = _load_script("sample_bank")
    plain, replaced = tmp_path / "plain.safetensors", tmp_path / "replaced.safetensors"
    assert script.main(["--n", "8", "--out", str(plain)]) == 0
    assert script.main(["--n", "8", "--out", str(replaced), "--replace-correct"]) == 0
    meta = load_sample_bank(plain)["meta"]
    a, b = load_file(plain), load_file(replaced)
    assert torch.equal(a["real"], b["real"])
    verdicts = [check(im.permute(1, 2, 0).numpy(), c)["correct"] for im, c in zip(a["generated"], meta["captions"])]
    assert meta["sample_correct"] == [int(v) for v in verdicts] == load_sample_bank(replaced)["meta"]["sample_correct"]
    assert 0 < sum(verdicts) < 8  # the shipped model gets some right and some wrong: both branches run
    for i, ok in enumerate(verdicts):
        assert torch.equal(a["generated"][i], b["generated"][i]) != ok
        assert not check(b["generated"][i].permute(1, 2, 0).numpy(), meta["captions"][i])["correct"]
