"""CLIP: losses (hand-written InfoNCE, open_clip parity, DDP = single process), the text
tower against open_clip's, zero-shot with agreeing towers, retrieval metrics, linear probe,
tokenization limits, save/load with the tokenizer, logit-scale clamp, LiT locking."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmgen
from mmgen.config import config_from_dict
from mmgen.metrics.clip_eval import linear_probe, retrieval_metrics, zero_shot_accuracy, zero_shot_classifier
from mmgen.models.base import Model
from mmgen.losses import ClipLoss, SigLipLoss
from mmgen.models.clip import CLIP, CLIPConfig
from mmgen.registry import _FAMILIES, register_model


# A stand-in image tower with the timm encoder API: flatten -> linear. Keeps these tests fast
# and independent of the ViT; clip_tiny (real ViT) goes through tests/test_presets.py.
@dataclass
class _TowerConfig:
    img_size: int = 8
    in_chans: int = 3
    dim: int = 16
    num_classes: int = 0


if "clip_test_tower" not in _FAMILIES:
    @register_model("clip_test_tower")
    class _Tower(Model):
        config_class = _TowerConfig

        def __init__(self, config):
            super().__init__(config)
            self.num_features = config.dim
            self.fc = nn.Linear(config.in_chans * config.img_size ** 2, config.dim)

        def forward_features(self, x):
            return self.fc(x.flatten(1))

        def forward_head(self, x, pre_logits=False):
            return x


def make_clip(tokenizer=None, **kw) -> CLIP:
    base = dict(vision_model="clip_test_tower", vision=dict(img_size=8, dim=32), embed_dim=16, tokenizer="byte",
                text=dict(context_length=32, width=32, depth=2, heads=2))
    base.update(kw)
    return CLIP.create(config_from_dict(CLIPConfig, base), tokenizer=tokenizer)


def infonce(img, txt, scale):
    """Symmetric InfoNCE written out: -log of each positive's share of its row, both ways."""
    n = img.shape[0]
    logits = scale * img @ txt.T
    i2t = -sum(torch.log(torch.exp(logits[i, i]) / torch.exp(logits[i]).sum()) for i in range(n)) / n
    t2i = -sum(torch.log(torch.exp(logits[j, j]) / torch.exp(logits[:, j]).sum()) for j in range(n)) / n
    return (i2t + t2i) / 2


def feats(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1))


# ---------------------------------------------------------------- losses

def test_clip_loss_is_symmetric_infonce_and_matches_open_clip():
    from open_clip.loss import ClipLoss as OCClipLoss
    img, txt = feats()
    scale = torch.tensor(1 / 0.07)
    ours = ClipLoss()(img, txt, scale)
    torch.testing.assert_close(ours, infonce(img, txt, scale))
    torch.testing.assert_close(ours, OCClipLoss()(img, txt, scale))


def test_siglip_loss_matches_open_clip():
    from open_clip.loss import SigLipLoss as OCSigLip
    img, txt = feats()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    torch.testing.assert_close(SigLipLoss()(img, txt, scale, bias), OCSigLip()(img, txt, scale, bias))


def test_label_aware_loss_drops_same_class_negatives():
    img, txt = feats(6)
    scale = torch.tensor(5.0)
    distinct = torch.arange(6)
    torch.testing.assert_close(ClipLoss(label_aware=True)(img, txt, scale, labels=distinct), infonce(img, txt, scale))
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = scale * img @ txt.T
    total = 0.0
    for i in range(6):  # row i: its own pair plus every other-class column
        keep = [j for j in range(6) if j == i or labels[j] != labels[i]]
        total = total - torch.log_softmax(logits[i, keep], 0)[keep.index(i)] / 12
        total = total - torch.log_softmax(logits[keep, i], 0)[keep.index(i)] / 12
    torch.testing.assert_close(ClipLoss(label_aware=True)(img, txt, scale, labels=labels), total)
    # SigLIP: same-class pairs are left out (neither positive nor negative).
    sig = SigLipLoss(label_aware=True)(img, txt, scale, torch.tensor(-2.0), labels=labels)
    lg = logits - 2.0
    ref = 0.0
    for i in range(6):
        for j in range(6):
            if i == j:
                ref = ref - F.logsigmoid(lg[i, j])
            elif labels[i] != labels[j]:
                ref = ref - F.logsigmoid(-lg[i, j])
    torch.testing.assert_close(sig, ref / 6)
    with pytest.raises(ValueError, match="labels"):
        ClipLoss(label_aware=True)(img, txt, scale)


