"""Synthetic language tasks for the text decoder: in-context learning and arithmetic with or
without a step-by-step scratchpad (chain of thought). Every item is generated from a seed
derived from (split, index), so splits are reproducible and never share a sequence.

``icl``: each sequence holds ``num_pairs`` pairs ``x y`` of a random function f drawn fresh
for that sequence, from ``num_x`` lowercase letters to ``num_y`` uppercase letters
(Garg et al. 2022 use random functions per sequence; this is the token-to-token version).
The bytes ``"aKcBaK..."`` are the sequence (byte tokenizer: ``mmgen text`` reads them);
labels are set only where the next token is a y, so the loss and the accuracy are the
query accuracy: predict f(x_i) from x_i and the i - 1 pairs before it. A learner that
memorises the pairs it has seen answers f(x_i) whenever x_i appeared earlier and guesses
otherwise: its accuracy is P(seen) + (1 - P(seen)) / num_y, with
P(seen) = 1 - (1 - 1/num_x)^(i - 1) (`icl_best_accuracy`).

``arithmetic``: ``a+b=`` and ``a*b=`` problems (addition of two n-digit numbers,
multiplication of an n-digit number by a digit), answered plainly (``367+485=852``) or
after a scratchpad that works digit by digit from the right with the carry written out
(Lee et al. 2023, "Teaching Arithmetic to Small Transformers")::

    367+485=[7+5+0=12 6+8+1=15 3+4+1=8]852
    367*8=[7*8+0=56 6*8+5=53 3*8+5=29]2936

Training rows pack whole examples (each ending in a newline) into ``block_size`` tokens,
so both formats cost the same compute per row; the loss covers only what follows ``=``.
Evaluation items (``pack=False``, the val / test default) hold one example each, padded,
with the problem text in ``prompt`` and the full completion in ``completion``.
"""
from __future__ import annotations

import re

import numpy as np
import torch

BYTE_PAD = 258  # the byte tokenizer's pad id (mmgen.text.ByteTokenizer)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
OPS = ("add", "mul")
_SYMBOL = {"add": "+", "mul": "*"}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
    return np.random.default_rng([seed, _SPLIT_IDS[split], index])


# ------------------------------------------------------------------------------ in-context learning
class ICLDataset(torch.utils.data.Dataset):
    """Sequences of ``num_pairs`` (x, f(x)) pairs of a fresh random f per sequence.

    Item: ``{"input_ids": (2k-1,), "labels": (2k-1,)}`` byte ids; labels are -100 except at
    the x positions, whose label is f(x). ``pairs(i)`` gives the (x, y) index pairs and the
    function of sequence i."""

    def __init__(self, split: str = "train", *, num_pairs: int = 32, num_x: int = 16, num_y: int = 16,
                 length: int | None = None, seed: int = 0):
        if not 1 <= num_x <= 26 or not 2 <= num_y <= 26:
            raise ValueError(f"num_x must be in [1, 26] and num_y in [2, 26] (letters), got {num_x}, {num_y}")
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        _rng(seed, split, 0)  # validates the split
        self.split, self.num_pairs, self.num_x, self.num_y, self.seed = split, num_pairs, num_x, num_y, seed
        # train: effectively endless (a fresh function per sequence); val / test: fixed sets
        self.length = length if length is not None else (1_000_000 if split == "train" else 2048)
        self.vocab_size = 259

    def __len__(self) -> int:
        return self.length

    def function(self, i: int) -> np.ndarray:
        """f as an array: f[x] = y (indices)."""
        return _rng(self.seed, self.split, i).integers(0, self.num_y, self.num_x)

    def pairs(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs, ys, f) of sequence i: xs (k,), ys = f[xs] (k,)."""
        rng = _rng(self.seed, self.split, i)
        f = rng.integers(0, self.num_y, self.num_x)
        xs = rng.integers(0, self.num_x, self.num_pairs)
        return xs, f[xs], f

    def tokens(self, i: int) -> torch.Tensor:
        xs, ys, _ = self.pairs(i)
        seq = np.empty(2 * self.num_pairs, dtype=np.int64)
        seq[0::2], seq[1::2] = xs + ord("a"), ys + ord("A")  # x1 y1 x2 y2 ... as bytes
        return torch.from_numpy(seq)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for icl {self.split} of length {self.length}")
        seq = self.tokens(i)  # (2k,)
        labels = seq[1:].clone()
        labels[1::2] = -100  # targets that are x's (unpredictable): no loss
        return {"input_ids": seq[:-1], "labels": labels}

    @staticmethod
    def text(ids) -> str:
        return bytes(int(t) for t in ids).decode("ascii")


def icl_best_accuracy(num_pairs: int, num_x: int, num_y: int) -> np.ndarray:
    """Accuracy of the memorise-and-guess learner at queries 1..num_pairs (x uniform)."""
    i = np.arange(1, num_pairs + 1)
    seen = 1.0 - (1.0 - 1.0 / num_x) ** (i - 1)
    return seen + (1.0 - seen) / num_y


def icl(split: str = "train", **kw) -> ICLDataset:
    """``build_dataset("icl", split, num_pairs=32, num_x=16, num_y=16)``."""
    return ICLDataset(split, **kw)


# ------------------------------------------------------------------------------ arithmetic
def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]  # least significant first


def add_scratchpad(a: int, b: int) -> str:
    """``[7+5+0=12 6+8+1=15 3+4+1=8]``: one step per digit from the right, carry written."""
    da, db = _digits(a), _digits(b)
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return "[" + " ".join(steps) + "]"


def mul_scratchpad(a: int, b: int) -> str:
    """``[7*8+0=56 6*8+5=53 3*8+5=29]`` for a * b with b a single digit."""
    if not 0 <= b <= 9:
        raise ValueError(f"the multiplication scratchpad multiplies by one digit, got b={b}")
    steps, carry = [], 0
    for x in _digits(a):
        s = x * b + carry
        steps.append(f"{x}*{b}+{carry}={s}")
        carry = s // 10
    return "[" + " ".join(steps) + "]"


def format_problem(op: str, a: int, b: int, scratchpad: bool) -> tuple[str, str]:
    """(prompt, completion): ``("367+485=", "852\\n")`` or with the scratchpad before the answer."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    answer = a + b if op == "add" else a * b
    pad = (add_scratchpad(a, b) if op == "add" else mul_scratchpad(a, b)) if scratchpad else ""
    return f"{a}{_SYMBOL[op]}{b}=", f"{pad}{answer}\n"


