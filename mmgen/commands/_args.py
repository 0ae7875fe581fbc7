"""Argument types shared by every `mmgen` subcommand (and the evaluation scripts), so a flag
means the same thing and is refused the same way everywhere: argparse turns the
ArgumentTypeError into one line naming the flag ("argument --top-p: expected a number in
[0, 1], got 'nan'") and exit code 2.

    p.add_argument("--guidance", type=finite_float)
    p.add_argument("--top-p", type=unit_float)
    p.add_argument("--temperature", type=non_negative_float)
    p.add_argument("-n", "--num-images", type=positive_int)
    p.add_argument("--device", type=device, default=None)
    p.add_argument("--data-set", type=key_value, action="append", default=[])  # dict(args.data_set)
"""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

__all__ = ["OneLineParser", "finite_float", "non_negative_float", "positive_float", "unit_float", "positive_int",
           "non_negative_int", "key_value", "device", "resolve_device"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D401 (argparse's signature)
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE -> (key, value), the value read as JSON when it parses (3, true, "default",
    [1, 2]) and as the plain string otherwise; `dict()` of a list of them is keyword arguments."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def finite_float(text: str) -> float:
    """A float that is not nan or +-inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A probability-like value in [0, 1] (top-p, min-p; 0 means off where a flag says so)."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def device(text: str) -> str:
    """'cpu', 'cuda', 'cuda:N' or 'mps', refused unless this machine has it (so a run never
    starts, loads a model and then fails on a missing GPU). 'auto' means cuda when available."""
    from mmgen.devices import check_device
    try:
        return str(check_device(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolve_device(value: str | None) -> str:
    """The device a command runs on: the checked --device value, else cuda when available."""
    return device(value) if value is not None else device("auto")
