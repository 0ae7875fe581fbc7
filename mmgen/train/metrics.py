"""What a run reports: metrics.jsonl (+ TensorBoard), the per-record window of step
statistics, and PNG sample grids."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from mmgen.checkpoint import atomic_save_file

METRICS_NAME = "metrics.jsonl"


def append_jsonl(path: Path, record: dict) -> None:
    # Open per write: the file must survive (and never be held open across) a kill.
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class MetricsWriter:
    """metrics.jsonl (always) and TensorBoard scalars under out/tb (when tensorboard is
    installed); rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.path, self.tb = out / METRICS_NAME, None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:  # tensorboard not installed: JSONL only
                pass
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records logged after the checkpoint we resume from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line torn by the kill
            pass
    atomic_save_file(lambda tmp: Path(tmp).write_text("".join(l + "\n" for l in keep)), path)


class Window:
    """Sums over the optimizer steps between two metrics records; means() gives the record's
    loss, model logs, examples/s and steps/s (time spent evaluating and saving paused out)."""

    def __init__(self):
        self.loss, self.n, self.examples, self.logs = 0.0, 0, 0, {}
        self.t0 = time.perf_counter()

    def add(self, loss: float, logs: dict[str, float], examples: int) -> None:
        self.loss += loss
        self.n += 1
        self.examples += examples
        for k, v in logs.items():
            self.logs[k] = self.logs.get(k, 0.0) + v

    def pause(self, seconds: float) -> None:
        self.t0 += seconds

    def means(self, world_size: int = 1) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        n = max(self.n, 1)
        return {"loss": self.loss / n, "examples_per_s": self.examples * world_size / dt, "steps_per_s": self.n / dt,
                **{k: v / n for k, v in self.logs.items()}}


def save_image_grid(images: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image
    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)  # [-1, 1] -> [0, 1]
    nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_file(lambda tmp: save_image(images, tmp, nrow=nrow, format="png"), path)