def _negatives(img, txt):
    """A third feature set for the hard-negative cases, the same in every process."""
    return F.normalize(img - 0.5 * txt, dim=-1)


def _half(batch, rank, world):
    n = len(batch["caption"]) // world
    return {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}


def test_hard_negatives_are_extra_columns_of_the_image_rows():
    img, txt = feats(6)
    neg = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    scale = torch.tensor(5.0)
    logits = scale * img @ torch.cat([txt, neg]).T  # (6, 12): captions, then negatives
    i2t = F.cross_entropy(logits, torch.arange(6))
    t2i = F.cross_entropy(scale * txt @ img.T, torch.arange(6))
    torch.testing.assert_close(ClipLoss()(img, txt, scale, negative_text_features=neg), (i2t + t2i) / 2)
    # A negative equal to its own caption can never be told apart: the loss rises.
    assert ClipLoss()(img, txt, scale, negative_text_features=txt) > ClipLoss()(img, txt, scale) + 0.1
    with pytest.raises(ValueError, match="same shape"):
        ClipLoss()(img, txt, scale, negative_text_features=neg[:3])


def test_hard_negative_images_are_extra_columns_of_the_caption_rows():
    img, txt = feats(6)
    neg = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(4)), dim=-1)
    scale = torch.tensor(5.0)
    i2t = F.cross_entropy(scale * img @ txt.T, torch.arange(6))
    t2i = F.cross_entropy(scale * txt @ torch.cat([img, neg]).T, torch.arange(6))  # images, then negatives
    torch.testing.assert_close(ClipLoss()(img, txt, scale, negative_image_features=neg), (i2t + t2i) / 2)
    assert ClipLoss()(img, txt, scale, negative_image_features=img) > ClipLoss()(img, txt, scale) + 0.1
    with pytest.raises(ValueError, match="same shape"):
        ClipLoss()(img, txt, scale, negative_image_features=neg[:3])


def test_clip_model_trains_with_shapes_hard_negative_images():
    from mmgen.data import build_dataset
    ds = build_dataset("shapes", "train", holdout="default", negative_images=True, length=8)
    kw = dict(vision=dict(img_size=32, dim=32), text=dict(context_length=48, width=32, depth=2, heads=2))
    model = make_clip(hard_negative_images=True, **kw)
    batch = model.collate([ds[i] for i in range(8)])
    assert batch["negative_image"].shape == batch["image"].shape
    loss, _ = model.loss(batch)
    loss.backward()
    plain = make_clip(**kw)
    plain.load_state_dict(model.state_dict())
    assert loss.item() > plain.loss(batch)[0].item()  # more negatives in every caption row
    del batch["negative_image"]
    with pytest.raises(ValueError, match="negative_image"):
        model.loss(batch)
    assert set(model.evaluate(batch)) >= {"val_loss", "val_t2i_R@1"}  # a split without negative images
    with pytest.raises(ValueError, match="loss='clip'"):
        make_clip(hard_negative_images=True, loss="siglip")


def test_clip_model_trains_with_shapes_hard_negatives():
    from mmgen.data import build_dataset
    ds = build_dataset("shapes", "train", holdout="default", negatives=True, length=8)
    kw = dict(vision=dict(img_size=32, dim=32), text=dict(context_length=48, width=32, depth=2, heads=2))
    model = make_clip(hard_negatives=True, **kw)
    batch = model.collate([ds[i] for i in range(8)])
    assert batch["negative_input_ids"].shape == batch["input_ids"].shape
    loss, _ = model.loss(batch)
    loss.backward()
    plain = make_clip(**kw)
    plain.load_state_dict(model.state_dict())
    assert loss.item() > plain.loss(batch)[0].item()  # more negatives in every image row
    del batch["negative_input_ids"]
    with pytest.raises(ValueError, match="negative_caption"):
        model.loss(batch)
    with pytest.raises(ValueError, match="loss='clip'"):
        make_clip(hard_negatives=True, loss="siglip")


