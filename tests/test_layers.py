"""Properties of the shared blocks: each variant against a reference or an invariant."""
import ast
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmgen.layers as L
from mmgen.layers.attention import attention_math


def _qkv(B=2, H=4, Hkv=4, T=7, S=7, D=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, H, T, D, generator=g, dtype=dtype), torch.randn(B, Hkv, S, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, S, D, generator=g, dtype=dtype))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_sdpa_equals_reference(causal, kv_heads):
    q, k, v = _qkv(Hkv=kv_heads)
    fast = L.attention(q, k, v, is_causal=causal, impl="sdpa")
    ref = L.attention(q, k, v, is_causal=causal, impl="math")
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_sdpa_equals_reference_with_mask_and_bias():
    q, k, v = _qkv(T=5, S=9)
    mask = L.make_attn_mask(5, 9, causal=True, window=3, q_offset=4,
                            key_padding=torch.tensor([[1] * 9, [0, 0] + [1] * 7]).bool())
    bias = torch.randn(4, 5, 9)
    m = L.attention.__globals__["merge_mask_and_bias"](mask, bias, q.dtype)
    torch.testing.assert_close(L.attention(q, k, v, m), attention_math(q, k, v, m), atol=1e-5, rtol=1e-5)


def _stack(**kw):
    base = dict(embed_dim=32, depth=2, num_heads=4, causal=True)
    base.update(kw)
    return L.Transformer(L.TransformerConfig(**base)).eval()


@pytest.mark.parametrize("variant", [
    {}, {"rope": "1d"}, {"num_kv_heads": 2, "rope": "1d"}, {"num_kv_heads": 1}, {"window": 3},
    {"norm": "rmsnorm", "mlp": "swiglu", "norm_place": "sandwich", "qk_norm": True},
])
def test_causal_output_ignores_future_tokens(variant):
    m = _stack(**variant)
    x = torch.randn(2, 10, 32)
    y = x.clone()
    y[:, 6:] = torch.randn(2, 4, 32)
    torch.testing.assert_close(m(x)[:, :6], m(y)[:, :6], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(m(x)[:, 6:], m(y)[:, 6:])


@pytest.mark.parametrize("variant", [
    {"rope": "1d", "num_kv_heads": 2}, {"num_kv_heads": 1}, {"window": 4, "rope": "1d"}, {"norm_place": "post"},
])
def test_kv_cache_incremental_decode_equals_full_forward(variant):
    m = _stack(**variant)
    x = torch.randn(2, 12, 32)
    full = m(x)
    cache = m.make_cache(2, 16)
    parts, start = [], 0
    for n in (5, 1, 1, 3, 2):  # a prefill, single steps, then chunks
        parts.append(m(x[:, start:start + n], cache=cache, start=start))
        start += n
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)


def test_kv_cache_with_left_padding_matches_unpadded_rows():
    m = _stack(rope="1d", num_kv_heads=2)
    x = torch.randn(1, 6, 32)
    ref = m(x)
    padded = torch.cat([torch.randn(1, 3, 32), x], 1)  # 3 pad tokens on the left
    keep = torch.tensor([[0, 0, 0] + [1] * 6]).bool()
    pos = (keep.long().cumsum(-1) - 1).clamp(min=0)  # positions restart at the first real token
    cache = m.make_cache(1, 9)
    out = m(padded, key_padding=keep, positions=pos, cache=cache, start=0)
    torch.testing.assert_close(out[:, 3:], ref, atol=1e-5, rtol=1e-4)


def test_cache_overflow_is_a_clear_error():
    m = _stack()
    cache = m.make_cache(1, 4)
    with pytest.raises(ValueError, match="max_len=4"):
        m(torch.randn(1, 5, 32), cache=cache)


