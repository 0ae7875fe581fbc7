"""Our TransformerBlock against timm's `Block` of the same size (ViT-S/16-like width on
CIFAR-sized token counts): forward and forward+backward, fp32 and bf16 autocast.

    python -m bench block                    # the block comparison
    python -m bench.bench_block --windows    # window attention: fused SDPA vs batched matmuls
                                             # per window size (sets CPU_MATMUL_MAX_TOKENS)
    python -m bench.bench_block --train-kernels  # bf16 training attention: SDPA vs float32 math
                                                 # per key count (sets CPU_HALF_TRAIN_MATH_MAX_TOKENS)
"""
from __future__ import annotations

import torch

from bench.timing import autocast, compare, print_table
from mmgen.layers import TransformerBlock, TransformerConfig


def _copy_timm_to_ours(timm_blk, ours) -> None:
    sd = timm_blk.state_dict()
    ours.load_state_dict({
        "norm1.weight": sd["norm1.weight"], "norm1.bias": sd["norm1.bias"],
        "attn.qkv.weight": sd["attn.qkv.weight"], "attn.qkv.bias": sd["attn.qkv.bias"],
        "attn.proj.weight": sd["attn.proj.weight"], "attn.proj.bias": sd["attn.proj.bias"],
        "norm2.weight": sd["norm2.weight"], "norm2.bias": sd["norm2.bias"],
        "mlp.fc1.weight": sd["mlp.fc1.weight"], "mlp.fc1.bias": sd["mlp.fc1.bias"],
        "mlp.fc2.weight": sd["mlp.fc2.weight"], "mlp.fc2.bias": sd["mlp.fc2.bias"],
    })


def main(dim: int = 384, heads: int = 6, tokens: int = 65, batch: int = 32) -> None:
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    theirs = Block(dim, heads, mlp_ratio=4.0, qkv_bias=True)
    ours = TransformerBlock(TransformerConfig(embed_dim=dim, num_heads=heads, norm_eps=1e-6))
    _copy_timm_to_ours(theirs, ours)
    x = torch.randn(batch, tokens, dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)  # same work, same result

    rows = []
    for dtype in ("fp32", "bf16"):
        for mode in ("fwd", "fwd+bwd"):
            def make_step(blk):
                xi = x.clone().requires_grad_(mode != "fwd")

                def step():
                    with torch.set_grad_enabled(mode != "fwd"), autocast(dtype):
                        y = blk(xi)
                    if mode != "fwd":
                        y.float().sum().backward()
                return step

            res = compare({"mmgen": make_step(ours), "timm": make_step(theirs)}, warmup=2, repeats=10)
            tok = batch * tokens
            rows.append([dtype, mode, res["mmgen"].rate(tok), res["timm"].rate(tok),
                         res["timm"].median_s / res["mmgen"].median_s])
    print_table(f"TransformerBlock vs timm Block (dim {dim}, {heads} heads, {batch}x{tokens} tokens)",
                ["dtype", "pass", "mmgen tok/s", "timm tok/s", "speed ratio (>1: mmgen faster)"], rows)


def windows(heads: int = 3, head_dim: int = 16, tokens: int = 16384, dtype=torch.bfloat16) -> None:
    """Inference of grouped (window) attention, projections included, on (batch, windows,
    N, C) input with a per-window float bias, as Swin runs it: the fused-SDPA path against
    the batched-matmul path of `Attention`, for window sides 3..8."""
    import importlib

    from mmgen.layers import Attention

    attention_module = importlib.import_module("mmgen.layers.attention")
    torch.manual_seed(0)
    attn = Attention(heads * head_dim, heads).eval()
    rows = []
    for side in range(3, 9):
        N = side * side
        G, B = 16, max(tokens // (16 * N), 1)
        x = torch.randn(B, G, N, heads * head_dim)
        bias = torch.randn(G, heads, N, N)

        def run(max_matmul_tokens):
            def step():
                attention_module.CPU_MATMUL_MAX_TOKENS[dtype] = max_matmul_tokens
                with torch.no_grad(), autocast("bf16" if dtype == torch.bfloat16 else "fp32"):
                    attn(x, bias=bias)
            return step

        saved = dict(attention_module.CPU_MATMUL_MAX_TOKENS)
        try:
            res = compare({"sdpa": run(0), "matmul": run(N)}, warmup=2, repeats=10)
        finally:
            attention_module.CPU_MATMUL_MAX_TOKENS.clear()
            attention_module.CPU_MATMUL_MAX_TOKENS.update(saved)
        rows.append([N, B * G * N, res["sdpa"].median_s * 1e3, res["matmul"].median_s * 1e3,
                     res["sdpa"].median_s / res["matmul"].median_s])
    print_table(f"window attention, {str(dtype)[6:]} inference ({heads} heads x {head_dim}, "
                f"{torch.get_num_threads()} threads)",
                ["tokens/window", "tokens", "SDPA ms", "matmul ms", "matmul speed-up"], rows)


def train_kernels(heads: int = 4, head_dims=(16, 32, 64), keys=(16, 41, 64, 100, 128, 144, 196, 256),
                  tokens: int = 8192) -> None:
    """One training step's attention (forward + backward) in bf16 on q, k, v of (B, heads, T,
    D): SDPA's fused kernel against the float32 reference (attention_math), per key count T and
    head dim D, at about `tokens` query tokens per call. Sets CPU_HALF_TRAIN_MATH_MAX_TOKENS."""
    import torch.nn.functional as F

    from mmgen.layers.attention import attention_math
    torch.manual_seed(0)
    rows = []
    for D in head_dims:
        for T in keys:
            B = max(1, tokens // T // heads)
            q, k, v = (torch.randn(B, heads, T, D, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            grad = torch.randn(B, heads, T, D, dtype=torch.bfloat16)
            res = compare({"sdpa": lambda: F.scaled_dot_product_attention(q, k, v).backward(grad),
                           "math": lambda: attention_math(q, k, v).backward(grad)}, warmup=1, repeats=8)
            rows.append([D, T, B, res["sdpa"].median_s * 1e3, res["math"].median_s * 1e3,
                         res["sdpa"].median_s / res["math"].median_s])
    print_table(f"attention forward + backward in bf16: SDPA vs the float32 reference ({heads} heads, "
                f"{torch.get_num_threads()} threads)",
                ["head dim", "keys", "batch", "SDPA ms", "float32 math ms", "math speed-up"], rows)


if __name__ == "__main__":
    import sys

    if "--windows" in sys.argv:
        for dt in (torch.float32, torch.bfloat16):
            windows(dtype=dt)
    elif "--train-kernels" in sys.argv:
        train_kernels()
    else:
        main()
