"""ViT: parity with timm and torchvision on random weights, the timm API, positions, errors."""
import pytest
import torch

from mmgen import create_model, load_pretrained
from mmgen.models.convert import convert_timm_vit, vit_config_from_timm
from mmgen.models.vit import ViT, ViTConfig

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TOL = 1e-4


def _perturb(model):
    """Random weights everywhere (zero-initialised biases, cls tokens and heads would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _timm_vit(**kw):
    base = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=2, num_heads=4)
    return _perturb(timm.models.VisionTransformer(**{**base, **kw}))


@pytest.mark.parametrize("kw", [
    {},
    {"global_pool": "avg"},
    {"reg_tokens": 4},
    {"class_token": False, "global_pool": "avg", "no_embed_class": True},
    {"reg_tokens": 2, "no_embed_class": True, "init_values": 0.1, "qk_norm": True},
    {"global_pool": "", "num_classes": 0},
], ids=["token", "avg", "registers", "no_cls", "ls_qknorm", "nopool"])
def test_timm_parity_32px(kw):
    t = _timm_vit(**kw)
    m = ViT.from_timm(t).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), t(x), atol=TOL, rtol=0)
        torch.testing.assert_close(m.forward_features(x), t.forward_features(x), atol=TOL, rtol=0)


def test_timm_parity_224px_base_shape():
    """vit_base_patch16_224's width, heads and patch at 224 px (depth cut to 2 for time)."""
    t = _perturb(timm.create_model("vit_base_patch16_224", pretrained=False, depth=2))
    m = ViT.from_timm(t).eval()
    ours = create_model("vit_base_patch16_224", depth=2)
    assert ours.config == m.config  # the preset has timm's shape
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), t(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("size", [32, 224])
def test_torchvision_parity(size):
    patch, dim = (4, 64) if size == 32 else (16, 768)
    tv = _perturb(torchvision.models.VisionTransformer(image_size=size, patch_size=patch, num_layers=2,
                                                       num_heads=4 if size == 32 else 12, hidden_dim=dim,
                                                       mlp_dim=4 * dim, num_classes=10))
    m = ViT.from_torchvision(tv).eval()
    x = torch.randn(2 if size == 32 else 1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv(x), atol=TOL, rtol=0)


def test_vit_b_16_preset_matches_torchvision_shape():
    from mmgen.models.convert import vit_config_from_torchvision
    tv = torchvision.models.vit_b_16()  # random init, no download
    cfg = ViTConfig(**vit_config_from_torchvision(tv))
    preset = create_model("vit_base_patch16_224", depth=1).config
    assert cfg == ViTConfig(**{**preset.__dict__, "depth": 12})


def test_dynamic_img_size_matches_timm():
    t = _timm_vit(dynamic_img_size=True, reg_tokens=1)
    m = ViT.from_timm(t).eval()
    x = torch.randn(2, 3, 48, 40)  # 12 x 10 patches: the 8 x 8 table is interpolated
    with torch.no_grad():
        torch.testing.assert_close(m(x), t(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("fmt", ["NCHW", "NLC"])
def test_forward_intermediates_match_timm(fmt):
    t = _timm_vit(depth=3, reg_tokens=2)
    m = ViT.from_timm(t).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for idx in (None, 2, [0, -1]):
            final, feats = m.forward_intermediates(x, indices=idx, output_fmt=fmt, norm=True)
            tf, tfeats = t.forward_intermediates(x, indices=idx, output_fmt=fmt, norm=True)
            torch.testing.assert_close(final, tf, atol=TOL, rtol=0)
            assert len(feats) == len(tfeats)
            for a, b in zip(feats, tfeats):
                torch.testing.assert_close(a, b, atol=TOL, rtol=0)
        pairs = m.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True)
        (fmap, prefix), = pairs
        assert fmap.shape[1:] == ((64, 8, 8) if fmt == "NCHW" else (64, 8, 8))
        assert prefix.shape == (2, 3, 64)
        # stop_early gives the same features
        early = m.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], m.forward_intermediates(x, indices=[0], intermediates_only=True)[0])


def test_features_head_and_reset_classifier(tmp_path):
    m = create_model("vit_tiny_patch4_32").eval()
    x = torch.randn(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 1 + 64, m.num_features)
    pooled = m.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, m.num_features)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    m.reset_classifier(0)
    torch.testing.assert_close(m(x), pooled)
    m.reset_classifier(5, global_pool="avg")
    assert m(x).shape == (2, 5)
    m.save_pretrained(tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(x), m(x))
    # the CLIP helper's usage
    enc = create_model("vit_tiny_patch4_32", num_classes=0)
    assert enc(x).shape == (2, enc.num_features)