def _ddp_worker(rank, world, store, out_dir, img, txt, labels):
    import datetime
    # A forked child must not enter the parent's OpenMP pool (libgomp is not fork-safe and
    # hangs); one thread keeps torch off it, as DataLoader workers do.
    torch.set_num_threads(1)

    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    B = img.shape[0] // world
    results = {}
    cases = {f"clip_local{int(ll)}_grad{int(gw)}": ClipLoss(local_loss=ll, gather_with_grad=gw)
             for ll in (False, True) for gw in (False, True)}
    cases["clip_label_aware"] = ClipLoss(local_loss=True, gather_with_grad=True, label_aware=True)
    cases.update({f"clip_negatives_local{int(ll)}_grad1": ClipLoss(local_loss=ll, gather_with_grad=True)
                  for ll in (False, True)})
    cases.update({f"clip_negimages_local{int(ll)}_grad1": ClipLoss(local_loss=ll, gather_with_grad=True)
                  for ll in (False, True)})
    cases["siglip"] = SigLipLoss()
    negatives = _negatives(img, txt)
    for name, fn in cases.items():
        i = img[rank * B:(rank + 1) * B].clone().requires_grad_(True)
        t = txt[rank * B:(rank + 1) * B].clone().requires_grad_(True)
        scale = torch.tensor(7.0, requires_grad=True)
        bias = torch.tensor(-3.0) if name == "siglip" else None
        lab = labels[rank * B:(rank + 1) * B] if "label" in name else None
        extra = {"negative_text_features": negatives[rank * B:(rank + 1) * B]} if "negatives" in name else \
            {"negative_image_features": negatives[rank * B:(rank + 1) * B]} if "negimages" in name else {}
        loss = fn(i, t, scale, bias, labels=lab, **extra)
        loss.backward()
        results[name] = (loss.detach(), i.grad, t.grad, scale.grad)
    # The model's loss: in training the global batch (gathered), each rank gets the full loss.
    torch.manual_seed(0)
    model = make_clip()
    batch = model.example_batch(8)
    results["model_loss"] = model.train().loss(_half(batch, rank, world))[0].detach()
    # Evaluation may run on rank 0 alone (as the train loop does): no collective may be used,
    # or this would time out.
    if rank == 0:
        model.eval().evaluate(_half(batch, rank, world))
    dist.barrier()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_loss_equals_single_process_on_global_batch(tmp_path):
    """Two gloo processes, 4 samples each, against one process on all 8. Under DDP the
    parameter gradient is the average over ranks, so the gradient a rank's features
    carry, divided by world size, must equal the single-process gradient of those rows."""
    import torch.multiprocessing as mp
    world = 2
    img, txt = feats(8)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0])
    mp.start_processes(_ddp_worker, args=(world, str(tmp_path / "store"), str(tmp_path), img, txt, labels),
                       nprocs=world, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    torch.manual_seed(0)
    model = make_clip()
    full = model.train().loss(model.example_batch(8))[0].detach()
    for r in ranks:
        torch.testing.assert_close(r.pop("model_loss"), full)
    for name in ranks[0]:
        i = img.clone().requires_grad_(True)
        t = txt.clone().requires_grad_(True)
        scale = torch.tensor(7.0, requires_grad=True)
        if name == "siglip":
            ref = SigLipLoss()(i, t, scale, torch.tensor(-3.0))
        elif "negatives" in name:
            ref = ClipLoss()(i, t, scale, negative_text_features=_negatives(img, txt))
        elif "negimages" in name:
            ref = ClipLoss()(i, t, scale, negative_image_features=_negatives(img, txt))
        else:
            ref = ClipLoss(label_aware="label" in name)(i, t, scale, labels=labels if "label" in name else None)
        ref.backward()
        losses = torch.stack([r[name][0] for r in ranks])
        if name == "siglip":  # each rank divides its rows by the local batch: the sum is B_global/B_local x ref
            torch.testing.assert_close(losses.mean(), ref, msg=name)
        else:  # full loss on every rank, or (local_loss) a share whose mean is the global loss
            torch.testing.assert_close(losses.mean(), ref, msg=name)
            if "local0" in name:
                torch.testing.assert_close(losses[0], losses[1], msg=name)
        exact_grad = "grad1" in name or name in ("siglip", "clip_label_aware")
        if exact_grad:
            gi = torch.cat([r[name][1] for r in ranks]) / world
            gt = torch.cat([r[name][2] for r in ranks]) / world
            torch.testing.assert_close(gi, i.grad, msg=name)
            torch.testing.assert_close(gt, t.grad, msg=name)
            torch.testing.assert_close(torch.stack([r[name][3] for r in ranks]).mean(), scale.grad, msg=name)


# ---------------------------------------------------------------- text tower

def test_text_tower_matches_open_clip_text_transformer():
    """Our causal text tower (shared blocks) equals open_clip's TextTransformer with the same
    weights, argmax (EOT) pooling and projection."""
    from open_clip.transformer import TextTransformer
    model = make_clip(text=dict(context_length=40, width=32, depth=2, heads=4, pool="argmax"))
    ours = model.text
    oc = TextTransformer(context_length=40, vocab_size=model.config.text.vocab_size, width=32, heads=4, layers=2,
                         output_dim=16).eval()
    sd = {"token_embedding.weight": ours.token_embedding.weight, "positional_embedding": ours.pos.weight,
          "ln_final.weight": ours.transformer.norm.weight, "ln_final.bias": ours.transformer.norm.bias,
          "text_projection": model.text_proj.weight.T}
    for i, blk in enumerate(ours.transformer.blocks):
        p = f"transformer.resblocks.{i}."
        sd.update({p + "ln_1.weight": blk.norm1.weight, p + "ln_1.bias": blk.norm1.bias,
                   p + "attn.in_proj_weight": blk.attn.qkv.weight, p + "attn.in_proj_bias": blk.attn.qkv.bias,
                   p + "attn.out_proj.weight": blk.attn.proj.weight, p + "attn.out_proj.bias": blk.attn.proj.bias,
                   p + "ln_2.weight": blk.norm2.weight, p + "ln_2.bias": blk.norm2.bias,
                   p + "mlp.c_fc.weight": blk.mlp.fc1.weight, p + "mlp.c_fc.bias": blk.mlp.fc1.bias,
                   p + "mlp.c_proj.weight": blk.mlp.fc2.weight, p + "mlp.c_proj.bias": blk.mlp.fc2.bias})
    oc.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    model.eval()
    tokens = model.tokenize(["a red circle", "two blue squares on the left", "x"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens, normalize=False), oc(tokens), atol=1e-5, rtol=1e-5)


def test_eos_pooling_ignores_padding_and_needs_eos():
    model = make_clip().eval()
    short = model.tokenize(["a cat"])
    padded = model.tokenizer(["a cat"], context_length=32)
    padded[0, 8:] = 5  # junk after EOS: a causal tower never sees it from the EOS position
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(short), model.encode_text(padded))
    with pytest.raises(ValueError, match="EOS"):
        model.encode_text(torch.full((1, 5), 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model.encode_text(torch.full((1, 5), 10_000, dtype=torch.long))


def test_mean_pooling_averages_the_states_up_to_eos():
    model = make_clip(text=dict(context_length=32, width=32, depth=2, heads=2, pool="mean")).eval()
    tokens = model.tokenize(["a cat", "a red circle"])
    padded = model.tokenizer(["a cat"], context_length=32)
    padded[0, 8:] = 5  # junk after EOS is not averaged in
    with torch.no_grad():
        states, eos = model.text.encode_states(tokens)
        n = int(eos[0]) + 1
        torch.testing.assert_close(model.text(tokens)[0], states[0, :n].mean(0))
        torch.testing.assert_close(model.encode_text(tokens[:1]), model.encode_text(padded))


def test_pruned_vocabulary_round_trips_through_the_checkpoint(tmp_path):
    from mmgen.text import get_tokenizer
    captions = ["a red circle on the left", "two blue squares", "a green triangle at the top right"]
    tok = get_tokenizer("clip_bpe").pruned(captions)
    assert tok.vocab_size < 40  # from 49,408
    model = make_clip(tokenizer=tok)
    assert model.text.token_embedding.num_embeddings == tok.vocab_size
    tokens = model.tokenize(captions)
    assert [tok.decode(t.tolist()) for t in tokens] == captions
    model.eval().save_pretrained(tmp_path / "ck")
    loaded = mmgen.load_pretrained(tmp_path / "ck")  # rebuilt from config.json alone
    assert loaded.tokenizer.tokenizer.kept == tok.kept
    torch.testing.assert_close(loaded.tokenize(captions), tokens)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(captions), model.encode_text(tokens))
    with pytest.warns(UserWarning, match="1 of 2 texts hold words outside .* 'a purple circle'"):
        unk = loaded.tokenize(["a red circle", "a purple circle"])[1].tolist()
    assert tok.unk_id in unk and tok.decode(unk) == "a <unk> circle"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per model, not once per batch
        loaded.tokenize(["a teal circle"])


def test_text_longer_than_context_raises_or_warns():
    model = make_clip()
    long = "a very long caption " * 5
    with pytest.raises(ValueError, match=r"context_length is 32.*truncate=True"):
        model.tokenize([long])
    with pytest.warns(UserWarning, match="truncated 1 of 1 captions to context_length=32"):
        tokens = model.tokenize([long], truncate=True)
    assert tokens.shape == (1, 32) and tokens[0, -1] == model.config.text.eos_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what fits passes silently
        assert model.tokenize(["short"]).shape == (1, 32)


# ---------------------------------------------------------------- model

def test_forward_shapes_and_unit_norm():
    model = make_clip()
    b = model.example_batch(3)
    out = model(b["image"], b["input_ids"])
    assert out["image_features"].shape == out["text_features"].shape == (3, 16)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(3))
    assert out["logits_per_image"].shape == (3, 3)
    torch.testing.assert_close(out["logit_scale"], torch.tensor(1 / 0.07))
    assert model.encode_image(b["image"], normalize=False).norm(dim=-1).sub(1).abs().max() > 1e-3
    model.eval()
    sims = model.similarity(b["image"], b["caption"])
    torch.testing.assert_close(sims, out["logits_per_image"].detach() / out["logit_scale"].detach())
    torch.testing.assert_close(model.score(b["image"], b["caption"]), sims.diagonal())
    with pytest.raises(ValueError, match="3 images and 1 texts"):
        model.score(b["image"], b["caption"][:1])


