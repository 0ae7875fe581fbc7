"""Our ViT and Swin against timm's with identical configs and identical weights (checked
equal first): training (forward + backward + AdamW step) and inference images/s, fp32 and
bf16 autocast, and MFU against the matmul peak measured in the same run.

    python -m bench vision                        # 32 px presets, CPU
    python -m bench.bench_vision --size 224       # the 224 px shapes (for a GPU)
"""
from __future__ import annotations

import argparse

import torch

from bench.timing import autocast, compare, matmul_peak_flops, print_table


def _forward_flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


def _pairs(size: int, device: str):
    """(name, ours, {peer name: peer}) with the same weights everywhere."""
    import timm

    from mmgen.models.swin import Swin
    from mmgen.models.vit import ViT

    if size == 32:
        tv = timm.models.VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
                                           num_classes=10)
        ts = timm.models.SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=48,
                                         depths=(2, 2, 2), num_heads=(3, 6, 12), num_classes=10, drop_path_rate=0.0)
        names = ("vit_small_patch4_32", "swin_tiny_patch2_window4_32")
    else:
        tv = timm.create_model("vit_base_patch16_224", pretrained=False)
        ts = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, drop_path_rate=0.0)
        names = ("vit_base_patch16_224", "swin_tiny_patch4_window7_224")
    ours_v, ours_s = ViT.from_timm(tv), Swin.from_timm(ts)
    ts_fused = timm.models.SwinTransformer(**_timm_swin_kwargs(ts))
    ts_fused.load_state_dict(ts.state_dict())
    for m in ts_fused.modules():  # timm's Swin keeps fused SDPA off by default ("experimental")
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    out = [(names[0], ours_v, {"timm": tv}), (names[1], ours_s, {"timm": ts, "timm fused_attn": ts_fused})]
    return [(n, o.to(device), {k: p.to(device) for k, p in peers.items()}) for n, o, peers in out]


def _timm_swin_kwargs(ts) -> dict:
    st = list(ts.layers)
    return dict(img_size=ts.patch_embed.img_size, patch_size=ts.patch_embed.patch_size[0],
                window_size=max(b.attn.window_size[0] for s in st for b in s.blocks),
                embed_dim=ts.embed_dim, depths=tuple(len(s.blocks) for s in st),
                num_heads=tuple(s.blocks[0].attn.num_heads for s in st),
                num_classes=ts.head.fc.out_features, drop_path_rate=0.0)


def main(size: int = 32, batch: int | None = None, repeats: int = 6, device: str | None = None) -> None:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = batch or (64 if size == 32 else (128 if device == "cuda" else 8))
    torch.manual_seed(0)
    peak = {dt: matmul_peak_flops(dt, n=2048 if device == "cuda" else 1024, device=device)
            for dt in ("fp32", "bf16")}
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for name, ours, peers in _pairs(size, device):
        for m in [ours, *peers.values()]:
            m.eval()
            with torch.no_grad():
                torch.testing.assert_close(m(x), ours(x), atol=1e-3, rtol=1e-3)  # same work, same result
        fwd_flops = _forward_flops(ours, x)
        models = {"mmgen": ours, **peers}
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
        for dtype in ("fp32", "bf16"):
            for mode in ("train", "infer"):
                def make_step(key):
                    m, opt = models[key], opts[key]

                    def step():
                        if mode == "infer":
                            m.eval()
                            with torch.no_grad(), autocast(dtype, device):
                                m(x)
                            return
                        m.train()
                        with autocast(dtype, device):
                            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    return step

                res = compare({k: make_step(k) for k in models}, warmup=2, repeats=repeats)
                flops = fwd_flops * (3 if mode == "train" else 1)
                ours_rate = res["mmgen"].rate(batch)
                row = [name, dtype, mode, ours_rate, 100 * flops / res["mmgen"].median_s / peak[dtype]]
                for k in peers:
                    row += [res[k].rate(batch), res[k].median_s / res["mmgen"].median_s]
                rows.append(row)
        for m in models.values():
            m.cpu()
    # one table per family (Swin has the extra fused-attention column)
    vit_rows = [r for r in rows if r[0].startswith("vit")]
    swin_rows = [r for r in rows if r[0].startswith("swin")]
    head = ["model", "dtype", "pass", "mmgen img/s", "mmgen MFU %"]
    print(f"\nmatmul peak ({device}): fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s; "
          f"batch {batch}, {size} px; train = fwd + bwd + AdamW step")
    print_table("ViT vs timm", head + ["timm img/s", "ratio (>1: mmgen faster)"], vit_rows)
    print_table("Swin vs timm", head + ["timm img/s", "ratio", "timm fused_attn img/s", "ratio"], swin_rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, choices=(32, 224))
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    main(a.size, a.batch, a.repeats, a.device)
