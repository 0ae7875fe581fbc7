"""`python -m train finetune {gpt,clip,dpo}` (or `mmgen train finetune ...`): fine-tuning
methods compared on one pretrained mmgen model, each method trained by the engine's loop
(`mmgen.train.Trainer`) on the same batches from the same base.

  # 1. a Shakespeare base (any mmgen GPT run directory works)
  python -m train gpt_char_shakespeare_cpu --data shakespeare --data-set block_size=128 \\
      --set train.steps=400 --set train.batch_size=16 --set train.lr=3e-3 --out runs/base
  # 2. fine-tune it on another corpus (emoji captions): full vs LoRA vs QLoRA vs prefix vs P-tuning
  python -m train finetune gpt --base runs/base --out runs/ft
  # CLIP: a small shapes CLIP, then LoRA / prefix (text tower) / full on animal-mnist
  python -m train --recipe clip_shapes_byte_base --out runs/clip_base
  python -m train finetune clip --base runs/clip_base --out runs/clip_ft
  # 3. preferences: DPO against a frozen reference + a Bradley-Terry reward model
  python -m train finetune dpo --base runs/base --out runs/dpo

Each method is one engine run in OUT/METHOD (train_state.pt, run_config.json, metrics.jsonl
and what the method keeps: a LoRA adapter, a prefix, a P-tuning prompt, or the full
checkpoint); OUT/results.json and the printed table compare them (trainable share, measured
training memory, loss or accuracy reached). `--set train.KEY=VALUE` changes the schedule of
every method (train.lr: one rate for all instead of each method's own).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import IterableDataset, default_collate

from mmgen.config import field_type, parse_value

from . import dist as D
from .config import TrainConfig
from .loop import Trainer, to_device
from .metrics import METRICS_NAME
from .state import STATE_NAME, check_out_dir, export_checkpoint

# The schedule every method starts from (steps, batch size and learning rate per task below).
DEFAULTS = dict(warmup=10, weight_decay=0.0, clip=1.0, device="cpu", amp="fp32", log_every=1, eval_batches=0,
                val_split="", num_samples=0, save_every=0, save_every_minutes=0.0, progress=False)
TASKS = {  # what -> TrainConfig fields of its methods (lr: each method's own unless train.lr is set)
    "gpt": dict(steps=150, batch_size=16),
    "clip": dict(steps=250, batch_size=64),
    "dpo": dict(steps=60, batch_size=8, lr=2e-4, warmup=5),
}


def random_draws(ds, count: int, seed: int) -> list:
    """`count` items of a map-style dataset drawn uniformly with replacement by a seeded
    generator, read once up front: every method trains on the same items in the same order
    (also when reading an item is random, e.g. a caption template drawn per access)."""
    g = torch.Generator().manual_seed(seed)
    return [ds[i] for i in torch.randint(0, len(ds), (count,), generator=g).tolist()]


class Items(IterableDataset):
    """A list of ready items, read in order (the engine reads an iterable dataset in order)."""

    def __init__(self, items: list):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def fixed_batches(ds, n: int, bs: int, seed: int, collate: Callable = default_collate) -> list:
    """n batches of bs items drawn with replacement (seeded): the evaluation batches."""
    items = random_draws(ds, n * bs, seed)
    return [collate(items[j * bs:(j + 1) * bs]) for j in range(n)]


def train_method(model, train_ds, cfg: TrainConfig, out: Path, *, collate: Callable, val_ds=None,
                 export: Callable | None = None, run_config: dict | None = None) -> tuple[dict, Trainer, float]:
    """One method: an engine run in `out` (a previous run of it there is replaced). Returns
    (the engine's summary, the trainer, wall seconds)."""
    if out.exists():
        check_out_dir(out, resume=(out / STATE_NAME).exists())  # never a checkpoint no run wrote
        shutil.rmtree(out)
    trainer = Trainer(model, train_ds, cfg, out, val_ds=val_ds, collate=collate, export=export,
                      run_config=run_config)
    t0 = time.perf_counter()
    summary = trainer.fit()
    trainer.model.eval()
    return summary, trainer, time.perf_counter() - t0


def metrics_of(out: Path) -> list[dict]:
    path = out / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def training_memory(model, opt, batch) -> dict[str, int]:
    """Measured bytes: weights (parameters + buffers), gradients and AdamW state of the
    trainable parameters, and the activations autograd saves for one batch."""
    from mmgen.cost import saved_tensor_bytes
    from mmgen.finetune import model_bytes
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.ndim > 0)
    model.train()
    acts = saved_tensor_bytes(lambda: model.loss(batch), list(model.parameters()))
    model.eval()
    return {"weights": model_bytes(model), "gradients": grads, "optimizer": state, "activations": acts}


