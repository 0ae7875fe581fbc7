"""Training throughput of the image classifiers' recipes relative to ResNet-18, measured
interleaved in one process, and the step budgets that follow from it.

Wall time is not a fair measure on a shared machine: other jobs come and go during a run. A
ratio of two throughputs measured round-robin in one process is robust to that load (both sides
see it alike). Each recipe's training step (its model, batch size, augmentation, autocast dtype,
AdamW + gradient clipping, as in the engine) is timed alternately with ResNet-18's; its quiet-
machine rate is ResNet-18's quiet rate (`recipes.vision.RESNET18_STEPS_PER_S`) times the ratio,
and a budget of T seconds is T x that rate steps (`recipes.vision.budget_steps`).

    python -m bench vision_train                                   # the registered animal-mnist recipes
    python -m bench.bench_vision_train --recipes vit_tiny_animal_mnist --repeats 30
    python -m bench.bench_vision_train --candidate 'x=vit_tiny_patch4_32:stem=conv,global_pool=avg,amp=bf16'
"""
from __future__ import annotations

import argparse
import json

import torch

from bench.timing import compare, print_table, train_step

REFERENCE = "resnet18_animal_mnist"


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def parse_candidate(spec: str) -> tuple[str, str, dict, str, int]:
    """'NAME=PRESET:key=value,key=value' -> (name, preset, model overrides, amp, batch); the
    keys `amp` and `batch_size` set the step's dtype and batch."""
    name, _, rest = spec.partition("=")
    preset, _, kvs = rest.partition(":")
    if not name or not preset:
        raise ValueError(f"--candidate expects NAME=PRESET[:key=value,...], got {spec!r}")
    over = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
    over = {k: _parse_value(v) for k, v in over.items()}
    amp = over.pop("amp", "fp32")
    batch = int(over.pop("batch_size", 32))
    return name, preset, over, amp, batch


def recipe_entry(name: str) -> tuple[str, str, dict, str, int]:
    from mmgen.train.recipes import get_recipe
    r = get_recipe(name)
    amp = r.train.get("amp", "fp32")
    return name, r.model, dict(r.model_overrides), "fp32" if amp == "auto" else amp, r.train.get("batch_size", 32)


def default_recipes() -> list[str]:
    """The animal-mnist recipes of the classifiers (1-minute variants left out: same models)."""
    from mmgen.train.recipes import list_recipes
    return [r.name for r in list_recipes() if r.data == "animal_mnist" and r.name != REFERENCE
            and r.model.startswith(("vit", "swin", "resnet")) and not r.name.endswith("_1min")]


def make_step(preset: str, over: dict, amp: str, batch: int, device: str = "cpu"):
    """A closure running one training step as the engine does (loss with the model's own
    augmentation, backward, clip 1.0, AdamW)."""
    import mmgen
    from mmgen.train.loop import param_groups
    torch.manual_seed(0)
    model = mmgen.create_model(preset, **over).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4)
    return train_step(model, model.example_batch(batch, device=device), opt, amp, device, clip=1.0), model.num_params()


def measure_ratios(entries: list[tuple[str, str, dict, str, int]], *, repeats: int = 20, warmup: int = 3,
                   device: str = "cpu") -> list[dict]:
    """Each entry timed round-robin against ResNet-18 (its recipe) in this process. Returns one
    record per entry: steps/s here, ratio to ResNet-18, quiet-machine steps/s, budget steps."""
    from mmgen.train.recipes.vision import BUDGETS_S, RESNET18_STEPS_PER_S, budget_steps
    ref = recipe_entry(REFERENCE)
    steps = {}
    nparams = {}
    for e in [ref] + [e for e in entries if e[0] != REFERENCE]:
        steps[e[0]], nparams[e[0]] = make_step(e[1], e[2], e[3], e[4], device)
    res = compare(steps, warmup=warmup, repeats=repeats)
    out = []
    for e in [ref] + [e for e in entries if e[0] != REFERENCE]:
        ratio = res[ref[0]].median_s / res[e[0]].median_s
        rec = {"name": e[0], "model": e[1], "params_M": nparams[e[0]] / 1e6, "amp": e[3], "batch": e[4],
               "steps_per_s_here": 1.0 / res[e[0]].median_s, "ratio_to_resnet18": ratio,
               "quiet_steps_per_s": RESNET18_STEPS_PER_S * ratio}
        rec.update({f"steps_{b}": budget_steps(ratio, s) for b, s in BUDGETS_S.items()})
        out.append(rec)
    return out


def main(recipes: list[str] | None = None, candidates: list[str] | None = None, repeats: int = 20,
         as_json: bool = False) -> list[dict]:
    entries = [recipe_entry(n) for n in (recipes if recipes is not None else default_recipes())]
    entries += [parse_candidate(c) for c in candidates or []]
    recs = measure_ratios(entries, repeats=repeats)
    if as_json:
        print(json.dumps(recs, indent=1))
    rows = [[r["name"], r["model"], f"{r['params_M']:.2f}", r["amp"], r["batch"], r["steps_per_s_here"],
             r["ratio_to_resnet18"], r["quiet_steps_per_s"], r["steps_1min"], r["steps_10min"]] for r in recs]
    print_table(f"training throughput vs ResNet-18, interleaved ({torch.get_num_threads()} threads, {repeats} "
                "rounds, median)",
                ["recipe", "model", "params M", "amp", "batch", "steps/s here", "ratio", "quiet steps/s",
                 "steps 1 min", "steps 10 min"], rows)
    return recs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: the animal-mnist ones)")
    ap.add_argument("--candidate", action="append", default=[],
                    help="NAME=PRESET[:key=value,...] (keys amp, batch_size set the step); repeatable")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    main(a.recipes, a.candidate, a.repeats, a.json)
