"""GPT decoding and training throughput, in one run:

1. decode rate with and without the KV cache at context lengths 64, 256 and 1024
   (GPT-2 small shape, batch 1: one new token after L-1 cached tokens, against a full
   forward over L tokens);
2. `GPT.generate` against transformers' `GPT2LMHeadModel.generate` on the same weights
   (greedy, KV cache on both sides, outputs checked equal);
3. training tokens/s and MFU of the char-level presets, against the matmul peak measured
   in this same run.

`python -m bench gpt` (or `python bench/bench_gpt.py --quick` for a short run).
"""
from __future__ import annotations

import argparse

import torch

from bench.timing import autocast, compare, matmul_peak_flops, measure, print_table


def _hf_gpt2(context: int, dim: int, depth: int, heads: int, vocab: int):
    import transformers
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=context, n_embd=dim, n_layer=depth, n_head=heads,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def decode_table(ours, lengths, repeats: int) -> None:
    rows = []
    V = ours.config.vocab_size
    for L in lengths:
        ids = torch.randint(0, V, (1, L))
        cache = ours.make_cache(1, L)
        with torch.inference_mode():
            ours(ids[:, :-1], cache=cache)  # fill L-1 positions

            def cached():
                logits = ours(ids[:, -1:], cache=cache, start=L - 1)
                return logits[:, -1].argmax(-1)

            def uncached():
                return ours(ids)[:, -1].argmax(-1)

            t_c = measure(cached, warmup=2, repeats=max(repeats, 5))
            t_u = measure(uncached, warmup=1, repeats=max(1, repeats // (1 + L // 256)))
        rows.append([L, 1 / t_c.median_s, 1 / t_u.median_s, t_u.median_s / t_c.median_s])
    print_table("GPT-2 small shape: decode rate at context length L (batch 1, fp32)",
                ["L", "KV cache tok/s", "no cache tok/s", "cache speed-up"], rows)


def generate_table(ours, hf, new_tokens, repeats: int, prompt_len: int = 8) -> None:
    rows = []
    V = ours.config.vocab_size
    prompt = torch.randint(0, V, (1, prompt_len))
    with torch.inference_mode():  # warm both sides up once on a short run
        ours.generate(prompt, 8, temperature=0)
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False, pad_token_id=0)
    for N in new_tokens:
        with torch.inference_mode():
            ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N, min_new_tokens=N,
                              do_sample=False, pad_token_id=0)[:, prompt_len:].tolist()
            same = ours.generate(prompt, N, temperature=0) == ref
            res = compare({
                "mmgen": lambda: ours.generate(prompt, N, temperature=0),
                "hf": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N,
                                          min_new_tokens=N, do_sample=False, pad_token_id=0),
            }, warmup=0, repeats=repeats)
        rows.append([N, res["mmgen"].rate(N), res["hf"].rate(N), res["hf"].median_s / res["mmgen"].median_s,
                     "yes" if same else "NO"])
    print_table(f"generate: mmgen GPT vs transformers GPT2LMHeadModel (same weights, greedy, KV cache, "
                f"batch 1, {prompt_len}-token prompt, fp32)",
                ["new tokens", "mmgen tok/s", "HF tok/s", "ratio (>1: mmgen faster)", "same tokens"], rows)


def train_table(presets, repeats: int) -> None:
    import mmgen
    peaks = {dt: matmul_peak_flops(dt) for dt in ("fp32", "bf16")}
    rows = []
    for name, batch, seq in presets:
        torch.manual_seed(0)
        model = mmgen.create_model(name, dropout=0.0).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1))
        b = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
        fpt = model.flops_per_token(seq)
        for dt in ("fp32", "bf16"):
            def step():
                with autocast(dt):
                    loss, _ = model.loss(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            t = measure(step, warmup=2, repeats=repeats)
            tok_s = t.rate(batch * seq)
            rows.append([name, f"{batch}x{seq}", dt, f"{model.num_params() / 1e6:.2f}M", tok_s,
                         fpt * tok_s / 1e9, 100 * fpt * tok_s / peaks[dt]])
    print_table(f"GPT training step (fwd+bwd+AdamW); matmul peak measured now: fp32 {peaks['fp32'] / 1e9:.0f}, "
                f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
                ["preset", "batch", "dtype", "params", "tok/s", "GFLOP/s", "MFU %"], rows)


def main(quick: bool = False, only: tuple[str, ...] = ("decode", "generate", "train")) -> None:
    from mmgen.models.convert import gpt_from_hf_gpt2
    hf = _hf_gpt2(context=1024, dim=768, depth=12, heads=12, vocab=50257)  # GPT-2 small (124M), random weights
    ours = gpt_from_hf_gpt2(hf)
    reps = 2 if quick else 3
    if "decode" in only:
        decode_table(ours, [64, 256] if quick else [64, 256, 1024], repeats=reps)
    if "generate" in only:
        generate_table(ours, hf, [32] if quick else [64], repeats=2)
    if "train" in only:
        train_table([("gpt_char_shakespeare_cpu", 16, 128), ("gpt_char_shakespeare", 8, 256)],
                    repeats=3 if quick else 5)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--only", default="decode,generate,train", help="comma-separated: decode, generate, train")
    args = ap.parse_args()
    main(args.quick, tuple(args.only.split(",")))