@torch.no_grad()
def eval_loss(model, batches: list[dict]) -> float:
    model.eval()
    device = next(model.parameters()).device
    return sum(model.loss(to_device(b, device))[0].item() for b in batches) / len(batches)


def _cfg(base: TrainConfig, lr: float, overrides: dict) -> TrainConfig:
    """The method's schedule: its own lr (min_lr lr / 10) unless train.lr / train.min_lr are set."""
    lr = overrides.get("lr", lr)
    return dataclasses.replace(base, lr=lr, min_lr=overrides.get("min_lr", lr / 10))


def _writer(save: Callable[[object, Path], None]) -> Callable:
    """An engine export that writes only what a method keeps (adapter, prefix, prompt)."""
    return lambda model, out, extra: save(model, out)


# ---- GPT: Shakespeare base -> another corpus -------------------------------------------------
def finetune_gpt(base_dir: str, out: str, cfg: TrainConfig, overrides: dict, *, source: str = "emoji",
                 rank: int = 8, methods: list[str] | None = None) -> dict:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.finetune import apply_lora, quantize_model, save_adapter, trainable_summary

    seed = cfg.seed
    base = mmgen.load_pretrained(base_dir).eval()
    T = min(64, base.config.context_length)
    torch.manual_seed(seed)
    train_ds = build_dataset("captions", "train", source=source, block_size=T)
    n_val = overrides.get("eval_batches") or 8
    val = fixed_batches(build_dataset("captions", "val", source=source, block_size=T), n_val, 32, 1)
    shakes = fixed_batches(build_dataset("shakespeare", "val", block_size=T), max(n_val // 2, 1), 32, 2)
    draws = Items(random_draws(train_ds, cfg.steps * cfg.batch_size, seed))
    lora = dict(targets=["attn", "mlp"], rank=rank, alpha=2 * rank)
    builders = {  # name -> (wrap the base, learning rate, what the run keeps)
        "full": (lambda m: m, 1e-3, None),
        f"lora_r{rank}": (lambda m: (apply_lora(m, **lora), m)[1], 3e-3, save_adapter),
        f"lora_r{rank}_attn": (lambda m: (apply_lora(m, **{**lora, "targets": ["attn"]}), m)[1], 3e-3, save_adapter),
        f"qlora_int4_r{rank}": (lambda m: (quantize_model(m, 4, group_size=32), apply_lora(m, **lora), m)[2], 3e-3,
                                save_adapter),
        "prefix_16": (lambda m: _prefix(m, 16, train_ds), 1e-2, lambda m, d: m.save_prefix(d)),
        "ptuning_16_mlp": (lambda m: _ptuning(m, 16, "mlp", train_ds), 1e-2, lambda m, d: m.save_prompt(d)),
        "ptuning_16_lstm": (lambda m: _ptuning(m, 16, "lstm", train_ds, hidden=64), 1e-2,
                            lambda m, d: m.save_prompt(d)),
    }
    methods = _check_methods(methods, builders)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"base": base_dir, "corpus": f"captions:{source}", "steps": cfg.steps, "batch_size": cfg.batch_size,
               "block": T, "before": {"val_loss": eval_loss(base, val), "shakespeare_val_loss": eval_loss(base, shakes)},
               "runs": {}}
    old = out_dir / "results.json"
    if old.exists():  # a run of other --methods on the same base and schedule: keep its rows
        prev = json.loads(old.read_text())
        if all(prev.get(k) == results[k] for k in ("base", "corpus", "steps", "batch_size", "block")):
            results["runs"] = {k: v for k, v in prev.get("runs", {}).items() if k not in methods}
    print(f"base: captions val {results['before']['val_loss']:.3f}, shakespeare val "
          f"{results['before']['shakespeare_val_loss']:.3f}", file=sys.stderr)
    for name in methods:
        build, method_lr, keep = builders[name]
        mcfg = _cfg(cfg, method_lr, overrides)
        torch.manual_seed(seed)
        model = build(copy.deepcopy(base))
        share = trainable_summary(model)
        print(f"{name}: {share['trainable']:,} trainable of {share['total']:,} (lr {mcfg.lr})", file=sys.stderr)
        summary, trainer, wall = train_method(
            model, draws, mcfg, out_dir / name, collate=default_collate,
            export=_writer(keep) if keep else export_checkpoint,
            run_config={"finetune": "gpt", "method": name, "base": base_dir, "corpus": f"captions:{source}"})
        device = next(trainer.model.parameters()).device
        batch0 = to_device(default_collate(draws.items[:cfg.batch_size]), device)
        mem = training_memory(trainer.model, trainer.optimizer, batch0)
        rec = {"trainable": share["trainable"], "total": share["total"], "share": share["share"], "lr": mcfg.lr,
               "val_loss": eval_loss(trainer.model, val), "shakespeare_val_loss": eval_loss(trainer.model, shakes),
               "train_loss": summary["loss"], "wall_s": wall, "memory": mem}
        kept = {"lora": "adapter.safetensors", "qlora": "adapter.safetensors", "ptuning": "prompt.safetensors",
                "prefix": "prefix.safetensors"}.get(name.split("_")[0])
        if kept:
            rec["adapter_bytes"] = (out_dir / name / kept).stat().st_size
        results["runs"][name] = rec
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print_gpt_table(results)
    return results


def _prefix(model, n, train_ds):
    from mmgen.finetune import PrefixGPT
    pm = PrefixGPT(model, n)
    pm.init_from_text(train_ds[0]["input_ids"].tolist())  # start from the model's own keys of corpus text
    return pm


def _ptuning(model, n, encoder, train_ds, hidden=None):
    from mmgen.finetune import PTuningGPT
    pm = PTuningGPT(model, n, encoder=encoder, hidden=hidden)
    pm.init_from_text(train_ds[0]["input_ids"].tolist())  # start at the embeddings of corpus text
    return pm


def _check_methods(methods: list[str] | None, builders: dict) -> list[str]:
    methods = methods or list(builders)
    unknown = [m for m in methods if m not in builders]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(builders)}")
    return methods


