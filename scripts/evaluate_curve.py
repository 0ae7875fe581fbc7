"""Quality against training minutes from `mmgen evaluate` results: one results.json per
checkpoint kept along a run (train.keep_every writes them to <run>/steps/<step>), drawn as a
PNG with one line per (metric, guidance scale).

    for s in 1000 2000 3000 4000; do
        mmgen evaluate --model runs/ddpm_animal_mnist/steps/$s --encoder runs/vit_conv_animal_mnist \\
            --dataset animal_mnist --n 200 --guidance 1 3 --steps 25 --out runs/eval_ddpm_animal_mnist/$s
    done
    python scripts/evaluate_curve.py runs/eval_ddpm_animal_mnist/* --rate 0:1.73 4000:2.82 \\
        --metric class_agreement --percent --out docs/img/ddpm_animal_mnist_curve.png

Each evaluation directory is named by the training step of the checkpoint it scored. Minutes
come from the run's measured rates: `--rate STEP:STEPS_PER_S ...` says from which step on the
run went at which rate (a run continued on more threads has two), so the minutes hold when
the run was paused or shared the machine. Prints one line per point.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mmgen.commands._args import OneLineParser


def main(argv=None) -> int:
    from mmgen.metrics.plot import line_chart
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("evaluations", nargs="+", help="`mmgen evaluate --out` directories named by their step")
    ap.add_argument("--rate", nargs="+", required=True, metavar="STEP:STEPS_PER_S",
                    help="from training step STEP on, the run made STEPS_PER_S steps per second")
    ap.add_argument("--metric", nargs="+", default=["fd_ours"], help="results.json keys to draw (e.g. fd_ours "
                                                                      "class_agreement clip_score)")
    ap.add_argument("--percent", nargs="*", default=None, metavar="METRIC",
                    help="draw these metrics' shares (0-1) as percentages (no name: every metric)")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args(argv)
    rates = []
    for r in args.rate:
        try:
            step, per_s = r.split(":")
            rates.append((int(step), float(per_s)))
        except ValueError:
            ap.error(f"--rate takes STEP:STEPS_PER_S, e.g. 0:1.73, got {r!r}")
    rates.sort()
    if rates[0][0] != 0 or min(v for _, v in rates) <= 0:
        ap.error(f"--rate must start at step 0 with rates > 0, got {args.rate}")

    def minutes_at(step: int) -> float:
        bounds = [s for s, _ in rates[1:]] + [float("inf")]
        return sum(max(0, min(step, hi) - lo) / v for (lo, v), hi in zip(rates, bounds)) / 60
    def in_percent(metric: str) -> bool:
        return args.percent is not None and (not args.percent or metric in args.percent)
    points: dict[str, list[tuple[float, float]]] = {}
    for d in args.evaluations:
        path = Path(d) / "results.json"
        if not Path(d).name.isdigit() or not path.is_file():
            ap.error(f"{d!r} must be an `mmgen evaluate --out` directory named by the training step it scored")
        minutes = minutes_at(int(Path(d).name))
        for run in json.loads(path.read_text())["runs"]:
            for m in args.metric:
                if m not in run:
                    ap.error(f"{path} has no {m!r}; it has {sorted(run)}")
                y = 100 * run[m] if in_percent(m) else run[m]
                label = f"{m}, guidance {run['guidance']:g}" + (f", best of {run['candidates']}"
                                                                  if run.get("candidates", 1) > 1 else "")
                points.setdefault(label, []).append((minutes, y))
                print(json.dumps({"evaluation": d, "minutes": round(minutes, 1), "guidance": run["guidance"],
                                  m: run[m]}))
    series = []
    for i, (label, pts) in enumerate(sorted(points.items())):
        pts.sort()
        series.append({"x": [p[0] for p in pts], "y": [p[1] for p in pts], "label": label, "colour": i})
    ylabel = ", ".join(m + (" (%)" if in_percent(m) else "") for m in args.metric)
    line_chart(series, title=", ".join(args.metric) + " against training time", xlabel="training minutes",
               ylabel=ylabel).save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
