"""Strict shapes fidelity against training time: score checkpoints saved along one run
(mmgen.metrics.shapes_fidelity, one sample per prompt) and draw a PNG of all-correct and
extra-object shares per prompt group against training minutes.

    python scripts/fidelity_curve.py runs/dalle_shapes_16x16_snaps/* --metrics runs/dalle_shapes_16x16/metrics.jsonl \
        --n 200 --out docs/img/dalle_shapes_16x16_curve.png

Each checkpoint directory is named by its training step (e.g. .../2400); the run's
metrics.jsonl maps steps to elapsed minutes, or, with --steps-per-s R (the recipe's rate on a
quiet machine), minutes are step / R / 60, which holds when the CPU was shared or the run
was resumed. A run started from another's weights (train.init_from) is drawn after them:
--offset-minutes M adds the minutes those weights had trained, and --start CKPT scores that
checkpoint as the first point, at M. Prints one JSON line per (checkpoint, group); with --log FILE they are also
appended there, and rows already in FILE (same checkpoint, group, prompts and guidance) are
reused, so the curve can be measured while the run trains and redrawn at the end.
--colour-stage CKPT scores each checkpoint as the layout model of two-stage sampling (a
layout DALL-E, docs/dalle.md) under the factorised DALL-E CKPT that draws the colours.
--baseline LOG draws another run's all-correct rows (such a --log file, same prompts) beside
this one's, to compare two runs on training minutes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mmgen.commands._args import OneLineParser, finite_float, positive_int


def main(argv=None) -> int:
    from mmgen.metrics.plot import line_chart
    from mmgen.metrics.shapes_fidelity import GROUPS, fidelity, prompt_groups
    from mmgen.pipelines import load_pipeline
    from mmgen.schedulers import SCHEDULERS
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint directories named by their step")
    ap.add_argument("--metrics", default=None, help="the run's metrics.jsonl (step -> elapsed_s)")
    ap.add_argument("--steps-per-s", type=finite_float, default=None,
                    help="minutes = step / this / 60 (the recipe's quiet-machine rate) instead of --metrics")
    ap.add_argument("--n", type=positive_int, default=200, help="prompts per group")
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    ap.add_argument("--guidance", type=finite_float, default=None, help="guidance scale (default: the checkpoint's)")
    ap.add_argument("--top-k", type=positive_int, default=None, help="DALL-E: sample among the k likeliest tokens")
    ap.add_argument("--steps", type=positive_int, default=None, help="DDPM sampling steps (default: the checkpoint's)")
    ap.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="DDPM sampler (default: the checkpoint's)")
    ap.add_argument("--log", default=None, help="JSON lines file: rows found there are reused, new rows appended")
    ap.add_argument("--offset-minutes", type=finite_float, default=0.0,
                    help="training minutes of the weights the run started from (train.init_from)")
    ap.add_argument("--start", default=None, help="the checkpoint the run started from, drawn at --offset-minutes")
    ap.add_argument("--colour-stage", default=None, help="two-stage sampling: the checkpoints are layout models and "
                                                         "this factorised DALL-E draws the colours")
    ap.add_argument("--baseline", default=None, help="another run's --log file: its all-correct rows drawn beside")
    ap.add_argument("--label", default="", help="this run's name in the legend (with --baseline)")
    ap.add_argument("--baseline-label", default="baseline", help="the baseline's name in the legend")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args(argv)
    if (args.metrics is None) == (args.steps_per_s is None):
        ap.error("give one of --metrics (the run's metrics.jsonl) or --steps-per-s")
    if args.steps_per_s is not None and args.steps_per_s <= 0:
        ap.error(f"--steps-per-s must be > 0, got {args.steps_per_s}")
    if args.metrics is not None and not Path(args.metrics).is_file():
        ap.error(f"--metrics {args.metrics!r} is not a file: give the run's metrics.jsonl")
    if args.baseline is not None and not Path(args.baseline).is_file():  # refused before any scoring
        ap.error(f"--baseline {args.baseline!r} is not a file: give another run's --log file")
    elapsed = {}
    for line in Path(args.metrics).read_text().splitlines() if args.metrics else []:
        rec = json.loads(line)
        if "elapsed_s" in rec:
            elapsed[rec["step"]] = rec["elapsed_s"]
    sample_kwargs = {k: v for k, v in dict(guidance=args.guidance, top_k=args.top_k, steps=args.steps,
                                           scheduler=args.scheduler).items() if v is not None}
    groups = prompt_groups(args.n, args.groups)
    points: dict[str, list[tuple[float, float, float]]] = {g: [] for g in groups}
    recorded = dict(guidance=args.guidance, top_k=args.top_k, steps=args.steps, scheduler=args.scheduler,
                    **({"colour_stage": args.colour_stage} if args.colour_stage else {}))

    def row_key(row: dict) -> tuple:  # a logged row is reused for the same checkpoint, prompts and settings
        return (str(Path(row["checkpoint"]).resolve()), row["group"], row["n"], *(row.get(k) for k in recorded))

    done = {row_key(row): row for row in _rows(args.log)} if args.log and Path(args.log).is_file() else {}
    # the baseline's rows of the same prompts and sampling settings
    baseline = [r for r in _rows(args.baseline) if r["n"] == args.n and all(r.get(k) == v for k, v in recorded.items())
                ] if args.baseline else []
    for ckpt in sorted(args.checkpoints, key=lambda p: int(Path(p).name) if Path(p).name.isdigit() else -1):
        if not Path(ckpt).name.isdigit():
            ap.error(f"checkpoint directories must be named by their training step, got {ckpt!r}")
    if args.offset_minutes < 0:
        ap.error(f"--offset-minutes must be >= 0, got {args.offset_minutes}")
    start = [args.start] if args.start else []
    for ckpt in start + sorted(args.checkpoints, key=lambda p: int(Path(p).name)):
        step = 0 if ckpt in start else int(Path(ckpt).name)
        if args.steps_per_s is not None:
            minutes = step / args.steps_per_s / 60
        else:
            known = [s for s in elapsed if s <= step]
            minutes = elapsed[max(known)] / 60 if known and step else 0.0
        minutes += args.offset_minutes
        wanted = {g: row_key({"checkpoint": ckpt, "group": g, "n": args.n, **recorded}) for g in groups}
        todo = {g: c for g, c in groups.items() if wanted[g] not in done}
        rows = [done[wanted[g]] for g in groups if g not in todo]
        if todo:
            try:
                if args.colour_stage:  # this checkpoint draws the outlines, the colour stage paints them
                    import mmgen
                    pipe = load_pipeline(args.colour_stage)
                    pipe.model.attach(layout=mmgen.load_pretrained(ckpt))
                else:
                    pipe = load_pipeline(ckpt)
            except (ValueError, TypeError, FileNotFoundError) as e:
                ap.error(str(e))
            for row in fidelity(pipe, todo, candidates=(1,), **sample_kwargs):
                row = {"checkpoint": ckpt, "step": step, "minutes": round(minutes, 1), **recorded, **row}
                print(json.dumps(row), flush=True)
                if args.log:
                    with open(args.log, "a") as f:
                        f.write(json.dumps(row) + "\n")
                rows.append(row)
        for row in rows:
            points[row["group"]].append((minutes, 100 * row["correct"], 100 * row["extra"]))
    series = []
    name = f" ({args.label})" if args.label else ""
    for i, (group, pts) in enumerate(points.items()):
        series.append({"x": [p[0] for p in pts], "y": [p[1] for p in pts], "label": f"{group}: all correct{name}",
                       "colour": i})
        if args.baseline:  # two runs' all-correct lines; extra objects would crowd the panel
            base = sorted((r["minutes"], 100 * r["correct"]) for r in baseline if r["group"] == group)
            series.append({"x": [b[0] for b in base], "y": [b[1] for b in base], "colour": i + len(groups),
                           "label": f"{group}: all correct ({args.baseline_label})"})
        else:
            series.append({"x": [p[0] for p in pts], "y": [p[2] for p in pts], "label": f"{group}: extra objects",
                           "colour": i, "dash": True})
    setting = "".join(f", {k.replace('_', '-')} {v:g}" if isinstance(v, (int, float)) else f", {v}"
                      for k, v in sample_kwargs.items())
    line_chart(series, title="strict shapes fidelity, 1 sample per prompt" + setting,
               xlabel="training minutes" + (" (quiet machine)" if args.steps_per_s else ""),
               ylabel="% of images", ylim=(0, 100)).save(args.out)
    return 0


def _rows(path: str) -> list[dict]:
    """The rows of a --log file (JSON lines)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
