"""Test accuracy against training minutes for the image classifiers on animal-mnist (ResNet-18,
ViT, Swin), at equal quiet-machine time: one table and one PNG from the runs' logged evaluations.

    mmgen vision-curve                 # table + docs/img/vision_curve.png from runs/vision_curve
    mmgen vision-curve --launch        # first train the missing runs, one at a time
    mmgen vision-curve --exact         # final accuracies recomputed over all 1,000 test images

Minutes are quiet-machine minutes: a run's step s sits at s / (its quiet steps per second)
/ 60, where the quiet rate is ResNet-18's (recipes.vision.RESNET18_STEPS_PER_S) times the
recipe's training-throughput ratio to ResNet-18, measured interleaved in one process
(`python -m bench vision_train`). So the curve does not depend on how busy the machine was
while the runs trained. Intermediate points of a run come from its periodic evaluations (its
learning rate is still high there, so they sit below what a run with that budget would reach);
the end of each run is its budget's result.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_ROOT = "runs/vision_curve"
DEFAULT_PNG = "docs/img/vision_curve.png"
COLOURS = {"resnet": (60, 60, 60), "vit": (31, 119, 180), "swin": (214, 39, 40)}
# one colour per model (the recipe's key in recipes.vision.EQUAL_TIME_MODELS), its family's otherwise
MODEL_COLOURS = {"vit_cct": (31, 119, 180), "vit_conv": (23, 190, 207), "swin_conv": (214, 39, 40),
                 "swin_p4": (255, 127, 14)}


def curve_recipes() -> list[str]:
    from mmgen.train.recipes.vision import CURVE_RECIPES
    return list(CURVE_RECIPES)


def read_run(run_dir: Path) -> dict | None:
    """{recipe, family, label, steps, quiet_steps_per_s, points [(step, minutes, acc)], done, as_recipe}
    or None (not a run of the curve's recipes). as_recipe is False when the run changed the
    recipe's model or train settings (--set): such runs are left out unless asked for."""
    from mmgen.train.recipes import get_recipe
    from mmgen.train.recipes.vision import CURVE_RECIPES, RESNET18_STEPS_PER_S
    rc_path, m_path = run_dir / "run_config.json", run_dir / "metrics.jsonl"
    if not rc_path.exists() or not m_path.exists():
        return None
    rc = json.loads(rc_path.read_text())
    recipe = rc.get("recipe")
    if recipe not in CURVE_RECIPES:
        return None
    label, ratio = CURVE_RECIPES[recipe]
    r = get_recipe(recipe)
    same = rc.get("model_overrides", {}) == dict(r.model_overrides) and all(
        rc["train"].get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in r.train.items())
    rate = RESNET18_STEPS_PER_S * ratio
    points = {}
    for line in m_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val/acc" in rec:
            points[rec["step"]] = rec["val/acc"]
    steps = rc["train"]["steps"]
    pts = [(s, s / rate / 60.0, a) for s, a in sorted(points.items())]
    return {"recipe": recipe, "dir": str(run_dir), "family": next((f for f in COLOURS if recipe.startswith(f)), "other"), "label": label, "steps": steps,
            "quiet_steps_per_s": rate, "points": pts, "done": bool(pts) and pts[-1][0] >= steps, "as_recipe": same}


def exact_accuracy(run_dir: str) -> float:
    from mmgen import load_pretrained
    from mmgen.data import build_dataset
    from mmgen.metrics.classifier import evaluate_classifier
    return evaluate_classifier(load_pretrained(run_dir), build_dataset("animal_mnist", "test"))["acc"]


def launch(root: Path, recipes: list[str]) -> None:
    """Train each recipe into root/<recipe>, one at a time (resuming a run a signal stopped)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    for r in recipes:
        out = root / r
        run = read_run(out)
        if run is not None and run["done"]:
            continue
        cmd = ["nice", "-n", "5", sys.executable, "-m", "mmgen.train", "--recipe", r, "--out", str(out), "--resume"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def _font(size: int):
    from PIL import ImageFont
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default()


def plot(runs: list[dict], path: str, *, width: int = 960, height: int = 560) -> None:
    """Accuracy (%) against quiet-machine minutes (log scale), one line per run, PNG via Pillow."""
    import math

    from PIL import Image, ImageDraw
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(15), _font(13)
    L, R, T, B = 70, 300, 40, 60
    x0, x1 = math.log10(0.05), math.log10(15.0)
    accs = [a for r in runs for _, _, a in r["points"]]
    y0 = max(0.0, math.floor(min(accs + [0.5]) * 10) / 10) if accs else 0.0
    y1 = 1.0

    def X(m):
        return L + (math.log10(max(m, 0.05)) - x0) / (x1 - x0) * (width - L - R)

    def Y(a):
        return T + (y1 - a) / (y1 - y0) * (height - T - B)
    for m in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10):
        d.line([(X(m), T), (X(m), height - B)], fill=(225, 225, 225))
        d.text((X(m), height - B + 6), f"{m:g}", fill="black", font=fs, anchor="mt")
    a = y0
    while a <= y1 + 1e-9:
        d.line([(L, Y(a)), (width - R, Y(a))], fill=(225, 225, 225))
        d.text((L - 6, Y(a)), f"{100 * a:.0f}", fill="black", font=fs, anchor="rm")
        a += 0.1
    d.rectangle([L, T, width - R, height - B], outline="black")
    d.text(((L + width - R) / 2, height - 22), "training minutes (quiet 2-core CPU equivalent, log scale)",
           fill="black", font=f, anchor="mm")
    d.text((12, T - 24), "test accuracy (%) on animal-mnist", fill="black", font=f)
    ly = T + 10
    for r in runs:
        key = next((k for k in MODEL_COLOURS if r["recipe"].startswith(k + "_")), None)
        col = MODEL_COLOURS[key] if key else COLOURS.get(r["family"], (120, 120, 120))
        if r["recipe"].endswith("_1min"):  # the short runs in a lighter shade of their family's colour
            col = tuple(int(c + (255 - c) * 0.45) for c in col)
        pts = [(X(m), Y(acc)) for _, m, acc in r["points"]]
        dashed = not r["recipe"].endswith("_1min")
        if len(pts) > 1:
            d.line(pts, fill=col, width=3 if dashed else 2)
        for i, (px, py) in enumerate(pts):
            rad = 5 if i == len(pts) - 1 else 3
            shape = d.ellipse if dashed else d.rectangle
            shape([px - rad, py - rad, px + rad, py + rad], fill=col)
        d.line([(width - R + 12, ly), (width - R + 36, ly)], fill=col, width=3)
        end = f" {100 * r['points'][-1][2]:.1f}%" if r["points"] else ""
        budget = "1 min" if r["recipe"].endswith("_1min") else "10 min"
        part = "" if r["done"] else " (part)"
        d.text((width - R + 42, ly), f"{r['label']}, {budget}{part}{end}", fill="black", font=fs, anchor="lm")
        ly += 22
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def report(root: str | Path = DEFAULT_ROOT, png: str = DEFAULT_PNG, *, launch_runs: bool = False,
           recipes: list[str] | None = None, include_modified: bool = False, exact: bool = False) -> int:
    """The table (stdout) and the PNG of the runs under `root` (`mmgen vision-curve`); with
    launch_runs, first train the missing ones. Returns the exit code."""
    root = Path(root)
    if launch_runs:
        launch(root, recipes or curve_recipes())
    runs = [r for r in (read_run(p) for p in sorted(root.glob("*")) if p.is_dir()) if r is not None]
    skipped = [r["dir"] for r in runs if not r["as_recipe"]]
    if skipped and not include_modified:
        print(f"left out (settings differ from the recipe; --include-modified shows them): {', '.join(skipped)}")
        runs = [r for r in runs if r["as_recipe"]]
    if not runs:
        print(f"no runs of the curve's recipes under {root}; train them with --launch", file=sys.stderr)
        return 1
    order = {n: i for i, n in enumerate(curve_recipes())}
    runs.sort(key=lambda r: order.get(r["recipe"], 99))
    print(f"| model | recipe | steps x 32 | quiet steps/s | minutes | test acc |{' exact |' if exact else ''}")
    print(f"|---|---|---|---|---|---|{'---|' if exact else ''}")
    for r in runs:
        s, m, acc = r["points"][-1] if r["points"] else (0, 0.0, float("nan"))
        state = "" if r["done"] else f" (last evaluation at {s} of {r['steps']})"
        if not r["as_recipe"]:
            state += " (modified)"
        ex = f" {100 * exact_accuracy(r['dir']):.1f} % |" if exact and r["done"] else (" |" if exact else "")
        print(f"| {r['label']} | `{r['recipe']}` | {s}{state} | {r['quiet_steps_per_s']:.2f} | {m:.2f} | "
              f"{100 * acc:.1f} % |{ex}")
    print("\ncurve points (minutes: accuracy %):")
    for r in runs:
        print(f"  {r['recipe']}: " + ", ".join(f"{m:.2f}: {100 * acc:.1f}" for _, m, acc in r["points"]))
    plot(runs, png)
    print(f"\nwrote {png}")
    return 0
