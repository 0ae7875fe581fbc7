"""Decoder acceleration in one run, each against the plain KV-cache decoder (`GPT.generate`):
int8 weight-only quantised linears, speculative decoding with a small draft model, and a
static KV cache with torch.compile (compile time reported separately, then the steady
state). Greedy decoding of the same prompt; tokens/s at the median of interleaved repeats,
weight and KV-cache memory, and whether the output equals the plain decoder's.

  python -m bench llm                                     # random weights (speed only)
  python bench/bench_llm.py --target runs/base --draft runs/draft --tokens 96

With trained checkpoints (`--target/--draft`, mmgen run directories) the draft's acceptance
rate is meaningful; with random weights it is not.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import compare, print_table  # noqa: E402


def _load(path: str | None, preset: str, **overrides):
    import mmgen
    if path:
        return mmgen.load_pretrained(path).eval()
    torch.manual_seed(0)
    return mmgen.create_model(preset, **overrides).eval()


def linear_micro(shapes=((768, 3072), (2048, 8192)), tokens: int = 1, repeats: int = 20) -> None:
    """One decode-sized matmul (x of `tokens` rows) through an fp32 nn.Linear and its int8
    QuantLinear: where weight bytes, not Python, dominate."""
    from mmgen.finetune import QuantLinear
    rows = []
    for i, o in shapes:
        torch.manual_seed(0)
        lin = torch.nn.Linear(i, o)
        q = QuantLinear.from_linear(lin, 8)
        x = torch.randn(tokens, i)
        with torch.no_grad():
            t = compare({"fp32": lambda: lin(x), "int8": lambda: q(x)}, warmup=3, repeats=repeats)
            err = ((q(x) - lin(x)).norm() / lin(x).norm()).item()
        rows.append([f"{i}x{o}", t["fp32"].median_s * 1e6, t["int8"].median_s * 1e6,
                     t["fp32"].median_s / t["int8"].median_s, lin.weight.numel() * 4 / 1e6, q.qweight.numel() / 1e6, err])
    print_table(f"one Linear, {tokens} token(s): fp32 vs int8 weight-only",
                ["shape", "fp32 us", "int8 us", "speed-up", "fp32 MB", "int8 MB", "rel. error"], rows)


def main(argv: list[str] | None = None) -> None:
    from mmgen.finetune import model_bytes, quantize_model
    from mmgen.text.speculative import speculative_generate
    from mmgen.text.static import StaticDecoder

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None, help="run directory of the target (default: random preset)")
    ap.add_argument("--draft", default=None, help="run directory of the draft")
    ap.add_argument("--preset", default="gpt_char_shakespeare_cpu")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--num-draft", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args([] if argv is None else argv)

    target = _load(args.target, args.preset)
    draft = _load(args.draft, args.preset, depth=1, embed_dim=64)
    prompt = list(b"ROMEO:\nWhat light through yonder window breaks?\n")[: target.config.context_length // 4]
    N = args.tokens
    qtarget = copy.deepcopy(target)
    quantize_model(qtarget, 8)
    c = target.transformer.cfg
    kv_bytes = 2 * c.depth * (len(prompt) + N) * c.resolved_kv_heads * c.resolved_head_dim * 4

    ref = target.generate(prompt, N, temperature=0)[0]
    static_eager = StaticDecoder(target, 1, len(prompt) + N, compile=False)
    results, stats = {}, {}
    fns = {
        "plain (KV cache)": lambda: target.generate(prompt, N, temperature=0)[0],
        "int8 weight-only": lambda: qtarget.generate(prompt, N, temperature=0)[0],
        f"speculative (draft {draft.num_params() / 1e6:.2f}M, k={args.num_draft})":
            lambda: speculative_generate(target, draft, prompt, N, num_draft=args.num_draft, temperature=0),
        "static KV (eager)": lambda: static_eager.generate([prompt], N, temperature=0)[0],
    }
    compile_note = "skipped (--no-compile)"
    if not args.no_compile:
        static = StaticDecoder(target, 1, len(prompt) + N, compile=True)
        t0 = time.perf_counter()
        static.generate([prompt], N, temperature=0)  # compiles the one decode step
        warm = time.perf_counter() - t0
        if static.compile_error:
            compile_note = f"compile failed, eager fallback: {static.compile_error[:120]}"
        else:
            compile_note = f"first call {warm:.1f} s (compile {static.compile_s:.1f} s)"
        fns["static KV + torch.compile"] = lambda: static.generate([prompt], N, temperature=0)[0]
    outs = {k: f() for k, f in fns.items()}
    with torch.no_grad():
        timings = compare(fns, warmup=1, repeats=args.repeats)
    _, st = speculative_generate(target, draft, prompt, N, num_draft=args.num_draft, temperature=0, return_stats=True)
    base = timings["plain (KV cache)"].rate(N)
    rows = []
    for name, t in timings.items():
        wb = model_bytes(qtarget) if name.startswith("int8") else model_bytes(target)
        if name.startswith("speculative"):
            wb += model_bytes(draft)
        rows.append([name, t.rate(N), t.rate(N) / base, wb / 1e6, kv_bytes / 1e6, "yes" if outs[name] == ref else "no"])
    print_table(f"greedy decoding, batch 1, {len(prompt)}-token prompt + {N} new tokens, "
                f"{target.num_params() / 1e6:.2f}M-param target ({'trained' if args.target else 'random'}), "
                f"{torch.get_num_threads()} threads",
                ["decoder", "tokens/s", "x plain", "weights MB", "KV cache MB", "same output"], rows)
    print(f"speculative: acceptance {st.acceptance:.2f}, {st.target_calls} target forwards for {N} tokens "
          f"(plain: {N}), {st.draft_calls} draft forwards")
    print(f"torch.compile: {compile_note}")
    linear_micro()


if __name__ == "__main__":
    main(sys.argv[1:])