def test_gqa_with_all_kv_heads_equals_mha():
    torch.manual_seed(0)
    mha = L.Attention(32, 4)
    gqa = L.Attention(32, 4, num_kv_heads=4)
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(mha(x), gqa(x))


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = L.Attention(32, 4, num_kv_heads=2, qkv_bias=False)
    mha = L.Attention(32, 4, qkv_bias=False)
    wq, wk, wv = gqa.qkv.weight.split([32, 16, 16])
    rep = lambda w: w.view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32)  # kv head j serves q heads 2j, 2j+1
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_torch_multihead_attention(causal):
    ours = L.Attention(32, 4)
    ref = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 6, 32)
    mask = torch.ones(6, 6).triu(1).bool() if causal else None  # torch: True = blocked
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=causal), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_torch_multihead_attention_with_padding():
    ours = L.Attention(32, 4, context_dim=32)
    ref = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x, ctx = torch.randn(2, 3, 32), torch.randn(2, 5, 32)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    expected, _ = ref(x, ctx, ctx, key_padding_mask=~keep, need_weights=False)
    torch.testing.assert_close(ours(x, ctx, mask=keep[:, None, None]), expected, atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    rope = L.RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([i]))
        ck, sk = rope(torch.tensor([j]))
        return (L.apply_rope(q, cq, sq) * L.apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(score(0, 5), score(20, 25), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_rope_2d_depends_only_on_relative_row_and_column():
    rope = L.RotaryEmbedding(16, dims=2)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(a, b):
        cq, sq = rope(torch.tensor([a]))
        ck, sk = rope(torch.tensor([b]))
        return (L.apply_rope(q, cq, sq, dims=2) * L.apply_rope(k, ck, sk, dims=2)).sum()

    torch.testing.assert_close(score((2, 3), (1, 1)), score((5, 7), (4, 5)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score((2, 3), (1, 1)), score((2, 3), (1, 2)))


def test_sliding_window_at_least_sequence_length_equals_full_causal():
    torch.manual_seed(0)
    full = _stack(rope="1d")
    windowed = _stack(rope="1d", window=10)
    windowed.load_state_dict(full.state_dict())
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(windowed(x), full(x), atol=1e-5, rtol=1e-5)
    short = _stack(rope="1d", window=3)
    short.load_state_dict(full.state_dict())
    assert not torch.allclose(short(x), full(x), atol=1e-4)


def test_sliding_window_mask_shape():
    mask = L.make_attn_mask(4, 4, causal=True, window=2)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]).bool()
    assert torch.equal(mask, expected)


def test_norms_match_references():
    x = torch.randn(3, 5, 16)
    ln, ref = L.LayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
        ref.load_state_dict(ln.state_dict())
    torch.testing.assert_close(ln(x), ref(x))
    rms, rref = L.RMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        rms.weight.normal_()
        rref.load_state_dict(rms.state_dict())
    torch.testing.assert_close(rms(x), rref(x))
    assert L.LayerNorm(16, bias=False).bias is None


def test_norms_compute_in_float32_and_cast_back():
    x = (torch.randn(4, 64) * 300).bfloat16()
    for norm in (L.LayerNorm(64), L.RMSNorm(64)):
        y = norm(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), norm(x.float()), atol=2e-2, rtol=1e-2)
    # bf16 LayerNorm on CPU runs the mixed-dtype kernel directly: it must still reduce in
    # float32 (a large mean would wreck a bf16 reduction) and give the upcast path's gradients
    ln = L.LayerNorm(64)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
    x = (torch.randn(4, 64) * 3 + 50).bfloat16().requires_grad_()
    xf = x.detach().float().requires_grad_()
    y, yf = ln(x), F.layer_norm(xf, (64,), ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(y.float(), yf.bfloat16().float(), atol=1e-3, rtol=1 / 128)  # <= 2 bf16 ulps
    g = torch.randn(4, 64)
    gx, gw = torch.autograd.grad(y.float().mul(g).sum(), (x, ln.weight))
    gxf, gwf = torch.autograd.grad(yf.mul(g).sum(), (xf, ln.weight))
    torch.testing.assert_close(gx.float(), gxf, atol=0.1, rtol=2e-2)
    torch.testing.assert_close(gw, gwf, atol=0.1, rtol=2e-2)


def test_mlp_variants_and_llama_rounding():
    assert L.mlp_hidden_dim("swiglu", 4096, 4.0, 256) == 11008  # LLaMA-7B
    assert L.mlp_hidden_dim("gelu", 64, 4.0) == 256
    x = torch.randn(2, 3, 16)
    for kind in ("gelu", "gelu_tanh", "relu2", "swiglu", "geglu"):
        assert L.make_mlp(kind, 16, 24)(x).shape == x.shape
    swiglu = L.GatedMlp(16, 24)
    gate, up = swiglu.fc1.weight.split(24)
    torch.testing.assert_close(swiglu(x), (F.silu(x @ gate.T) * (x @ up.T)) @ swiglu.fc2.weight.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("place", ["pre", "sandwich"])
def test_inference_in_place_paths_equal_autograd_paths_and_leave_inputs_alone(dtype, place):
    """Under no_grad the residual add, GELU and the matmul attention write into their own
    temporaries; the result must equal the recorded (autograd) path and no input may change."""
    from mmgen.layers.attention import attention_matmul

    torch.manual_seed(0)
    blk = L.TransformerBlock(L.TransformerConfig(embed_dim=32, num_heads=4, norm_place=place))
    x = torch.randn(2, 3, 5, 32, dtype=dtype)  # grouped: 3 windows of 5 tokens
    bias = torch.randn(3, 4, 5, 5)
    blk.to(dtype)
    x0, b0 = x.clone(), bias.clone()
    ref = blk(x, bias=bias)  # parameters require grad: the recorded path
    assert ref.requires_grad
    with torch.no_grad():
        out = blk(x, bias=bias)
    torch.testing.assert_close(out, ref.detach(), atol=0, rtol=0)
    assert torch.equal(x, x0) and torch.equal(bias, b0)
    q, k, v = (torch.randn(2, 3, 4, 5, 8, dtype=dtype) for _ in range(3))
    qkv0 = [t.clone() for t in (q, k, v)]
    ref = attention_matmul(q, k, v, bias.requires_grad_())
    with torch.no_grad():
        out = attention_matmul(q, k, v, bias)
    torch.testing.assert_close(out, ref.detach(), atol=0, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), qkv0))


