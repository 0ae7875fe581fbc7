"""`mmgen text "PROMPT" --checkpoint DIR`: stream a continuation from a GPT checkpoint."""
from __future__ import annotations

import sys

from ._args import device, non_negative_float, non_negative_int, positive_float, positive_int, unit_float


def register(sub) -> None:
    p = sub.add_parser("text", help="continue a text prompt with a GPT checkpoint (streams to stdout)")
    p.add_argument("prompt", help="the text to continue ('' starts from BOS)")
    p.add_argument("--checkpoint", required=True, help="a GPT checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name (byte, clip_bpe); default: the checkpoint's tokenizer.json, else byte")
    p.add_argument("--max-new-tokens", "-n", type=positive_int, default=200)
    p.add_argument("--temperature", "-t", type=non_negative_float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=non_negative_int, default=None)
    p.add_argument("--top-p", type=unit_float, default=None)
    p.add_argument("--min-p", type=unit_float, default=None)
    p.add_argument("--repetition-penalty", type=positive_float, default=1.0)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overflow", choices=("slide", "error"), default="slide",
                   help="when prompt + --max-new-tokens exceeds the model's context: slide (default: keep "
                        "generating from the most recent tokens) or error")
    p.add_argument("--device", type=device, default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    p.set_defaults(func=run)


def load_tokenizer_for(checkpoint: str, name: str | None):
    from pathlib import Path

    from mmgen.text import get_tokenizer, load_tokenizer
    if name:
        return get_tokenizer(name)
    if (Path(checkpoint) / "tokenizer.json").is_file():
        return load_tokenizer(checkpoint)
    return get_tokenizer("byte")


def run(args) -> int:
    import torch

    import mmgen
    from mmgen.models.gpt import GPT
    model = mmgen.load_pretrained(args.checkpoint, map_location=args.device)
    if not isinstance(model, GPT):
        raise ValueError(f"{args.checkpoint!r} holds a {model.model_type!r} model; `mmgen text` needs a GPT")
    tok = load_tokenizer_for(args.checkpoint, args.tokenizer)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer {tok!r} has {tok.vocab_size} ids but the model only {model.config.vocab_size}; "
                         "pick the tokenizer the model was trained with (--tokenizer)")
    ids = tok.encode(args.prompt) or [tok.bos_id]
    ctx = model.config.context_length
    if len(ids) > ctx:
        raise ValueError(f"the prompt is {len(ids)} tokens, longer than the model's context of {ctx}; shorten it")
    if len(ids) + args.max_new_tokens > ctx:
        if args.overflow == "error":
            raise ValueError(f"prompt of {len(ids)} tokens + --max-new-tokens {args.max_new_tokens} exceeds the "
                             f"context of {ctx} tokens; lower --max-new-tokens or pass --overflow slide")
        print(f"mmgen text: note: prompt + {args.max_new_tokens} new tokens exceed the model's {ctx}-token context; "
              f"the window slides (each new token sees the latest {ctx // 2} to {ctx} tokens)", file=sys.stderr)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    gen: list[int] = []
    printed = 0
    with torch.inference_mode():
        for step in model.stream_generate(
                [ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                min_p=args.min_p, repetition_penalty=args.repetition_penalty, stop=args.stop,
                eos_id=tok.eos_id, seed=args.seed, tokenizer=tok, overflow=args.overflow):
            if step[0] is None:
                break
            gen.append(step[0])
            text = tok.decode(gen)
            if text.endswith("\ufffd"):  # a multi-byte character is still arriving
                continue
            out.write(text[printed:])
            out.flush()
            printed = len(text)
    out.write(tok.decode(gen)[printed:] + "\n")
    out.flush()
    return 0