def test_logit_scale_clamped_after_step():
    model = make_clip()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.post_step()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.loss(model.example_batch(2))  # the loss clamps too, as a safety net
    assert model.logit_scale.item() == 0.0


def test_overfit_one_batch_and_lit_lock():
    torch.manual_seed(0)
    model = make_clip()
    batch = model.example_batch(6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.post_step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first and logs["i2t_acc"] == logs["t2i_acc"] == 1.0
    # LiT: the locked image tower gets no gradient and does not move; the text tower trains.
    model.lock_image_tower("tower_proj")
    model.zero_grad(set_to_none=True)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("visual.", "image_proj.")) for n in frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    text_before = model.text_proj.weight.detach().clone()
    loss, _ = model.loss(batch)
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None and torch.equal(p, frozen[n]), n
    assert not torch.equal(model.text_proj.weight, text_before)


def test_siglip_and_label_aware_models_train():
    for kw in (dict(loss="siglip"), dict(label_aware=True)):
        model = make_clip(**kw)
        loss, logs = model.loss(model.example_batch(4))
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters()), kw
    assert make_clip(loss="siglip").logit_bias.item() == -10.0


def test_save_load_round_trip_keeps_tokenizer(tmp_path):
    model = make_clip().eval()
    model.save_pretrained(tmp_path / "ck")
    loaded = mmgen.load_pretrained(tmp_path / "ck")
    assert isinstance(loaded, CLIP) and loaded.config == model.config
    assert loaded.config.vision_model == "clip_test_tower" and loaded.config.vision["dim"] == 32
    b = model.example_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(b["image"], b["input_ids"])["logits_per_image"],
                                   model(b["image"], b["input_ids"])["logits_per_image"])
    torch.testing.assert_close(loaded.tokenize(["a red circle"]), model.tokenize(["a red circle"]))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="loss must be one of"):
        make_clip(loss="triplet")
    with pytest.raises(ValueError, match="neither a model family"):
        make_clip(vision_model="not_a_tower")
    with pytest.raises(ValueError, match="pool must be one of"):
        make_clip(text=dict(pool="cls"))