def print_gpt_table(r: dict) -> None:
    print(f"\nfine-tuning {r['base']} on {r['corpus']} ({r['steps']} steps x {r['batch_size']} x {r['block']} tokens)")
    print("| method | trainable | share | train-state MB (w+g+opt) | activations MB | saved file kB | val loss | "
          "Shakespeare val loss | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    b = r["before"]
    print(f"| base (no fine-tuning) | 0 | 0 | | | | {b['val_loss']:.3f} | {b['shakespeare_val_loss']:.3f} | |")
    for name, x in r["runs"].items():
        m = x["memory"]
        state = (m["weights"] + m["gradients"] + m["optimizer"]) / 1e6
        saved = f"{x['adapter_bytes'] / 1e3:.0f}" if "adapter_bytes" in x else ""
        print(f"| {name} | {x['trainable']:,} | {100 * x['share']:.2f}% | {state:.2f} | {m['activations'] / 1e6:.1f} | "
              f"{saved} | {x['val_loss']:.3f} | {x['shakespeare_val_loss']:.3f} | {x['wall_s']:.0f} |")


# ---- CLIP: shapes base -> animal-mnist, LoRA / prefix vs full ---------------------------------
def finetune_clip(base_dir: str, out: str, cfg: TrainConfig, overrides: dict, *, rank: int = 8,
                  methods: list[str] | None = None, n_test: int | None = None) -> dict:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.finetune import add_prefix, apply_lora, trainable_summary
    from mmgen.metrics.clip_eval import dataset_zero_shot

    seed = cfg.seed
    base = mmgen.load_pretrained(base_dir).eval()
    base.config.label_aware = True  # template captions: two zebra captions are not negatives
    base.loss_fn.label_aware = True  # (the loss module was built from the config already)
    # each item's caption template is drawn from torch's RNG when it is read: seed it, on a stream
    # apart from the indices' (the same seed would tie the template to the index, hence the class)
    torch.manual_seed(seed + 1)
    draws = Items(random_draws(build_dataset("animal_mnist", "train"), cfg.steps * cfg.batch_size, seed))

    def lora(m, targets):
        apply_lora(m, targets=targets, rank=rank, alpha=2 * rank)
        m.logit_scale.requires_grad_(True)
        return m

    def prefix(m):
        add_prefix(m, "text.transformer", 8)
        m.logit_scale.requires_grad_(True)
        return m

    builders = {
        "full": (lambda m: m, 1e-3),
        f"lora_r{rank}_both_towers": (lambda m: lora(m, ["attn", "mlp"]), 3e-3),
        f"lora_r{rank}_text_tower": (lambda m: lora(m, ["text.*attn.qkv", "text.*attn.proj", "text.*mlp.fc1",
                                                         "text.*mlp.fc2"]), 3e-3),
        "prefix_8_text_tower": (prefix, 1e-2),
    }
    methods = _check_methods(methods, builders)
    zs = lambda m: dataset_zero_shot(m.eval(), "animal_mnist", split="test", limit=n_test)  # all 1,000: the split is class-sorted
    before = zs(base)
    results = {"base": base_dir, "data": "animal_mnist", "steps": cfg.steps, "batch_size": cfg.batch_size,
               "before": {"top1": before["top1"], "top5": before["top5"], "chance": before["chance"], "n": before["n"]},
               "runs": {}}
    print(f"base zero-shot top-1 {before['top1']:.3f}", file=sys.stderr)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in methods:
        build, method_lr = builders[name]
        mcfg = _cfg(cfg, method_lr, overrides)
        torch.manual_seed(seed)
        model = build(copy.deepcopy(base))
        share = trainable_summary(model)
        print(f"{name}: {share['trainable']:,} trainable of {share['total']:,}", file=sys.stderr)
        # the weights stay in train_state.pt: a wrapped CLIP has no checkpoint format of its own
        summary, trainer, wall = train_method(
            model, draws, mcfg, out_dir / name, collate=base.collate, export=lambda m, o, e: None,
            run_config={"finetune": "clip", "method": name, "base": base_dir, "data": "animal_mnist"})
        device = next(trainer.model.parameters()).device
        mem = training_memory(trainer.model, trainer.optimizer,
                              to_device(base.collate(draws.items[:cfg.batch_size]), device))
        acc = zs(trainer.model.cpu())
        results["runs"][name] = {"trainable": share["trainable"], "total": share["total"], "share": share["share"],
                                 "lr": mcfg.lr, "train_loss": summary["loss"], "top1": acc["top1"], "top5": acc["top5"],
                                 "wall_s": wall, "memory": mem}
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nCLIP fine-tuning {base_dir} on animal_mnist ({cfg.steps} steps x {cfg.batch_size}), zero-shot on "
          f"{before['n']} test images (chance {before['chance']:.3f})")
    print("| method | trainable | share | train-state MB (w+g+opt) | activations MB | final train loss | top-1 | top-5 | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| base (no fine-tuning) | 0 | 0 | | | | {before['top1']:.3f} | {before['top5']:.3f} | |")
    for name, x in results["runs"].items():
        m = x["memory"]
        print(f"| {name} | {x['trainable']:,} | {100 * x['share']:.2f}% | "
              f"{(m['weights'] + m['gradients'] + m['optimizer']) / 1e6:.2f} | {m['activations'] / 1e6:.1f} | "
              f"{x['train_loss']:.3f} | {x['top1']:.3f} | {x['top5']:.3f} | {x['wall_s']:.0f} |")
    return results


