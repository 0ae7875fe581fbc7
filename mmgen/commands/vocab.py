"""`mmgen vocab MODEL`: the words a generator's prompt readers (its tokenizer, text encoder
and CLIP reranker) can all read; prompts made of these words are understood."""
from __future__ import annotations

import textwrap


def register(sub) -> None:
    p = sub.add_parser("vocab", help="list the words an image generator can read in a prompt",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a shipped checkpoint (dalle_shapes, dalle_emoji, ddpm_shapes) or a checkpoint "
                                 "directory")
    p.add_argument("-1", "--one-per-line", action="store_true", help="one word per line (for scripts)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.pipelines import load_pipeline
    pipe = load_pipeline(args.model)
    cfg = pipe.model.config
    if pipe.kind == "ddpm" and cfg.conditioning != "text":
        names = list(getattr(cfg, "class_names", ()) or ())
        if cfg.conditioning == "class":
            print("class-conditional model: prompts are class names or labels 0.."
                  f"{cfg.num_classes - 1}" + (f": {', '.join(names)}" if names else ""))
        else:
            print("unconditional model: it reads no prompt")
        return 0
    words = pipe.vocabulary()
    if not words:
        print(f"{args.model} reads any text (byte-level tokenizer): there is no word list")
        return 0
    if args.one_per_line:
        print("\n".join(words))
        return 0
    parts = " and ".join(r.name for r in pipe.readers())
    print(f"{len(words)} words that {parts} can read:")
    print(textwrap.fill(" ".join(words), width=100, break_on_hyphens=False))
    return 0