# ---------------------------------------------------------------- evaluation

def _agreeing_model(classnames, templates):
    """A model whose image tower maps image k exactly onto class k's zero-shot text embedding:
    images are black with one lit pixel, and the image projection is solved so that
    encode_image(image_k) = classifier[:, k]."""
    model = make_clip().eval()
    clf = zero_shot_classifier(model, classnames, templates)  # (E, K)
    K = len(classnames)
    images = -torch.ones(K, 3, 8, 8)  # black, with one white pixel (k) per class
    for k in range(K):
        images[k].view(-1)[k] = 1.0
    with torch.no_grad():
        f = model.image_features(images)  # (K, D)
        sol = torch.linalg.lstsq(f.double(), clf.T.double()).solution  # (D, E): f @ sol = clf.T
        model.image_proj.weight.copy_(sol.T.float())
    return model, images


def test_zero_shot_with_agreeing_towers_is_perfect():
    classnames = ["cat", "dog", "horse", "frog", "ship"]
    templates = ["a photo of a {}.", "a drawing of the {}."]
    model, images = _agreeing_model(classnames, templates)
    labels = torch.arange(5)
    assert zero_shot_accuracy(model, images, labels, classnames, templates)["top1"] == 1.0
    # Shuffled labels are a check that the test can fail.
    assert zero_shot_accuracy(model, images, labels.roll(1), classnames, templates)["top1"] == 0.0