_STEP = {"add": re.compile(r"^(\d)\+(\d)\+(\d)=(\d+)$"), "mul": re.compile(r"^(\d)\*(\d)\+(\d)=(\d+)$")}
_PROMPT = re.compile(r"^(\d+)([+*])(\d+)=$")


def parse_completion(prompt: str, completion: str, *, check: bool = True) -> int:
    """The answer of a completion (newline optional). With a scratchpad and ``check``, every
    step must be right (digits of the operands in order, the carry of the step before, the
    sum / product) and the answer must be the digits the steps produce (each step's last
    digit, then the final carry); anything else raises ValueError saying what is wrong."""
    m = _PROMPT.match(prompt)
    if m is None:
        raise ValueError(f"not a problem prompt: {prompt!r} (expected like '367+485=')")
    a, op, b = int(m.group(1)), "add" if m.group(2) == "+" else "mul", int(m.group(3))
    text = completion.split("\n", 1)[0]
    pad = None
    if text.startswith("["):
        if "]" not in text:
            raise ValueError(f"unclosed scratchpad in {text!r}")
        pad, text = text[1:].split("]", 1)
    if not text.isdigit():
        raise ValueError(f"no answer after the scratchpad in {completion!r}" if pad is not None
                         else f"answer {text!r} is not a number")
    answer = int(text)
    if pad is None or not check:
        return answer
    da = _digits(a)
    db = _digits(b) if op == "add" else None
    steps = pad.split(" ") if pad else []
    n = max(len(da), len(db)) if op == "add" else len(da)
    if len(steps) != n:
        raise ValueError(f"scratchpad has {len(steps)} steps, the operands need {n}: {pad!r}")
    carry, out = 0, []
    for i, st in enumerate(steps):
        sm = _STEP[op].match(st)
        if sm is None:
            raise ValueError(f"step {i} {st!r} is not of the form " + ("x+y+c=s" if op == "add" else "x*d+c=s"))
        x, y, c, s = (int(g) for g in sm.groups())
        want_x = da[i] if i < len(da) else 0
        want_y = (db[i] if i < len(db) else 0) if op == "add" else b
        if (x, y) != (want_x, want_y):
            raise ValueError(f"step {i} {st!r} uses digits {x}, {y}; the operands' digits are {want_x}, {want_y}")
        if c != carry:
            raise ValueError(f"step {i} {st!r} carries {c}; the step before left {carry}")
        if s != (x + y + c if op == "add" else x * y + c):
            raise ValueError(f"step {i} {st!r} is wrong arithmetic")
        out.append(s % 10)
        carry = s // 10
    digits = str(carry) if carry else ""
    digits += "".join(str(d) for d in reversed(out))
    built = int(digits or "0")
    if built != answer:
        raise ValueError(f"the steps give {built} but the answer says {answer}")
    return answer


