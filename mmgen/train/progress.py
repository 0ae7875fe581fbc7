"""Progress of a run on rank 0: a tqdm bar when stderr is a terminal, else (a log file, nohup,
a scheduler) a plain line after the first step and every `every_s` seconds:

  train: step 120/1600 (7.5%) loss 2.314 | 3.12 steps/s 99.8 ex/s | 0:00:38 elapsed, ETA 0:07:54
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import TextIO


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


class Progress:
    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, every_s: float = 30.0,
                 bar: bool | None = None, stream: TextIO | None = None):
        self.total, self.step, self.start_step = total, initial, initial
        self.stream = stream or sys.stderr
        self.enabled, self.every_s = enabled, every_s
        if bar is None:
            bar = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        if enabled and bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, file=self.stream)
        self.t0 = self.t_line = time.perf_counter()
        self.line_step = initial
        self.loss_sum, self.loss_n, self.examples = 0.0, 0, 0

    def update(self, step: int, loss: float, examples: int = 0) -> None:
        """After optimizer step `step` (1-based) with this step's mean loss."""
        self.step = step
        self.loss_sum += loss
        self.loss_n += 1
        self.examples += examples
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            return
        now = time.perf_counter()
        first = step == self.start_step + 1
        if first or step == self.total or (self.every_s and now - self.t_line >= self.every_s):
            self.write(self.line(now))

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        dt = max(now - self.t_line, 1e-9)
        steps = self.step - self.line_step
        done = self.step - self.start_step
        rate = done / max(now - self.t0, 1e-9)  # the ETA counts evaluation and saving too
        eta = (self.total - self.step) / rate if rate > 0 else float("inf")
        loss = self.loss_sum / max(self.loss_n, 1)
        text = (f"train: step {self.step}/{self.total} ({100 * self.step / max(self.total, 1):.1f}%) "
                f"loss {loss:.4g} | {steps / dt:.3g} steps/s {self.examples / dt:.4g} ex/s | "
                f"{_hms(now - self.t0)} elapsed, ETA {_hms(eta) if eta != float('inf') else '?'}")
        self.t_line, self.line_step = now, self.step
        self.loss_sum, self.loss_n, self.examples = 0.0, 0, 0
        return text

    def set_postfix(self, **kw) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**kw, refresh=False)

    def write(self, text: str) -> None:
        """A line that does not tear the bar (evaluation results, notes)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
