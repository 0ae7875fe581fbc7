"""`mmgen train ...`: the training engine (the same as `python -m train ...` in the repository)."""
from __future__ import annotations


def register(sub) -> None:
    # Listed here for `mmgen --help`; mmgen.cli.main hands `mmgen train ...` to the engine before
    # parsing, so the engine's own flags (--help included) reach it untouched.
    sub.add_parser("train", help="train a preset or recipe (see `mmgen train --help`)", add_help=False)
