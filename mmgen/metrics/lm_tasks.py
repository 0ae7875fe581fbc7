"""Evaluation of the language-task recipes (train/recipes/lm_tasks.py); prints tables and
draws the figures of docs/llm.md (the command line: mmgen/commands/lm_tasks.py).

  mmgen lm-tasks icl --model runs/icl --png docs/img/icl_attention.png
  mmgen lm-tasks cot --plain runs/cot_plain --scratchpad runs/cot_scratchpad \\
      --png docs/img/cot_curves.png

icl: query accuracy against the number of in-context examples for the trained model, for
the same model shown the query alone (no context), and for the best possible learner
(memorise every pair seen, guess otherwise); per-head induction and previous-token scores
and an attention picture. cot: greedy exact-match accuracy of both runs per operation and
operand length (lengths past the training ones included), the in-training curves
(teacher-forced exact match of the whole completion = greedy exact match) and a worked
example.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


# ------------------------------------------------------------------------------ attention capture
@torch.no_grad()
def attention_maps(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Causal attention probabilities of every layer of a GPT: [(B, H, T, T)] (recomputed
    from each attention module's input, so the fused kernel is left as it is)."""
    from mmgen.layers.attention import attention_math
    maps, hooks = [], []

    def hook(attn, args, kwargs):
        x = args[0]
        H, Hkv, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q, k, _ = attn.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.unflatten(-1, (H, D)).transpose(1, 2)  # (B, H, T, D)
        k = k.unflatten(-1, (Hkv, D)).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = attn._qk_transform(q, k, kwargs.get("rope"))
        k = k.repeat_interleave(H // Hkv, 1)
        T = x.shape[1]
        s = (q @ k.transpose(-1, -2)) * D ** -0.5  # (B, H, T, T)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
        maps.append(s.softmax(-1))

    for blk in model.transformer.blocks:
        hooks.append(blk.attn.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        model(input_ids)
    finally:
        for h in hooks:
            h.remove()
    del attention_math
    return maps


# ------------------------------------------------------------------------------ in-context learning
@torch.no_grad()
def icl_eval(model, *, n: int = 1024, batch_size: int = 256, split: str = "test", **data_kw) -> dict:
    """Per query index i = 1..k (the i-th pair; i - 1 pairs before it): accuracy of the model,
    of the model without context (the query token alone at position 0), of the best possible
    learner on these very sequences (x_i seen before: right; else 1 / num_y), and the model's
    accuracy split by whether x_i was seen before."""
    from mmgen.data.lm_tasks import ICLDataset, icl_best_accuracy
    ds = ICLDataset(split, length=n, **data_kw)
    k = ds.num_pairs
    correct = np.zeros(k)
    nocontext = np.zeros(k)
    seen_count, seen_right, unseen_right = np.zeros(k), np.zeros(k), np.zeros(k)
    model.eval()
    for lo in range(0, n, batch_size):
        idx = range(lo, min(lo + batch_size, n))
        ids = torch.stack([ds[i]["input_ids"] for i in idx])  # (B, 2k-1)
        xs = np.stack([ds.pairs(i)[0] for i in idx])  # (B, k)
        ys = torch.from_numpy(np.stack([ds.pairs(i)[1] for i in idx])) + ord("A")  # (B, k)
        pred = model(ids)[:, 0::2].argmax(-1)  # predictions at the x positions (B, k)
        right = (pred == ys).numpy()
        correct += right.sum(0)
        # without context: each query alone, (B*k, 1)
        alone = model(torch.from_numpy(xs.reshape(-1, 1) + ord("a")))[:, 0].argmax(-1).view(len(idx), k)
        nocontext += (alone == ys).numpy().sum(0)
        seen = np.array([[x[i] in x[:i] for i in range(k)] for x in xs])  # (B, k)
        seen_count += seen.sum(0)
        seen_right += (right & seen).sum(0)
        unseen_right += (right & ~seen).sum(0)
    best_emp = seen_count / n + (1 - seen_count / n) / ds.num_y
    return {"k": k, "n": n, "num_x": ds.num_x, "num_y": ds.num_y,
            "model": (correct / n).tolist(), "no_context": (nocontext / n).tolist(),
            "best": best_emp.tolist(), "best_formula": icl_best_accuracy(k, ds.num_x, ds.num_y).tolist(),
            "p_seen": (seen_count / n).tolist(),
            "acc_seen": np.where(seen_count > 0, seen_right / np.maximum(seen_count, 1), np.nan).tolist(),
            "acc_unseen": ((unseen_right) / np.maximum(n - seen_count, 1)).tolist()}


@torch.no_grad()
def head_scores(model, ds, n: int = 256) -> dict:
    """Per layer and head: induction score (attention mass from a query x_i whose letter
    appeared before onto the y's that followed its earlier copies) and previous-token score
    (mass of each y on the x just before it)."""
    ids = torch.stack([ds[i]["input_ids"] for i in range(n)])  # (n, T)
    maps = attention_maps(model, ids)
    T = ids.shape[1]
    ind_mask = torch.zeros(n, T, T)
    for b in range(n):
        row = ids[b].tolist()
        for t in range(0, T, 2):  # query positions (x's)
            for j in range(0, t, 2):
                if row[j] == row[t]:
                    ind_mask[b, t, j + 1] = 1.0  # the y after an earlier copy of x_t
    has = ind_mask.sum(-1) > 0  # (n, T) queries with an earlier copy
    prev = torch.zeros(T, T)
    for t in range(1, T, 2):
        prev[t, t - 1] = 1.0
    out = {"induction": [], "previous_token": []}
    for m in maps:  # (n, H, T, T)
        ind = (m * ind_mask[:, None]).sum(-1)  # (n, H, T)
        out["induction"].append(((ind * has[:, None]).sum((0, 2)) / has.sum()).tolist())
        pt = (m * prev).sum(-1)[:, :, 1::2]  # (n, H, y positions)
        out["previous_token"].append(pt.mean((0, 2)).tolist())
    return out


def draw_icl_attention(model, ds, index: int, scores: dict, path: str | Path) -> Path:
    """Every head's attention on one sequence, the strongest induction head drawn large."""
    from PIL import Image

    from .plot import grid, heatmap
    ids = ds[index]["input_ids"][None]
    maps = attention_maps(model, ids)
    text = ds.text(ids[0])
    tiles = []
    for li, m in enumerate(maps):
        for h in range(m.shape[1]):
            t = (f"L{li} H{h}: ind {scores['induction'][li][h]:.2f} "
                 f"prev {scores['previous_token'][li][h]:.2f}")
            tiles.append(heatmap(m[0, h].numpy(), cell=max(4, 200 // m.shape[-1]), title=t))
    small = grid(tiles, maps[0].shape[1], title="attention of every head on one test sequence (rows: queries, "
                                                "columns: keys); ind = induction score, prev = previous-token score")
    li, h = max(((li, h) for li in range(len(maps)) for h in range(maps[li].shape[1])),
                key=lambda lh: scores["induction"][lh[0]][lh[1]])
    big = heatmap(maps[li][0, h].numpy(), cell=max(9, 440 // len(text)), labels=list(text),
                  title=f"layer {li} head {h}: the highest induction score, {scores['induction'][li][h]:.2f} "
                        f"(1 = a repeated x attends only to the y after its earlier copies)")
    out = Image.new("RGB", (max(small.width, big.width), small.height + big.height + 8), "white")
    out.paste(small, (0, 0))
    out.paste(big, ((out.width - big.width) // 2, small.height + 8))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return Path(path)


def draw_icl_curve(r: dict, path: str | Path) -> Path:
    from .plot import line_chart
    x = list(range(r["k"]))
    img = line_chart([
        {"x": x, "y": r["best"], "label": "best possible (memorise pairs seen)", "colour": 2},
        {"x": x, "y": r["model"], "label": "GPT, with context", "colour": 0},
        {"x": x, "y": r["no_context"], "label": "GPT, query alone (no context)", "colour": 3},
    ], title=f"in-context learning of a random {r['num_x']}->{r['num_y']} letter map",
        xlabel="in-context examples before the query", ylabel="query accuracy", ylim=(0, 1))
    img.save(path)
    return Path(path)


def run_icl(args) -> int:
    import mmgen
    from mmgen.data.lm_tasks import ICLDataset
    torch.set_num_threads(args.threads)
    model = mmgen.load_pretrained(args.model).eval()
    rc = _run_config(args.model)
    data_kw = {k: v for k, v in rc.get("data_kwargs", {}).items() if k in ("num_pairs", "num_x", "num_y")}
    r = icl_eval(model, n=args.n, **data_kw)
    ds = ICLDataset("test", length=max(args.n, 256), **data_kw)
    r["heads"] = head_scores(model, ds, min(256, args.n))
    print(f"in-context learning: {args.model}, {r['n']} test sequences of {r['k']} pairs, "
          f"{r['num_x']} x letters -> {r['num_y']} y letters (chance {1 / r['num_y']:.3f})")
    print("| examples before the query | P(query seen before) | best possible | GPT | GPT, seen x | GPT, unseen x "
          "| GPT, no context |")
    print("|---|---|---|---|---|---|---|")
    for i in list(range(0, 8)) + list(range(8, r["k"], 4)) + [r["k"] - 1]:
        if i >= r["k"] or (i >= 8 and i % 4 and i != r["k"] - 1):
            continue
        seen = r["acc_seen"][i]
        print(f"| {i} | {r['p_seen'][i]:.3f} | {r['best'][i]:.3f} | {r['model'][i]:.3f} | "
              f"{'-' if seen != seen else f'{seen:.3f}'} | {r['acc_unseen'][i]:.3f} | {r['no_context'][i]:.3f} |")
    mean = lambda v: float(np.mean(v))
    print(f"| mean over all {r['k']} queries | {mean(r['p_seen']):.3f} | {mean(r['best']):.3f} | "
          f"{mean(r['model']):.3f} | | | {mean(r['no_context']):.3f} |")
    print("\nper-head scores (induction: attention from a repeated x onto the y after its earlier copies; "
          "previous token: from each y onto its x)")
    for li, (ind, prev) in enumerate(zip(r["heads"]["induction"], r["heads"]["previous_token"])):
        print(f"  layer {li}: induction " + " ".join(f"{v:.2f}" for v in ind)
              + " | previous token " + " ".join(f"{v:.2f}" for v in prev))
    ex = ds.text(ds[0]["input_ids"])
    pred = model(ds[0]["input_ids"][None])[0, 0::2].argmax(-1).tolist()
    print(f"\nexample (test sequence 0): {ex}\n  model's answers at each x: {bytes(pred).decode(errors='replace')}")
    if args.png:
        draw_icl_attention(model, ds, 0, r["heads"], args.png)
        print(f"attention picture -> {args.png}")
    if args.curve_png:
        draw_icl_curve(r, args.curve_png)
        print(f"accuracy curve -> {args.curve_png}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


# ------------------------------------------------------------------------------ chain of thought
@torch.no_grad()
def cot_accuracy(model, scratchpad: bool, *, op: str, digits: int, n: int = 100, seed: int = 0,
                 split: str = "test") -> dict:
    """Greedy exact-match accuracy on n problems with `digits`-digit operands; for the
    scratchpad format also the share whose scratchpad checks out step by step."""
    from mmgen.data.lm_tasks import ArithmeticDataset, format_problem, parse_completion
    ds = ArithmeticDataset(split, scratchpad=scratchpad, ops=(op,), min_digits=digits, max_digits=digits,
                           length=n, seed=seed, pack=True)  # pack: no block-size check
    rng = np.random.default_rng([seed, 99, digits, 0 if op == "add" else 1])
    probs = [ds.problem(rng, op, digits) for _ in range(n)]
    prompts, comps = zip(*(format_problem(*p, scratchpad) for p in probs))
    longest = max(len(c) for c in comps) + 4
    T = len(prompts[0])
    max_new = min(longest, model.config.context_length - T)
    outs = model.generate([list(p.encode()) for p in prompts], max_new, temperature=0.0,
                          stop=[[10]])  # greedy, stop at the newline
    right = valid = 0
    for (o, a, b), prompt, out in zip(probs, prompts, outs):
        text = bytes(t for t in out if t < 256).decode(errors="replace")
        want = a + b if o == "add" else a * b
        try:
            got = parse_completion(prompt, text, check=False)
        except ValueError:
            continue
        right += got == want
        if scratchpad:
            try:
                parse_completion(prompt, text, check=True)
                valid += 1
            except ValueError:
                pass
    return {"op": op, "digits": digits, "n": n, "exact": right / n, **({"valid_scratchpad": valid / n}
                                                                        if scratchpad else {})}


def _run_config(path) -> dict:
    f = Path(path) / "run_config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _metrics(path) -> list[dict]:
    f = Path(path) / "metrics.jsonl"
    return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []


def run_cot(args) -> int:
    import mmgen
    from .plot import grid, line_chart
    torch.set_num_threads(args.threads)
    runs = {"plain": args.plain, "scratchpad": args.scratchpad}
    results: dict = {"runs": {}}
    digits = list(range(1, args.max_digits + 1))
    for name, path in runs.items():
        if not path:
            continue
        model = mmgen.load_pretrained(path).eval()
        rc = _run_config(path)
        train_digits = rc.get("data_kwargs", {}).get("max_digits", 4)
        hist = _metrics(path)
        wall = sum(1 / h["steps_per_s"] * (h["step"] - p["step"]) for p, h in
                   zip([{"step": 0}] + [x for x in hist if "steps_per_s" in x],
                       [x for x in hist if "steps_per_s" in x]))
        rows = [cot_accuracy(model, name == "scratchpad", op=op, digits=d, n=args.n)
                for op in ("add", "mul") for d in digits]
        curve = [{"step": h["step"], **{k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("val/")}}
                 for h in hist if "val/seq_exact" in h]
        results["runs"][name] = {"path": path, "train_max_digits": train_digits, "rows": rows, "curve": curve,
                                 "steps": rc.get("train", {}).get("steps"), "train_wall_s": wall,
                                 "params": sum(p.numel() for p in model.parameters())}
        ex = args.example
        out = model.generate([list(ex.encode())], min(80, model.config.context_length - len(ex)), temperature=0.0,
                             stop=[[10]])[0]
        results["runs"][name]["example"] = ex + bytes(t for t in out if t < 256).decode(errors="replace").rstrip("\n")
    for name, r in results["runs"].items():
        print(f"\n{name}: {r['path']} ({r['params']:,} parameters, {r['steps'] or '?'} steps, {r['train_wall_s'] / 60:.1f} "
              f"min of training steps; trained on 1-{r['train_max_digits']} digit operands)")
        print(f"  worked example (greedy): {r['example']}")
    names = list(results["runs"])
    print(f"\ngreedy exact match, {args.n} problems per cell (addition: two n-digit numbers; multiplication: "
          "an n-digit number times one digit); * = longer than any training operand")
    print("| operation | digits | " + " | ".join(names) + (" | scratchpad steps all right |" if "scratchpad" in names
                                                            else " |"))
    print("|---|---|" + "---|" * len(names) + ("---|" if "scratchpad" in names else ""))
    td = max((r["train_max_digits"] or 0) for r in results["runs"].values())
    for i, (op, d) in enumerate((op, d) for op in ("add", "mul") for d in digits):
        cells = [f"{results['runs'][nm]['rows'][i]['exact']:.2f}" for nm in names]
        extra = (f" | {results['runs']['scratchpad']['rows'][i]['valid_scratchpad']:.2f}"
                 if "scratchpad" in names else "")
        print(f"| {'a+b' if op == 'add' else 'a*d'} | {d}{'*' if d > td else ''} | " + " | ".join(cells) + extra + " |")
    if any(r["curve"] for r in results["runs"].values()):
        print("\nin-distribution exact match during training (val, teacher-forced whole completion = greedy)")
        steps = sorted({c["step"] for r in results["runs"].values() for c in r["curve"]})
        print("| step | " + " | ".join(f"{nm} add | {nm} mul" for nm in names) + " |")
        print("|---|" + "---|---|" * len(names))
        by = {nm: {c["step"]: c for c in results["runs"][nm]["curve"]} for nm in names}
        for s in steps:
            if s % args.every and s != steps[-1]:
                continue
            cells = []
            for nm in names:
                c = by[nm].get(s, {})
                cells += [f"{c.get('seq_exact_add', float('nan')):.2f}", f"{c.get('seq_exact_mul', float('nan')):.2f}"]
            print(f"| {s} | " + " | ".join(cells) + " |")
    if args.png:
        panels = []
        for op, label in (("add", "addition"), ("mul", "multiplication by a digit")):
            series = []
            for j, nm in enumerate(names):
                c = results["runs"][nm]["curve"]
                series.append({"x": [x["step"] for x in c], "y": [x.get(f"seq_exact_{op}", 0) for x in c],
                               "label": nm, "colour": j})
            panels.append(line_chart(series, title=f"{label}: exact match vs steps (1-{td} digits)",
                                     xlabel="training step", ylabel="exact match", ylim=(0, 1)))
        for op, label in (("add", "addition"), ("mul", "multiplication by a digit")):
            series = []
            for j, nm in enumerate(names):
                rows = [r for r in results["runs"][nm]["rows"] if r["op"] == op]
                series.append({"x": [r["digits"] for r in rows], "y": [r["exact"] for r in rows], "label": nm,
                               "colour": j})
            panels.append(line_chart(series, title=f"{label}: exact match vs operand length (trained 1-{td})",
                                     xlabel="digits", ylabel="exact match", ylim=(0, 1)))
        grid(panels, 2).save(args.png)
        print(f"\ncurves -> {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