class ArithmeticDataset(torch.utils.data.Dataset):
    """Addition / multiplication problems as bytes, plain or with a scratchpad.

    ``digits``: operand lengths drawn uniformly from [min_digits, max_digits] (addition:
    both operands that long; multiplication: the first, times one digit 0-9).
    ``pack=True`` (train default): rows of ``block_size`` tokens packed with whole examples,
    loss on the completions only. ``pack=False`` (val / test default): one example per row,
    padded to ``block_size``, with ``task`` ("add" / "mul", alternating), ``prompt`` and
    ``completion`` strings."""

    def __init__(self, split: str = "train", *, scratchpad: bool = False, ops=OPS, min_digits: int = 1,
                 max_digits: int = 4, block_size: int = 128, pack: bool | None = None,
                 length: int | None = None, seed: int = 0):
        ops = tuple(ops.split(",")) if isinstance(ops, str) else tuple(ops)
        bad = [o for o in ops if o not in OPS]
        if bad or not ops:
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {ops!r}")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        _rng(seed, split, 0)
        self.split, self.scratchpad, self.ops, self.seed = split, bool(scratchpad), ops, seed
        self.min_digits, self.max_digits, self.block_size = min_digits, max_digits, block_size
        self.pack = (split == "train") if pack is None else bool(pack)
        self.length = length if length is not None else (1_000_000 if split == "train" else 1000)
        self.vocab_size = 259
        longest = sum(len(s) for s in format_problem(ops[-1], 10 ** max_digits - 1, 9 if ops[-1] == "mul"
                                                     else 10 ** max_digits - 1, self.scratchpad))
        if not self.pack and longest > block_size:
            raise ValueError(f"a {max_digits}-digit example takes up to {longest} tokens, more than "
                             f"block_size={block_size}")

    def __len__(self) -> int:
        return self.length

    def problem(self, rng: np.random.Generator, op: str | None = None, digits: int | None = None):
        op = op or self.ops[int(rng.integers(len(self.ops)))]
        n = digits or int(rng.integers(self.min_digits, self.max_digits + 1))
        lo = 0 if n == 1 else 10 ** (n - 1)
        a = int(rng.integers(lo, 10 ** n))
        b = int(rng.integers(lo, 10 ** n)) if op == "add" else int(rng.integers(0, 10))
        return op, a, b

    def example(self, i: int) -> tuple[str, str, str]:
        """(task, prompt, completion) of evaluation item i (tasks alternate)."""
        rng = _rng(self.seed, self.split, i)
        op, a, b = self.problem(rng, self.ops[i % len(self.ops)])
        return (op, *format_problem(op, a, b, self.scratchpad))

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for arithmetic {self.split} of length {self.length}")
        T = self.block_size
        ids = np.full(T + 1, BYTE_PAD, dtype=np.int64)
        scored = np.zeros(T + 1, dtype=bool)  # tokens that are predicted (completion bytes)
        if self.pack:
            rng = _rng(self.seed, self.split, i)
            pos = 0
            while pos < T + 1:
                prompt, completion = format_problem(*self.problem(rng), self.scratchpad)
                p, c = prompt.encode(), completion.encode()
                seg = np.frombuffer(p + c, dtype=np.uint8)[:T + 1 - pos]
                ids[pos:pos + len(seg)] = seg
                scored[pos + len(p):pos + len(seg)] = True
                pos += len(seg)
            item = {}
        else:
            task, prompt, completion = self.example(i)
            p, c = prompt.encode(), completion.encode()
            ids[:len(p) + len(c)] = np.frombuffer(p + c, dtype=np.uint8)
            scored[len(p):len(p) + len(c)] = True
            item = {"task": task, "prompt": prompt, "completion": completion}
        ids_t = torch.from_numpy(ids)
        labels = ids_t[1:].clone()
        labels[~torch.from_numpy(scored[1:])] = -100
        return {"input_ids": ids_t[:-1].clone(), "labels": labels, **item}


def arithmetic(split: str = "train", **kw) -> ArithmeticDataset:
    """``build_dataset("arithmetic", split, scratchpad=False, ops="add,mul", max_digits=4)``."""
    return ArithmeticDataset(split, **kw)