def test_retrieval_metrics():
    img, _ = feats(4)
    txt = img[[1, 0, 2, 3]]  # texts 0 and 1 describe each other's images
    m = retrieval_metrics(img, txt)
    assert m["t2i_R@1"] == 0.5 and m["i2t_R@1"] == 0.5 and m["t2i_R@5"] == 1.0
    m = retrieval_metrics(img, txt, text_to_image=[1, 0, 2, 3])
    assert m["t2i_R@1"] == 1.0 and m["i2t_R@1"] == 1.0
    # Identical captions: retrieving any image with the same caption is a hit.
    m = retrieval_metrics(img, txt, captions=["red", "red", "blue", "green"])
    assert m["t2i_R@1"] == 1.0 and m["i2t_R@1"] == 1.0
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_metrics(img, txt, text_to_image=[0, 1, 2, 9])


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(60) % 3
    x = centers[y] + torch.randn(60, 8, generator=g) * 0.3
    m = linear_probe(x[:45], y[:45], x[45:], y[45:])
    assert m["test_acc"] == 1.0
    rand = linear_probe(torch.randn(45, 8, generator=g), y[:45], torch.randn(15, 8, generator=g), y[45:])
    assert rand["test_acc"] < 0.9


def test_linear_probe_recovers_a_known_linear_boundary():
    # Unclustered Gaussian features labelled by a known linear rule (argmax of x @ W): the
    # probe must find that rule (test accuracy near 1, weights aligned with W), and fails on
    # labels the features cannot predict (shuffled).
    g = torch.Generator().manual_seed(1)
    W = torch.randn(12, 4, generator=g)
    x = torch.randn(1200, 12, generator=g)
    y = (x @ W).argmax(1)
    m = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], max_iter=300)
    assert m["test_acc"] >= 0.95 and m["train_acc"] >= 0.97
    shuffled = y[torch.randperm(1200, generator=g)]
    assert linear_probe(x[:1000], shuffled[:1000], x[1000:], shuffled[1000:])["test_acc"] < 0.45


def test_augment_field_changes_training_images_only():
    model = make_clip(vision=dict(img_size=8, dim=32), augment="crop_flip")
    b = model.example_batch(4)
    seen = []
    inner = model.visual.forward_features
    model.visual.forward_features = lambda x: (seen.append(x.clone()), inner(x))[1]
    model.train()
    model.loss(b)
    model.eval()
    model.loss(b)
    assert not torch.equal(seen[0], b["image"]) and torch.equal(seen[1], b["image"])
    with pytest.raises(ValueError, match="augment must be one of"):
        make_clip(augment="rotate")


# ---------------------------------------------------------------- CLI

def _png(path, value):
    import numpy as np
    from PIL import Image
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr.reshape(-1)[value] = 255
    Image.fromarray(arr).save(path)
    return str(path)


