"""Fine-tuning and preference recipes on a pretrained mmgen model.

Fine-tuning needs a base checkpoint and wraps the model (LoRA / QLoRA / prefix), which a
plain preset + dataset recipe cannot express, so these run as a module:

  # 1. a Shakespeare base (any mmgen GPT run directory works)
  python -m train gpt_char_shakespeare_cpu --data shakespeare --data-set block_size=128 \\
      --set train.steps=400 --set train.batch_size=16 --set train.lr=3e-3 --out runs/base
  # 2. fine-tune it on another corpus (emoji captions): full vs LoRA vs QLoRA vs prefix vs P-tuning
  python -m train.recipes.finetune gpt --base runs/base --out runs/ft
  # CLIP: a small shapes CLIP, then LoRA / prefix (text tower) / full on animal-mnist
  python -m train --recipe clip_shapes_byte_base --out runs/clip_base
  python -m train.recipes.finetune clip --base runs/clip_base --out runs/clip_ft
  # 3. preferences: DPO against a frozen reference + a Bradley-Terry reward model
  python -m train.recipes.finetune dpo --base runs/base --out runs/dpo

Each prints a table (trainable share, measured training memory, loss reached) and writes
results.json in --out. The training loop reuses the engine's AdamW groups and schedule (mmgen.train.optim).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from . import Recipe, register_recipe
from ..config import TrainConfig
from ..optim import lr_factor, param_groups

# The CLIP base the CLIP fine-tuning recipe starts from: clip_tiny with small towers (as
# train/recipes/clip.py) and the byte tokenizer, so captions of any dataset tokenize.
CLIP_SMALL = dict(vision_model="vit_tiny_patch4_32", vision={"dim": 64, "depth": 2, "num_heads": 2}, embed_dim=64,
                  tokenizer="byte", text={"context_length": 48, "width": 64, "depth": 2, "heads": 2})
register_recipe(Recipe(
    name="clip_shapes_byte_base", model="clip_tiny", data="shapes", model_overrides=CLIP_SMALL,
    data_kwargs={"holdout": "default"},
    train=dict(steps=300, batch_size=64, lr=2e-3, warmup=30, weight_decay=0.1, val_split="heldout_test",
               eval_batches=4, log_every=50, save_every=300),
    description="small CLIP on shapes with the byte tokenizer: the base of `python -m train.recipes.finetune clip`",
    expected="held-out text->image R@1 0.50 (in-batch), ~2 min; the fine-tuning table is in docs/llm.md"))


# ---- a small loop for wrapped models -------------------------------------------------------
def train_steps(model, batches, steps: int, lr: float, *, weight_decay: float = 0.0, warmup: int = 10,
                log_every: int = 25, eval_fn=None, eval_every: int = 0, clip: float = 1.0) -> list[dict]:
    """AdamW (the engine's parameter groups, trainable parameters only) with linear warm-up
    and cosine decay; `batches(step)` gives the batch of a step. Returns the logged history."""
    cfg = TrainConfig(steps=steps, lr=lr, warmup=warmup, min_lr=lr / 10, weight_decay=weight_decay)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
    params = [p for g in opt.param_groups for p in g["params"]]
    hist = []
    model.train()
    for step in range(1, steps + 1):
        loss, logs = model.loss(batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            rec = {"step": step, **{k: float(v) for k, v in logs.items()}}
            if eval_fn is not None and eval_every and (step % eval_every == 0 or step == steps):
                rec.update(eval_fn())
            hist.append(rec)
            print("  " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
                  file=sys.stderr)
    model.eval()
    return hist, opt


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
    return sum(model.loss(b)[0].item() for b in batches) / len(batches)


def _stack(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _fixed_batches(ds, n: int, bs: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(ds), (n * bs,), generator=g).tolist()
    return [_stack([ds[i] for i in idx[j * bs:(j + 1) * bs]]) for j in range(n)]


# ---- GPT: Shakespeare base -> another corpus -------------------------------------------------
def finetune_gpt(base_dir: str, out: str, *, steps: int = 150, batch_size: int = 16, source: str = "emoji",
                 rank: int = 8, seed: int = 0, methods: list[str] | None = None, lr: float | None = None) -> dict:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.finetune import PrefixGPT, apply_lora, quantize_model, save_adapter, trainable_summary

    base = mmgen.load_pretrained(base_dir).eval()
    T = min(64, base.config.context)
    torch.manual_seed(seed)
    train_ds = build_dataset("captions", "train", source=source, block_size=T)
    val = _fixed_batches(build_dataset("captions", "val", source=source, block_size=T), 8, 32, 1)
    shakes = _fixed_batches(build_dataset("shakespeare", "val", block_size=T), 4, 32, 2)
    torch.manual_seed(seed)
    train_batches = _fixed_batches(train_ds, steps, batch_size, seed)
    builders = {
        "full": (lambda m: m, 1e-3),
        f"lora_r{rank}": (lambda m: (apply_lora(m, targets=["attn", "mlp"], rank=rank, alpha=2 * rank), m)[1], 3e-3),
        f"lora_r{rank}_attn": (lambda m: (apply_lora(m, targets=["attn"], rank=rank, alpha=2 * rank), m)[1], 3e-3),
        f"qlora_int4_r{rank}": (lambda m: (quantize_model(m, 4, group_size=32),
                                           apply_lora(m, targets=["attn", "mlp"], rank=rank, alpha=2 * rank), m)[2], 3e-3),
        "prefix_16": (lambda m: _prefix(m, 16, train_ds), 1e-2),
        "ptuning_16_mlp": (lambda m: _ptuning(m, 16, "mlp", train_ds), 1e-2),
        "ptuning_16_lstm": (lambda m: _ptuning(m, 16, "lstm", train_ds, hidden=64), 1e-2),
    }
    methods = methods or list(builders)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"base": base_dir, "corpus": f"captions:{source}", "steps": steps, "batch_size": batch_size,
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
        build, method_lr = builders[name]
        lr_used = lr or method_lr
        torch.manual_seed(seed)
        model = build(copy.deepcopy(base))
        share = trainable_summary(model)
        print(f"{name}: {share['trainable']:,} trainable of {share['total']:,} (lr {lr_used})", file=sys.stderr)
        t0 = time.perf_counter()
        hist, opt = train_steps(model, lambda s: train_batches[s - 1], steps, lr_used, log_every=max(steps // 4, 1))
        wall = time.perf_counter() - t0
        mem = training_memory(model, opt, train_batches[0])
        rec = {"trainable": share["trainable"], "total": share["total"], "share": share["share"], "lr": lr_used,
               "val_loss": eval_loss(model, val), "shakespeare_val_loss": eval_loss(model, shakes),
               "train_loss": hist[-1]["loss"], "wall_s": wall, "memory": mem}
        if name.startswith(("lora", "qlora")):
            save_adapter(model, out_dir / name)
            rec["adapter_bytes"] = (out_dir / name / "adapter.safetensors").stat().st_size
        elif name.startswith("ptuning"):
            model.save_prompt(out_dir / name)  # the (P, dim) virtual tokens only
            rec["adapter_bytes"] = (out_dir / name / "prompt.safetensors").stat().st_size
        elif name.startswith("prefix"):
            model.save_prefix(out_dir / name)
            rec["adapter_bytes"] = (out_dir / name / "prefix.safetensors").stat().st_size
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
def finetune_clip(base_dir: str, out: str, *, steps: int = 250, batch_size: int = 64, rank: int = 8, seed: int = 0,
                  methods: list[str] | None = None, n_test: int | None = None) -> dict:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.finetune import add_prefix, apply_lora, trainable_summary
    from mmgen.metrics.clip_eval import dataset_zero_shot

    base = mmgen.load_pretrained(base_dir).eval()
    base.config.label_aware = True  # template captions: two zebra captions are not negatives
    base.loss_fn.label_aware = True  # (the loss module was built from the config already)
    ds = build_dataset("animal_mnist", "train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(ds), (steps * batch_size,), generator=g).tolist()
    batches = [base.collate([ds[i] for i in idx[j * batch_size:(j + 1) * batch_size]]) for j in range(steps)]

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
    methods = methods or list(builders)
    zs = lambda m: dataset_zero_shot(m.eval(), "animal_mnist", split="test", limit=n_test)  # all 1,000: the split is class-sorted
    before = zs(base)
    before_n = before["n"]
    results = {"base": base_dir, "data": "animal_mnist", "steps": steps, "batch_size": batch_size,
               "before": {"top1": before["top1"], "top5": before["top5"], "chance": before["chance"], "n": before["n"]},
               "runs": {}}
    print(f"base zero-shot top-1 {before['top1']:.3f}", file=sys.stderr)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in methods:
        build, lr = builders[name]
        torch.manual_seed(seed)
        model = build(copy.deepcopy(base))
        share = trainable_summary(model)
        print(f"{name}: {share['trainable']:,} trainable of {share['total']:,}", file=sys.stderr)
        t0 = time.perf_counter()
        hist, opt = train_steps(model, lambda s: batches[s - 1], steps, lr, log_every=max(steps // 4, 1),
                                weight_decay=0.0)
        wall = time.perf_counter() - t0
        mem = training_memory(model, opt, batches[0])
        acc = zs(model)
        results["runs"][name] = {"trainable": share["trainable"], "total": share["total"], "share": share["share"],
                                 "lr": lr, "train_loss": hist[-1]["loss"], "top1": acc["top1"], "top5": acc["top5"],
                                 "wall_s": wall, "memory": mem}
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nCLIP fine-tuning {base_dir} on animal_mnist ({steps} steps x {batch_size}), zero-shot on "
          f"{before_n} test images (chance {before['chance']:.3f})")
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


def preference(base_dir: str, out: str, *, steps: int = 60, batch_size: int = 8, beta: float = 0.1,
               lr: float = 2e-4, seed: int = 0, n_heldout: int = 64) -> dict:
    import mmgen
    from mmgen.data.text import shakespeare_text
    from mmgen.finetune import DPOModel, RewardModel, collate_preferences

    text = shakespeare_text().encode("utf-8")
    cut = int(0.9 * len(text))  # the base model's own train / val split of the text
    train_pairs = preference_pairs(text[:cut], steps * batch_size, seed)
    held = collate_preferences(preference_pairs(text[cut:], n_heldout, seed + 1))
    torch.manual_seed(seed)
    base = mmgen.load_pretrained(base_dir).eval()
    dpo = DPOModel(copy.deepcopy(base), base, beta=beta)
    batches = lambda s: collate_preferences(train_pairs[(s - 1) * batch_size:s * batch_size])

    def held_eval(model=dpo):
        logs = model.evaluate(held)
        return {f"heldout_{k}": v for k, v in logs.items() if k != "loss"}

    start = held_eval()
    print(f"DPO held-out at step 0: {start}", file=sys.stderr)
    hist, _ = train_steps(dpo, batches, steps, lr, log_every=10, eval_fn=held_eval, eval_every=10, warmup=5)
    rm = RewardModel(copy.deepcopy(base))
    torch.manual_seed(seed)
    rm_hist, _ = train_steps(rm, batches, steps, 1e-3, log_every=10, warmup=5,
                             eval_fn=lambda: {"heldout_accuracy": _rm_acc(rm, held)}, eval_every=10)
    res = {"base": base_dir, "beta": beta, "lr": lr, "steps": steps, "batch_size": batch_size,
           "heldout_pairs": n_heldout, "dpo": [{"step": 0, **start}] + hist, "reward_model": rm_hist}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps(res, indent=2))
    print(f"\nDPO (beta {beta}, lr {lr}, {steps} steps x {batch_size} pairs) on held-out pairs:")
    print("| step | train loss | held-out margin | held-out accuracy | reward chosen | reward rejected |")
    print("|---|---|---|---|---|---|")
    for h in res["dpo"]:
        print(f"| {h['step']} | {h.get('loss', math.log(2)):.3f} | {h['heldout_margin']:.3f} | "
              f"{h['heldout_accuracy']:.2f} | {h['heldout_reward_chosen']:.3f} | {h['heldout_reward_rejected']:.3f} |")
    print(f"reward model held-out accuracy: " + ", ".join(f"step {h['step']}: {h['heldout_accuracy']:.2f}" for h in rm_hist))
    return res


@torch.no_grad()
def _rm_acc(rm, batch) -> float:
    rm.eval()
    rc = rm.score(batch["chosen_ids"], batch["chosen_labels"])
    rr = rm.score(batch["rejected_ids"], batch["rejected_labels"])
    rm.train()
    return (rc > rr).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.recipes.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["gpt", "clip", "dpo"])
    ap.add_argument("--base", required=True, help="a GPT run directory / checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--methods", default=None, help="comma-separated subset (gpt: full, lora_r8, lora_r8_attn, "
                                                    "qlora_int4_r8, prefix_16, ptuning_16_mlp, ptuning_16_lstm)")
    ap.add_argument("--source", default="emoji", help="caption corpus to fine-tune on (gpt)")
    ap.add_argument("--lr", type=float, default=None, help="one learning rate for every method (gpt; default: "
                                                          "each method's own)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "gpt":
        kw = {"steps": args.steps} if args.steps else {}
        finetune_gpt(args.base, args.out, source=args.source, lr=args.lr,
                     methods=args.methods.split(",") if args.methods else None, **kw)
    elif args.what == "clip":
        kw = {"steps": args.steps} if args.steps else {}
        finetune_clip(args.base, args.out, methods=args.methods.split(",") if args.methods else None, **kw)
    else:
        preference(args.base, args.out, **({"steps": args.steps} if args.steps else {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
