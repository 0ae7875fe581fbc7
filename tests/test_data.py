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


def test_checker_ground_truth_and_shuffled():
    n = 500
    ds = build_dataset("shapes", split="test", seed=3, length=n)
    scenes = [ds.scene(i) for i in range(n)]
    found = [S.detect(S.render(o)) for o, _, _ in scenes]
    caps = [c for _, _, c in scenes]
    gt = [S.check(None, c, f) for c, f in zip(caps, found)]
    assert np.mean([r["correct"] for r in gt]) >= 0.99
    for k in ("count", "colour", "shape"):
        assert np.mean([r[k] for r in gt]) >= 0.99
    assert np.mean([r["relation"] for r in gt if r["relation"] is not None]) >= 0.99
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
