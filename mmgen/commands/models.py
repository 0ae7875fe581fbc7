"""`mmgen models [PATTERN]`: list registered presets with their parameter counts."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered model presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vit_*'")
    p.add_argument("--params", action="store_true", help="build each model and print its parameter count")
    p.set_defaults(func=run)


def run(args) -> int:
    import mmgen
    from mmgen.registry import get_preset
    names = mmgen.list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    for name in names:
        line = f"{name:36s} {get_preset(name).model_cls.model_type:8s}"
        if args.params:
            import torch
            with torch.device("meta"):
                line += f" {mmgen.create_model(name).num_params() / 1e6:9.2f}M"
        print(line)
    return 0
