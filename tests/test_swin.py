"""Swin: parity with timm and torchvision on random weights, windows / shifts / padding,
grouped attention, the timm API, errors."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from mmgen import create_model, load_pretrained
from mmgen.layers import Attention
from mmgen.models.convert import convert_timm_swin, swin_config_from_timm
from mmgen.models.swin import MASK_VALUE, PermuteTokens, Swin, SwinConfig, window_mask
from mmgen.registry import preset_config

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TOL = 1e-4
SWIN32 = dict(img_size=32, patch_size=2, window_size=4, embed_dim=48, num_classes=10)


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _check(ours, theirs, x):
    with torch.no_grad():  # fused SDPA path
        torch.testing.assert_close(ours(x), theirs(x), atol=TOL, rtol=0)
    # with gradients on, the bias takes the differentiable matmul path: same numbers
    torch.testing.assert_close(ours(x), theirs(x).detach(), atol=TOL, rtol=0)


@pytest.mark.parametrize("stages", [3, 4], ids=["3stages", "4stages_clamped_window"])
def test_timm_parity_32px(stages):
    depths, heads = (2,) * stages, (3, 6, 12, 24)[:stages]
    t = _perturb(timm.models.SwinTransformer(**SWIN32, depths=depths, num_heads=heads))
    m = Swin.from_timm(t).eval()
    _check(m, t, torch.randn(3, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(m.forward_features(x := torch.randn(2, 3, 32, 32)), t.forward_features(x),
                                   atol=TOL, rtol=0)


def test_timm_parity_224px_window7():
    """swin_tiny_patch4_window7_224's patch, window and 4 stages at 224 px (56/28/14/7 grids,
    shifted windows in stages 0-2); widths cut for time."""
    t = _perturb(timm.models.SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=24,
                                             depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), num_classes=10))
    m = Swin.from_timm(t).eval()
    _check(m, t, torch.randn(1, 3, 224, 224))


def test_presets_have_the_peer_shapes():
    t = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, device="meta")
    ours = preset_config("swin_tiny_patch4_window7_224")
    assert SwinConfig(**swin_config_from_timm(t)) == SwinConfig(**{**ours.__dict__, "drop_path": 0.0})


def test_torchvision_parity_32px():
    tv = _perturb(torchvision.models.SwinTransformer(patch_size=[2, 2], embed_dim=48, depths=[2, 2, 2],
                                                     num_heads=[3, 6, 12], window_size=[4, 4], num_classes=10))
    m = Swin.from_torchvision(tv, img_size=32).eval()
    _check(m, tv, torch.randn(2, 3, 32, 32))


def test_torchvision_parity_224px_swin_t_layout():
    tv = _perturb(torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2, 2],
                                                     num_heads=[1, 2, 4, 8], window_size=[7, 7], num_classes=10))
    m = Swin.from_torchvision(tv, img_size=224).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x := torch.randn(1, 3, 224, 224)), tv(x), atol=TOL, rtol=0)


def test_dynamic_size_matches_timm_when_windows_divide():
    t = _perturb(timm.models.SwinTransformer(**SWIN32, depths=(2, 2, 2), num_heads=(3, 6, 12),
                                             dynamic_img_size=True))
    m = Swin.from_timm(t).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)  # 32/16/8 grids: more windows, shifts everywhere but the last stage
        torch.testing.assert_close(m(x), t(x), atol=TOL, rtol=0)
        final, feats = m.forward_intermediates(x, norm=True)
        tfinal, tfeats = t.forward_intermediates(x, norm=True)
        torch.testing.assert_close(final, tfinal, atol=TOL, rtol=0)
        for a, b in zip(feats, tfeats):
            torch.testing.assert_close(a, b, atol=TOL, rtol=0)
        assert [f.shape[1:] for f in feats] == [(48, 32, 32), (96, 16, 16), (192, 8, 8)]
    # one cached mask per resolution seen
    blk = m.stages[0].blocks[1]
    assert {k[:2] for k in blk._masks} == {(64 // 2, 64 // 2)}


def blocks_one_by_one(blocks, x: torch.Tensor) -> torch.Tensor:
    """The textbook Swin stage, block by block, on a (B, H, W, C) map: pad, roll by -shift,
    cut into windows, the block, windows back into the map, roll back, crop."""
    B, H, W, C = x.shape
    for blk in blocks:
        w = blk.window
        Hp, Wp = -(-H // w) * w, -(-W // w) * w
        shift = blk.windows(H, W, x.device)[0]
        y = torch.roll(F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H)), (-shift[0], -shift[1]), (1, 2))
        y = rearrange(y, "b (nh wh) (nw ww) c -> b (nh nw) (wh ww) c", wh=w, ww=w)  # (B, nW, N, C)
        y = rearrange(blk(y, H, W), "b (nh nw) (wh ww) c -> b (nh wh) (nw ww) c", nh=Hp // w, wh=w)
        x = torch.roll(y, shift, (1, 2))[:, :H, :W]
    return x


def test_padded_windows_ignore_padding():
    """A 6x6 map in 4x4 windows: padded keys are masked, so each (ragged) window equals plain
    attention over its real tokens with the matching rows/cols of the relative bias."""
    m = create_model("swin_tiny", dynamic_img_size=True, depths=(1, 2, 2)).eval()
    stage = m.stages[0]  # one unshifted block, window 4
    blk = stage.blocks[0]
    x = torch.randn(2, 6, 6, 48)
    with torch.no_grad():
        out = stage(x)
        bias = blk.rel_pos_bias()
        ref = torch.empty_like(x)
        for ys in (range(0, 4), range(4, 6)):
            for xs in (range(0, 4), range(4, 6)):
                idx = torch.tensor([y * 4 + xx for y in range(len(ys)) for xx in range(len(xs))])
                tok = x[:, ys.start:ys.stop, xs.start:xs.stop].reshape(2, 1, -1, 48)
                y = super(type(blk), blk).forward(tok, bias=bias[:, idx][:, :, idx])
                ref[:, ys.start:ys.stop, xs.start:xs.stop] = y.reshape(2, len(ys), len(xs), 48)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # a whole model runs at sizes the windows do not divide
    assert m(torch.randn(1, 3, 40, 24)).shape == (1, 10)


def test_window_mask_shapes_and_shift():
    assert window_mask(8, 8, 4, (0, 0)) is None
    mask = window_mask(8, 8, 4, (2, 2))
    assert mask.shape == (4, 1, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    assert (mask[3] != 0).any()  # the wrapped corner window mixes regions
    padded = window_mask(6, 6, 4, (0, 0))
    assert padded.shape == (4, 1, 16, 16) and (padded[0] == 0).all() and (padded[3] != 0).any()


def test_masked_window_pairs_get_exactly_zero_weight():
    """exp(MASK_VALUE + s) must underflow to 0, not to a float32 denormal (timm's -100 gives
    4e-44, and denormal arithmetic made the softmax over shifted windows 6.5x slower)."""
    torch.manual_seed(0)
    blk = create_model("swin_tiny_patch2_window4_32").stages[0].blocks[1]
    with torch.no_grad():
        blk.relative_position_bias_table.normal_(0, 5)  # large learned biases, too
        bias = blk.window_bias(16, 16, "cpu")  # (nW, heads, N, N)
        scores = torch.randn(2, *bias.shape) * 10 + bias
        p = scores.softmax(-1)
    masked = (bias < MASK_VALUE / 2).expand_as(p)
    assert masked.any() and (p[masked] == 0).all()
    assert (p[~masked] >= torch.finfo(torch.float32).tiny).all()  # the rest: normal floats, no denormal


def test_grouped_attention_equals_per_group():
    torch.manual_seed(0)
    a = Attention(32, 4)
    x = torch.randn(2, 5, 7, 32)
    bias = torch.randn(4, 7, 7, requires_grad=True)
    mask = torch.randn(5, 1, 7, 7)
    ref = torch.stack([torch.stack([a(x[b, g][None], bias=(bias + mask[g])[None])[0] for g in range(5)])
                       for b in range(2)])
    y = a(x, bias=bias, mask=mask)  # differentiable-bias path
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    with torch.no_grad():  # fused SDPA path
        torch.testing.assert_close(a(x, bias=bias, mask=mask), ref, atol=1e-5, rtol=0)
    g_ref, = torch.autograd.grad(ref.square().sum(), bias)
    g, = torch.autograd.grad(a(x, bias=bias, mask=mask).square().sum(), bias)
    torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)



def test_grouped_attention_bf16_matmul_path_equals_sdpa(monkeypatch):
    """Small bf16 windows on CPU run as batched matmuls, larger ones (or any, with the limit
    at 0) through SDPA: both match the float32 result to bf16 precision, with an additive
    bias or a bool mask."""
    import importlib

    A = importlib.import_module("mmgen.layers.attention")  # the module (the package re-exports a function of that name)
    torch.manual_seed(0)
    a = Attention(32, 4)
    x = torch.randn(2, 5, 9, 32)
    bias = torch.randn(5, 4, 9, 9)
    keep = torch.rand(5, 1, 9, 9) > 0.3
    keep[..., 0] = True  # every query keeps a key
    for kw in (dict(bias=bias), dict(mask=keep), dict(bias=bias, mask=keep)):
        with torch.no_grad():
            ref = a(x, **kw)  # float32: SDPA
            outs = []
            for limit in (9, 0):  # matmul path, then SDPA
                monkeypatch.setitem(A.CPU_MATMUL_MAX_TOKENS, torch.bfloat16, limit)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    outs.append(a(x, **kw).float())
        for out in outs:
            torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)


def test_timm_api_and_reset_classifier(tmp_path):
    m = create_model("swin_tiny_patch2_window4_32").eval()
    x = torch.randn(2, 3, 32, 32)
    f = m.forward_features(x)
    assert f.shape == (2, 4, 4, m.num_features) and m.num_features == 192
    pooled = m.forward_head(f, pre_logits=True)
    assert pooled.shape == (2, 192)
    feats = m.forward_intermediates(x, indices=2, output_fmt="NHWC", intermediates_only=True)
    assert [tuple(t.shape) for t in feats] == [(2, 8, 8, 96), (2, 4, 4, 192)]
    early = m.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    assert early[0].shape == (2, 48, 16, 16)
    m.reset_classifier(0)
    torch.testing.assert_close(m(x), pooled)
    m.reset_classifier(3)
    m.save_pretrained(tmp_path / "s")
    torch.testing.assert_close(load_pretrained(tmp_path / "s")(x), m(x))


def test_overfit_one_batch_and_drop_path():
    torch.manual_seed(0)
    m = create_model("swin_tiny", drop_path=0.1, label_smoothing=0.1, embed_dim=24, depths=(2, 2),
                     num_heads=(2, 4))
    batch = m.example_batch(6)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = m.loss(batch)[0].item()
    for _ in range(25):
        loss, logs = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["acc"] == 1.0 and loss.item() < first / 2
    m.eval()
    x = batch["image"]
    torch.testing.assert_close(m(x), m(x))


def test_bad_input_errors():
    m = create_model("swin_tiny")
    with pytest.raises(ValueError, match="expected 3 input channels, got 4"):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="smaller than one patch"):
        m(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        m(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="not divisible by the patch"):
        create_model("swin_tiny", dynamic_img_size=True)(torch.randn(1, 3, 33, 33))
    with pytest.raises(ValueError, match="one entry per stage"):
        SwinConfig(depths=(2, 2), num_heads=(3,))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SwinConfig(embed_dim=50, num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match="absolute position"):
        convert_timm_swin({"absolute_pos_embed": torch.zeros(1)})


def test_stage_gather_plan_equals_block_by_block():
    """A stage moves tokens between the blocks' window layouts with one gather each; that must
    equal the textbook stage (roll, partition, block, reverse, roll back per block), also at
    sizes the window does not divide, with the same gradients (each gather's backward is the
    inverse gather)."""
    m = create_model("swin_tiny", dynamic_img_size=True, depths=(4, 2, 2)).eval()
    stage = m.stages[0]
    for hw in ((16, 16), (10, 14)):
        x = torch.randn(2, *hw, 48)
        with torch.no_grad():
            torch.testing.assert_close(stage(x), blocks_one_by_one(stage.blocks, x), atol=1e-5, rtol=0)
        xg = x.clone().requires_grad_()
        g = torch.randn(2, *hw, 48)
        grads = torch.autograd.grad((stage(xg) * g).sum(), [xg, *stage.parameters()])
        xr = x.clone().requires_grad_()
        ref_grads = torch.autograd.grad((blocks_one_by_one(stage.blocks, xr) * g).sum(), [xr, *stage.parameters()])
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_permute_tokens_gradcheck():
    perm = torch.randperm(6)
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: PermuteTokens.apply(t, perm, torch.argsort(perm)), (x,))