def test_residual_add_promotes_like_the_plain_sum():
    """A float32 residual stream plus a bf16 branch (autocast) stays float32 in no_grad too."""
    from mmgen.layers.autograd import add_residual

    x, h = torch.randn(4, 8), torch.randn(4, 8).bfloat16()
    with torch.no_grad():
        out = add_residual(x, h)
        same = add_residual(x, x)  # a branch that returns its input is not overwritten
    assert out.dtype == torch.float32 and torch.equal(out, x + h)
    assert torch.equal(same, 2 * x) and not torch.equal(x, same)


def test_norm_placements_differ_and_run():
    x = torch.randn(2, 5, 32)
    outs = {}
    for place in ("pre", "post", "sandwich"):
        torch.manual_seed(0)
        m = _stack(norm_place=place, causal=False)
        outs[place] = m(x)
        assert outs[place].shape == x.shape
    assert not torch.allclose(outs["pre"], outs["post"])
    # post-norm: every block's output is normalised
    torch.testing.assert_close(outs["post"].mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


def test_adaln_zero_block_starts_as_identity_and_cross_attention_reads_context():
    cfg = L.TransformerConfig(embed_dim=32, depth=2, num_heads=4, adaln="adaln_zero", cond_dim=16, final_norm=False)
    m = L.Transformer(cfg)
    x, c = torch.randn(2, 5, 32), torch.randn(2, 16)
    torch.testing.assert_close(m(x, cond=c), x)
    cfg = L.TransformerConfig(embed_dim=32, depth=1, num_heads=4, cross_attn=True, context_dim=24)
    m = L.Transformer(cfg)
    ctx = torch.randn(2, 7, 24)
    assert not torch.allclose(m(x, context=ctx), m(x, context=ctx + 1))
    with pytest.raises(ValueError, match="context"):
        m(x)


def test_layer_scale_and_drop_path():
    m = _stack(layer_scale=1e-6, drop_path=0.5, causal=False, final_norm=False)
    x = torch.randn(4, 5, 32)
    torch.testing.assert_close(m.eval()(x), x, atol=1e-3, rtol=0)  # tiny layer scale ~ identity
    dp = L.DropPath(0.5).train()
    y = dp(torch.ones(1000, 3))
    assert set(y[:, 0].unique().tolist()) <= {0.0, 2.0} and 0.3 < (y[:, 0] == 0).float().mean() < 0.7


def test_positions():
    t = L.sincos_2d(4, 4, 32)
    assert t.shape == (16, 32)
    pos = L.LearnedPositions(8, 16)
    with pytest.raises(ValueError, match="max_len=8"):
        pos(torch.zeros(1, 9, 16))
    assert L.grid_positions(2, 3).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    emb = L.TimestepEmbedding(32)
    assert emb(torch.tensor([0, 500])).shape == (2, 32)


def test_gradcheck_custom_pieces():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    rms = L.RMSNorm(8).double()
    assert torch.autograd.gradcheck(lambda t: rms(t), (x,))
    ln = L.LayerNorm(8).double()
    assert torch.autograd.gradcheck(lambda t: ln(t), (x,))
    rope = L.RotaryEmbedding(8)
    cos, sin = rope(torch.arange(3))
    q = torch.randn(1, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: L.apply_rope(t, cos.double(), sin.double()), (q,))
    attn = L.Attention(8, 2, num_kv_heads=1, impl="math").double()
    assert torch.autograd.gradcheck(lambda t: attn(t, is_causal=True), (x,))
    mlp = L.GatedMlp(8, 8).double()
    assert torch.autograd.gradcheck(lambda t: mlp(t), (x,))


@pytest.mark.parametrize("kwargs, match", [
    (dict(embed_dim=30, num_heads=4), "divisible by num_heads"),
    (dict(embed_dim=32, num_heads=4, num_kv_heads=3), "multiple of num_kv_heads"),
    (dict(norm="batchnorm"), "norm must be one of"),
    (dict(adaln="adaln_zero"), "cond_dim"),
    (dict(mlp="tanh"), "mlp must be one of"),
])
def test_bad_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.TransformerConfig(**kwargs)


def test_bad_input_errors():
    m = _stack()
    with pytest.raises(ValueError, match=r"\(batch, seq, 32\)"):
        m(torch.randn(2, 5, 16))
    pe = L.PatchEmbed(32, 4, 3, 16)
    with pytest.raises(ValueError, match="3 input channels"):
        pe(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        L.PatchEmbed(30, 4, 3, 16)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        pe(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="smaller than one patch"):
        L.PatchEmbed(32, 4, 3, 16, dynamic_img_size=True)(torch.randn(1, 3, 2, 2))


def test_layers_never_import_models():
    root = pathlib.Path(L.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                assert "models" not in mod and not mod.startswith(".."), f"{path.name} imports {mod}"
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("mmgen") for a in node.names), path.name


def test_models_never_import_pipelines_or_train():
    """Imports run one way, layers <- models <- pipelines <- train / commands (lazy imports too)."""
    root = pathlib.Path(L.__file__).parent.parent / "models"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                assert not any(p in mod for p in ("pipelines", "train", "commands", "web")), f"{path.name} imports {mod}"


def test_blocks_trace_for_torch_compile_without_graph_breaks():
    """The inference fast paths (in-place adds, GELU, grouped attention) must not break a
    torch.compile graph: a data_ptr() check in the residual add once halved compiled decoding."""
    torch._dynamo.reset()
    blk = L.TransformerBlock(L.TransformerConfig(embed_dim=32, num_heads=4)).eval()
    x, grouped, bias = torch.randn(2, 5, 32), torch.randn(2, 3, 5, 32), torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        for args, kw in (((x,), {}), ((grouped,), {"bias": bias})):
            expl = torch._dynamo.explain(blk)(*args, **kw)
            assert expl.graph_break_count == 0, expl.break_reasons
    torch._dynamo.reset()


def test_choose_kernel_is_the_one_dispatch():
    from mmgen.layers.attention import choose_kernel
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    kw = dict(device=cpu, dtype=torch.bfloat16, tokens=16)
    assert choose_kernel("math", **kw, grouped=True) == "math"
    assert choose_kernel("sdpa", **kw) == "sdpa"  # ungrouped inference: fused, whatever the size
    assert choose_kernel("sdpa", **kw, grouped=True) == "matmul"  # tiny bf16 windows on CPU
    assert choose_kernel("sdpa", **{**kw, "tokens": 49}, grouped=True) == "sdpa"
    assert choose_kernel("sdpa", **{**kw, "dtype": torch.float32}, grouped=True) == "sdpa"
    assert choose_kernel("sdpa", **{**kw, "device": cuda}, grouped=True) == "sdpa"
    assert choose_kernel("sdpa", **kw, bias_grad=True) == "matmul"  # a learned bias keeps its gradient cheap
    assert choose_kernel("sdpa", **kw, bias_grad=True, is_causal=True) == "sdpa"
    # half-precision training on CPU over few keys: the float32 reference beats SDPA's backward
    assert choose_kernel("sdpa", **kw, grad=True) == "math"
    assert choose_kernel("sdpa", **kw, grad=True, is_causal=True) == "math"
    assert choose_kernel("sdpa", **{**kw, "tokens": 129}, grad=True) == "sdpa"
    assert choose_kernel("sdpa", **{**kw, "dtype": torch.float32}, grad=True) == "sdpa"
    assert choose_kernel("sdpa", **{**kw, "device": cuda}, grad=True) == "sdpa"


@pytest.mark.parametrize("cross", [False, True])
def test_half_precision_training_kernel_matches_sdpa(cross, monkeypatch):
    """Under bf16 autocast on CPU a training step's attention runs the float32 reference
    instead of SDPA (choose_kernel): outputs and gradients agree with the SDPA path, and are
    as close to a float32 run as SDPA's."""
    import importlib
    A = importlib.import_module("mmgen.layers.attention")  # (mmgen.layers.attention is also a function)
    torch.manual_seed(0)
    attn = L.Attention(32, 4, context_dim=24 if cross else None)
    x = torch.randn(3, 20, 32)
    ctx = torch.randn(3, 11, 24) if cross else None
    mask = None
    if cross:
        mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
        mask[1, ..., 7:] = False
    calls = []
    reference = A.attention_math
    monkeypatch.setattr(A, "attention_math", lambda *a, **k: (calls.append(1), reference(*a, **k))[1])

    def run(limit, bf16=True):
        monkeypatch.setattr(A, "CPU_HALF_TRAIN_MATH_MAX_TOKENS", limit)
        attn.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = attn(xi, ctx, mask=mask)
        out.float().square().sum().backward()
        return out.float(), xi.grad, attn.proj.weight.grad.clone()

    fast = run(128)
    assert calls, "a bf16 training step over 20 keys on CPU should use the float32 reference"
    calls.clear()
    sdpa, ref = run(0), run(0, bf16=False)
    assert not calls
    for a, b, r in zip(fast, sdpa, ref):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
        assert (a - r).abs().max() <= 1.5 * (b - r).abs().max() + 1e-3
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x, ctx, mask=mask)  # inference keeps SDPA
    assert not calls
