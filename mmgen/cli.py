"""The `mmgen` command. Each module of mmgen.commands adds its subcommand through
`register(subparsers)`, so features plug in without editing this file."""
from __future__ import annotations

import importlib
import pkgutil
import sys


def build_parser():
    from mmgen.commands._args import OneLineParser  # usage errors: one line, exit code 2

    parser = OneLineParser(prog="mmgen", description="Small multimodal generative models.")
    parser.add_argument("--version", action="version", version=f"mmgen {__import__('mmgen').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import mmgen.commands as pkg
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"mmgen.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # the engine parses its own flags, --help included
        from mmgen.train import main as train_main

        return train_main(argv[1:], prog="mmgen train")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, TypeError) as e:  # user errors: a message, no traceback
        print(f"mmgen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
