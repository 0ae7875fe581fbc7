"""Our TransformerBlock against timm's `Block` of the same size (ViT-S/16-like width on
CIFAR-sized token counts): forward and forward+backward, fp32 and bf16 autocast.

    python -m bench block                    # the block comparison
    python -m bench.bench_block --windows    # window attention: fused SDPA vs batched matmuls
                                             # per window size (sets CPU_MATMUL_MAX_TOKENS)
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
    ours = TransformerBlock(TransformerConfig(dim=dim, num_heads=heads, norm_eps=1e-6))
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
    """Inference of the attention core alone on (batch, windows, heads, N, D) views with
    a per-window float bias, as Swin runs it: SDPA (groups folded into heads) against
    `attention_matmul`, for window sides 3..8."""
    import torch.nn.functional as F

    from mmgen.layers.attention import attention_matmul

    torch.manual_seed(0)
    rows = []
    for side in range(3, 9):
        N = side * side
        G, B = 16, max(tokens // (16 * N), 1)
        qkv = torch.randn(B, G, N, 3, heads, head_dim, dtype=dtype).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, G, H, N, D) strided views, as the qkv projection gives them
        bias = torch.randn(G, heads, N, N)

        def sdpa():
            fold = [t.reshape(B, G * heads, N, head_dim) for t in (q, k, v)]
            F.scaled_dot_product_attention(*fold, attn_mask=bias.to(q.dtype).reshape(1, G * heads, N, N))

        def matmul():
            attention_matmul(q, k, v, bias)

        with torch.no_grad():
            res = compare({"sdpa": sdpa, "matmul": matmul}, warmup=2, repeats=10)
        rows.append([N, B * G * N, res["sdpa"].median_s * 1e3, res["matmul"].median_s * 1e3,
                     res["sdpa"].median_s / res["matmul"].median_s])
    print_table(f"window attention, {str(dtype)[6:]} inference ({heads} heads x {head_dim}, {torch.get_num_threads()} threads)",
                ["tokens/window", "tokens", "SDPA ms", "matmul ms", "matmul speed-up"], rows)


if __name__ == "__main__":
    import sys

    if "--windows" in sys.argv:
        for dt in (torch.float32, torch.bfloat16):
            windows(dtype=dt)
    else:
        main()