# ---- preferences: DPO and a reward model ----------------------------------------------------
def preference_pairs(text: bytes, n: int, seed: int, prompt_len: int = 48, completion_len: int = 24) -> list[dict]:
    """Synthetic preferences from real text: the true continuation (chosen) against the same
    bytes shuffled (rejected), after a prompt of real text."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(0, len(text) - prompt_len - completion_len)
        prompt = list(text[i:i + prompt_len])
        chosen = list(text[i + prompt_len:i + prompt_len + completion_len])
        rejected = chosen[:]
        while rejected == chosen:
            rng.shuffle(rejected)
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def preference(base_dir: str, out: str, cfg: TrainConfig, overrides: dict, *, beta: float = 0.1,
               n_heldout: int = 64, eval_every: int = 10) -> dict:
    """DPO (cfg's lr) and a Bradley-Terry reward model (lr 1e-3 unless train.lr is set) on the
    same pairs; both are evaluated on the held-out pairs every `eval_every` steps."""
    import mmgen
    from mmgen.data.text import shakespeare_text
    from mmgen.finetune import DPOModel, RewardModel, collate_preferences

    seed, steps, bs = cfg.seed, cfg.steps, cfg.batch_size
    text = shakespeare_text().encode("utf-8")
    cut = int(0.9 * len(text))  # the base model's own train / val split of the text
    train_pairs = Items(preference_pairs(text[:cut], steps * bs, seed))
    held = Items(preference_pairs(text[cut:], n_heldout, seed + 1))
    torch.manual_seed(seed)
    base = mmgen.load_pretrained(base_dir).eval()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the held-out pairs, all of them, at every evaluation (and at step 0, before training)
    ecfg = dataclasses.replace(cfg, eval_every=eval_every, eval_batches=math.ceil(n_heldout / bs), val_split="held")
    dpo = DPOModel(copy.deepcopy(base), base, beta=beta)
    device = D.resolve_device(cfg.device)
    start = {f"heldout_{k}": v for k, v in _held_mean(dpo, held, bs, device).items() if k != "loss"}
    print(f"DPO held-out at step 0: {start}", file=sys.stderr)
    train_method(dpo, train_pairs, _cfg(ecfg, cfg.lr, overrides), out_dir / "dpo", collate=collate_preferences, val_ds=held,
                 export=lambda m, o, e: export_checkpoint(m.policy, o, e),
                 run_config={"finetune": "dpo", "base": base_dir, "beta": beta})
    dpo_keys = ("reward_chosen", "reward_rejected", "margin", "accuracy")
    dpo_hist = _eval_history(out_dir / "dpo", ("margin", "accuracy", "reward_chosen", "reward_rejected"), dpo_keys)
    rm = RewardModel(copy.deepcopy(base))
    torch.manual_seed(seed)
    train_method(rm, train_pairs, _cfg(ecfg, 1e-3, overrides), out_dir / "reward_model", collate=collate_preferences,
                 val_ds=held, run_config={"finetune": "reward_model", "base": base_dir},
                 export=lambda m, o, e: _save_state(m, o))
    rm_hist = _eval_history(out_dir / "reward_model", ("accuracy",), ("reward_chosen", "reward_rejected", "accuracy"))
    res = {"base": base_dir, "beta": beta, "lr": cfg.lr, "steps": steps, "batch_size": bs,
           "heldout_pairs": n_heldout, "dpo": [{"step": 0, **start}] + dpo_hist, "reward_model": rm_hist}
    (out_dir / "results.json").write_text(json.dumps(res, indent=2))
    print(f"\nDPO (beta {beta}, lr {cfg.lr}, {steps} steps x {bs} pairs) on held-out pairs:")
    print("| step | train loss | held-out margin | held-out accuracy | reward chosen | reward rejected |")
    print("|---|---|---|---|---|---|")
    for h in res["dpo"]:
        print(f"| {h['step']} | {h.get('loss', math.log(2)):.3f} | {h['heldout_margin']:.3f} | "
              f"{h['heldout_accuracy']:.2f} | {h['heldout_reward_chosen']:.3f} | {h['heldout_reward_rejected']:.3f} |")
    print(f"reward model held-out accuracy: " + ", ".join(f"step {h['step']}: {h['heldout_accuracy']:.2f}" for h in rm_hist))
    return res


@torch.no_grad()
def _held_mean(model, held: Items, bs: int, device) -> dict[str, float]:
    """model.evaluate over the held-out pairs in batches of bs, weighted by batch size (as the
    engine's evaluation)."""
    from mmgen.finetune import collate_preferences
    sums, n = {}, 0
    for k in range(0, len(held.items), bs):
        chunk = held.items[k:k + bs]
        logs = model.to(device).evaluate(to_device(collate_preferences(chunk), device))
        for key, v in logs.items():
            sums[key] = sums.get(key, 0.0) + float(v) * len(chunk)
        n += len(chunk)
    return {k: v / n for k, v in sums.items()}


def _eval_history(run: Path, keys: tuple[str, ...], logs: tuple[str, ...]) -> list[dict]:
    """The evaluations of an engine run (metrics.jsonl), each with the training logs of that
    step: [{"step", "loss", <logs>..., "heldout_<key>", ...}]."""
    recs = metrics_of(run)
    train = {r["step"]: r for r in recs if "loss" in r}
    out = []
    for r in recs:
        if f"val/{keys[0]}" in r:
            row = {"step": r["step"]}
            row.update({k: train[r["step"]][k] for k in ("loss", *logs) if k in train.get(r["step"], {})})
            row.update({f"heldout_{k}": r[f"val/{k}"] for k in keys})
            out.append(row)
    return out


def _save_state(model, out: Path) -> None:
    from safetensors.torch import save_model
    save_model(model, str(Path(out) / "model.safetensors"))


# ---- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None, prog: str = "python -m train finetune") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=list(TASKS))
    ap.add_argument("--base", required=True, help="the pretrained run directory / checkpoint to start from")
    ap.add_argument("--out", required=True, help="results.json and one run directory per method")
    ap.add_argument("--methods", default=None, help="comma-separated subset (gpt: full, lora_r8, lora_r8_attn, "
                                                    "qlora_int4_r8, prefix_16, ptuning_16_mlp, ptuning_16_lstm; clip: "
                                                    "full, lora_r8_both_towers, lora_r8_text_tower, prefix_8_text_tower)")
    ap.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE",
                    help="gpt: source=NAME, the caption corpus to fine-tune on (default emoji)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="train.KEY=VALUE",
                    help="a train.* field for every method (repeatable), e.g. train.steps=100, train.lr=3e-3")
    args = ap.parse_args(argv)
    try:
        overrides = {}
        for kv in args.sets:
            key, _, text = kv.partition("=")
            if not key.startswith("train.") or not _:
                raise ValueError(f"--set takes train.KEY=VALUE here, got {kv!r}")
            overrides[key[6:]] = parse_value(text, field_type(TrainConfig, key[6:]))
        data = dict(kv.split("=", 1) for kv in args.data_set if "=" in kv)
        if len(data) != len(args.data_set) or set(data) - {"source"} or (data and args.what != "gpt"):
            raise ValueError(f"--data-set takes source=NAME (gpt only), got {args.data_set}")
        cfg = TrainConfig(**{**DEFAULTS, **TASKS[args.what], **overrides})
        methods = args.methods.split(",") if args.methods else None
        torch.set_num_threads(1)
        if args.what == "gpt":
            finetune_gpt(args.base, args.out, cfg, overrides, methods=methods, **data)
        elif args.what == "clip":
            finetune_clip(args.base, args.out, cfg, overrides, methods=methods)
        else:
            if methods:
                raise ValueError("--methods applies to gpt and clip; dpo trains DPO and the reward model")
            preference(args.base, args.out, cfg, overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