def test_cli_zero_shot_and_retrieve(tmp_path, capsys):
    from mmgen.cli import main
    classnames = ["cat", "dog", "horse"]
    model, _ = _agreeing_model(classnames, ["a photo of a {}."])
    model.save_pretrained(tmp_path / "ck")
    # Pixel k of the flattened (H, W, C) PNG is pixel k of the (C, H, W) tensor only for k = 0.
    img = _png(tmp_path / "a.png", 0)
    assert main(["zero-shot", img, "--labels", ",".join(classnames), "--checkpoint", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{img}: cat ")
    assert main(["retrieve", "--checkpoint", str(tmp_path / "ck"), "--image", img, "--texts",
                 "a photo of a dog.,a photo of a cat.", "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("a photo of a cat.")
    assert main(["retrieve", "--checkpoint", str(tmp_path / "ck"), "--text", "a photo of a cat.", img,
                 _png(tmp_path / "b.png", 5)]) == 0
    assert "a.png" in capsys.readouterr().out.splitlines()[0]
    assert main(["retrieve", "--checkpoint", str(tmp_path / "ck")]) == 2
    assert "exactly one of --text" in capsys.readouterr().err
    assert main(["zero-shot", str(tmp_path / "missing.png"), "--labels", "a,b", "--checkpoint",
                 str(tmp_path / "ck")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_zero_shot_with_linear_probe(tmp_path, capsys):
    from mmgen.cli import main
    make_clip(vision=dict(img_size=32, dim=32)).save_pretrained(tmp_path / "ck")
    assert main(["zero-shot", "--dataset", "animal_mnist", "--limit", "60", "--template", "a {}.", "--probe",
                 "--probe-train", "200",
                 "--checkpoint", str(tmp_path / "ck")]) == 0
    out = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert out["probe_n_train"] == "200" and out["n"] == "60"
    assert abs(float(out["zero_shot_over_probe"]) - float(out["top1"]) / float(out["probe_top1"])) < 2e-3
    assert main(["zero-shot", "--probe", "x.png", "--labels", "a,b", "--checkpoint", str(tmp_path / "ck")]) == 2
    assert "--probe needs --dataset" in capsys.readouterr().err


def test_lit_starts_from_a_trained_image_tower(tmp_path):
    trained = make_clip()
    with torch.no_grad():
        for p in trained.visual.parameters():
            p.add_(1.0)
    trained.save_pretrained(tmp_path / "trained")
    lit = make_clip(init_image_from=str(tmp_path / "trained"), lock_image="tower")
    b = trained.example_batch(2)
    torch.testing.assert_close(lit.encode_image(b["image"]), trained.encode_image(b["image"]))
    assert not any(p.requires_grad for p in lit.visual.parameters())
    lit.save_pretrained(tmp_path / "lit")
    import shutil
    shutil.rmtree(tmp_path / "trained")  # a saved LiT model no longer needs its source
    loaded = mmgen.load_pretrained(tmp_path / "lit")
    torch.testing.assert_close(loaded.encode_image(b["image"]), trained.encode_image(b["image"]))
    with pytest.raises(ValueError, match="do not fit"):
        make_clip(init_image_from=str(tmp_path / "lit"), vision=dict(img_size=8, dim=16))


def test_swin_image_tower(tmp_path):
    """Any image family with the timm encoder API serves: here our Swin, given by preset name
    and stored as family + full config."""
    model = make_clip(vision_model="swin_tiny", vision={})
    assert model.config.vision_model == "swin" and model.config.vision["num_classes"] == 0
    b = model.example_batch(2)
    loss, _ = model.loss(b)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval().save_pretrained(tmp_path / "ck")
    loaded = mmgen.load_pretrained(tmp_path / "ck")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(b["image"]), model.encode_image(b["image"]))


class _CaptionOracle(torch.nn.Module):
    """A stand-in CLIP that reads images perfectly: an image's embedding is the embedding of
    its true caption (looked up by pixels), a caption's is a fixed random vector for the whole
    string (word_bag=False) or the normalised sum of its words' vectors, relation words left
    out (word_bag=True: the bag of words a contrastive model drifts to)."""

    def __init__(self, scenes: dict, word_bag: bool):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))
        self.scenes, self.word_bag, self.captions = scenes, word_bag, []

    def _vec(self, text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(abs(hash(text)) % 2**31)
        return torch.randn(32, generator=g)

    def tokenize(self, texts):
        self.captions.extend(texts)
        return torch.arange(len(self.captions) - len(texts), len(self.captions))

    def encode_text(self, ids):
        out = []
        for i in ids.tolist():
            cap = self.captions[i]
            words = sorted(w for w in cap.split() if w not in ("above", "below", "left", "right", "of"))
            out.append(sum(self._vec(w) for w in words) if self.word_bag else self._vec(cap))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)

    def encode_image(self, x, normalize=True):
        return self.encode_text(self.tokenize([self.scenes[img.numpy().tobytes()] for img in x]))


def test_shapes_binding_tells_a_reader_of_relations_from_a_bag_of_words():
    from mmgen.data import build_dataset
    from mmgen.metrics.clip_eval import shapes_binding
    ds = build_dataset("shapes", "test")
    scenes = {ds[i]["image"].numpy().tobytes(): ds[i]["caption"] for i in range(120)}
    reader = shapes_binding(_CaptionOracle(scenes, word_bag=False), limit=40)
    assert reader["n"] == 40 and reader["relation_reversed"] == 1.0 and reader["colours_swapped"] == 1.0
    assert reader["text_cosine_relation"] < 0.9
    bag = shapes_binding(_CaptionOracle(scenes, word_bag=True), limit=40)
    # the same words in another order score the same: never preferred (ties count against)
    assert bag["relation_reversed"] == 0.0 and bag["colours_swapped"] == 0.0
    assert bag["text_cosine_relation"] > 0.999


# captioning cross-attends to image tokens: a real (1-block) ViT rather than the pooled test tower
VIT_8PX = dict(vision_model="vit_tiny_patch4_32", vision=dict(img_size=8, patch_size=4, embed_dim=32, depth=1,
                                                              num_heads=2))


def test_caption_loss_trains_the_image_tower_without_seeing_the_next_token():
    torch.manual_seed(0)
    model = make_clip(caption_loss=2.0, caption_depth=1, **VIT_8PX)
    tok = model.tokenize(["a red dot above blue", "a blue dot above red"])
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    # causal: the decoder's prediction at t does not change when a later token does
    model.eval()
    with torch.no_grad():
        feats = model.visual.forward_features(image)
        states, _ = model.text.encode_states(tok)
        h = model.captioner.transformer(states[:, :-1], context=feats)
        changed = tok.clone()
        changed[:, 6] = tok[1, 3]
        states2, _ = model.text.encode_states(changed)
        h2 = model.captioner.transformer(states2[:, :-1], context=feats)
    torch.testing.assert_close(h[:, :6], h2[:, :6])
    assert not torch.allclose(h[:, 6:], h2[:, 6:])
    # the captioning loss alone reaches the image tower
    model.train()
    cap = model.captioner.loss(*model.text.encode_states(tok)[:1], model.visual.forward_features(image), tok,
                               model.config.text.pad_id)
    cap.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.visual.parameters())
    loss, logs = model.loss({"image": image, "input_ids": tok})
    assert {"contrastive_loss", "caption_loss"} <= set(logs)
    assert logs["loss"] == pytest.approx(logs["contrastive_loss"] + 2.0 * logs["caption_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="causal"):
        make_clip(caption_loss=1.0, text=dict(context_length=32, width=32, depth=2, heads=2, causal=False), **VIT_8PX)
    with pytest.raises(ValueError, match="caption_loss"):
        make_clip(caption_loss=float("nan"), **VIT_8PX)
    with pytest.raises(ValueError, match="image tokens"):  # a tower that only gives pooled features
        make_clip(caption_loss=1.0).loss({"image": image, "input_ids": tok})


def test_caption_loss_overfits_one_batch_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = make_clip(caption_loss=1.0, caption_depth=1, **VIT_8PX)
    batch = {"image": torch.rand(4, 3, 8, 8) * 2 - 1,
             "input_ids": model.tokenize(["a red circle", "a blue square", "a green cross", "a cyan diamond"])}
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss, logs = model.loss(batch)
        first = first or logs["caption_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["caption_loss"] < 0.25 * first, (first, logs["caption_loss"])
    model.eval().save_pretrained(tmp_path / "ck")
    loaded = mmgen.load_pretrained(tmp_path / "ck").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.loss(batch)[1]["caption_loss"], model.loss(batch)[1]["caption_loss"])


def test_clip_ensemble_scores_the_mean_of_its_members_cosines():
    from mmgen.metrics.clip_score import clip_scores
    from mmgen.models.clip import CLIPEnsemble
    from mmgen.pipelines.base import Pipeline
    torch.manual_seed(0)
    small = make_clip().eval()  # 8 px images, byte tokenizer, context 32
    other = make_clip(vision=dict(img_size=16, dim=32), embed_dim=24,
                      text=dict(context_length=12, width=32, depth=2, heads=2)).eval()
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    prompts = ["a red circle", "a blue square left of a green cross", "x", "a cyan diamond", "a red circle"]
    ens = CLIPEnsemble([small, other])
    mean = (clip_scores(small, images, prompts) + clip_scores(other, images, prompts)) / 2  # each resizes its input
    torch.testing.assert_close(clip_scores(ens, images, prompts), mean, atol=1e-4, rtol=1e-5)
    # long prompts are cut to each member's own context, as a lone CLIP does
    long = ["a red circle above a blue square left of a green cross " * 3] * 5
    torch.testing.assert_close(clip_scores(ens, images, long),
                               (clip_scores(small, images, long) + clip_scores(other, images, long)) / 2,
                               atol=1e-4, rtol=1e-5)
    assert ens.tokenizer is small.tokenizer and ens.config is small.config  # prompt checks read the first
    assert isinstance(Pipeline._check_clip([small, other]), CLIPEnsemble) and Pipeline._check_clip([small]) is small
    with pytest.raises(ValueError, match="at least two"):
        CLIPEnsemble([small])
    with pytest.raises(TypeError, match="member 1"):
        CLIPEnsemble([small, torch.nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="strings"):
        ens.encode_text(small.tokenize(["a red circle"]))