@pytest.mark.parametrize("pos", ["learned", "sincos", "rope", "none"])
def test_positions_and_dynamic_size(pos):
    m = create_model("vit_tiny", pos=pos, dynamic_img_size=True, reg_tokens=2).eval()
    for hw in ((32, 32), (24, 40)):
        out = m(torch.randn(2, 3, *hw))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    # without positions a mean-pooled ViT ignores patch order; with positions it must not
    m = create_model("vit_tiny", pos=pos, class_token=False, global_pool="avg").eval()
    x = torch.randn(1, 3, 32, 32)
    perm = torch.randperm(64)
    with torch.no_grad():
        tok = m.patch_embed(x)[0]
        shuffled = torch.nn.functional.fold(  # rebuild the image from permuted 4x4 patches
            torch.nn.functional.unfold(x, 4, stride=4)[:, :, perm], (32, 32), 4, stride=4)
        assert torch.allclose(m.patch_embed(shuffled)[0], tok[:, perm], atol=1e-5)
        same = torch.allclose(m(x), m(shuffled), atol=1e-5)
    assert same == (pos == "none")


def test_rope_relative():
    """2D RoPE attention scores depend only on the offset between patches."""
    m = create_model("vit_tiny", pos="rope", class_token=False, global_pool="avg", dynamic_img_size=True)
    rope = m.encoder.rope
    from mmgen.layers import apply_rope
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    def score(pq, pk):
        cq, sq = rope(torch.tensor([pq]))
        ck, sk = rope(torch.tensor([pk]))
        return (apply_rope(q, cq, sq, 2) * apply_rope(k, ck, sk, 2)).sum()
    torch.testing.assert_close(score((1, 2), (3, 5)), score((4, 0), (6, 3)))
    assert not torch.allclose(score((1, 2), (3, 5)), score((1, 2), (5, 3)))


def test_sdpa_matches_math_and_drop_path_eval():
    a = create_model("vit_tiny", layer_scale=0.5, drop_path=0.2).eval()
    b = create_model("vit_tiny", layer_scale=0.5, drop_path=0.2, attn_impl="math").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)
    a.train()
    torch.manual_seed(1)
    y1 = a(x)
    torch.manual_seed(2)
    y2 = a(x)
    assert not torch.allclose(y1, y2)  # drop path is active in training


def test_overfit_one_batch():
    torch.manual_seed(0)
    m = create_model("vit_tiny", label_smoothing=0.1, embed_dim=64, depth=2)
    batch = m.example_batch(6)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = m.loss(batch)[0].item()
    for _ in range(25):
        loss, logs = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["acc"] == 1.0 and loss.item() < first / 2


def test_bad_input_errors():
    m = create_model("vit_tiny")
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="smaller than one patch"):
        m(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        m(torch.randn(1, 3, 36, 36))
    with pytest.raises(ValueError, match="not divisible by the patch"):
        create_model("vit_tiny", dynamic_img_size=True)(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match="class_token"):
        ViTConfig(class_token=False, global_pool="token")
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ViTConfig(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="no classifier head"):
        create_model("vit_tiny", num_classes=0).loss({"image": torch.randn(1, 3, 32, 32), "label": [0]})
    with pytest.raises(ValueError, match="augment must be one of"):
        ViTConfig(augment="mixup")
    with pytest.raises(ValueError, match="attention pooling"):
        convert_timm_vit({"attn_pool.latent": torch.zeros(1)})


def test_config_from_timm_roundtrip():
    t = _timm_vit(global_pool="avg", reg_tokens=3, dynamic_img_size=True)
    cfg = ViTConfig(**vit_config_from_timm(t))
    assert cfg.global_pool == "avg" and cfg.reg_tokens == 3 and cfg.dynamic_img_size and cfg.use_fc_norm


def test_augment_crop_flip():
    from mmgen.models._classify import augment_images
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.testing.assert_close(augment_images(x, "none"), x)
    g = torch.Generator().manual_seed(0)
    y = augment_images(x, "crop_flip", pad=2, generator=g)
    assert y.shape == x.shape
    flipped = augment_images(x, "flip", generator=torch.Generator().manual_seed(3))
    for i in range(2):  # each image is either itself or its mirror
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    shifted = augment_images(x, "crop", pad=1, generator=torch.Generator().manual_seed(1))
    # the centre 6x6 of every image appears, translated by at most one pixel
    for i in range(2):
        assert any(torch.equal(shifted[i, :, 1 + a:7 + a, 1 + b:7 + b], x[i, :, 1:7, 1:7])
                   for a in (-1, 0, 1) for b in (-1, 0, 1))
    # training mode augments, evaluation does not
    m = create_model("vit_tiny", augment="crop_flip").eval()
    batch = m.example_batch(2)
    assert m.loss(batch)[0].item() == m.loss(batch)[0].item()
