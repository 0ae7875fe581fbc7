"""The one timing helper of bench/: warm-up, then the median of repeats, so both sides of a
comparison are measured the same way in the same process."""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int

    def rate(self, items: float) -> float:
        """Items per second at the median time."""
        return items / self.median_s


def measure(fn, *, warmup: int = 3, repeats: int = 10, min_time_s: float = 0.0) -> Timing:
    """Call fn() `warmup` times, then at least `repeats` times (and for at least
    min_time_s); return median and best wall time of one call."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time_s:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), len(times))


def compare(fns: dict, *, warmup: int = 3, repeats: int = 10) -> dict[str, Timing]:
    """Time several candidates doing the same work, interleaved round-robin so that load
    from other processes hits every side alike. Returns name -> Timing."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: Timing(statistics.median(v), min(v), len(v)) for k, v in times.items()}


def autocast(dtype: str, device: str = "cpu"):
    """'fp32' -> no autocast; 'bf16' -> torch.autocast(device, bfloat16)."""
    if dtype == "fp32":
        return nullcontext()
    if dtype == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    raise ValueError(f"dtype must be fp32 or bf16, got {dtype!r}")


def amp_dtypes(device: str = "cpu", bf16: bool | None = None) -> tuple[str, ...]:
    """The autocast modes worth timing: fp32, plus bf16 where it runs natively (a CUDA GPU that
    supports it, a CPU with AVX-512 BF16 or AMX) or when bf16=True. Emulated CPU bf16 is ~15x
    slower than fp32 (a 2-second step takes 30): timing it says nothing about the model."""
    if bf16 is None:
        from mmgen.devices import cpu_has_native_bf16
        bf16 = torch.cuda.is_bf16_supported() if device.startswith("cuda") else bool(cpu_has_native_bf16())
        if not bf16:
            print(f"(bf16 autocast not timed: emulated on this {torch.backends.cpu.get_cpu_capability()} CPU; "
                  f"--bf16 times it anyway)")
    return ("fp32", "bf16") if bf16 else ("fp32",)


def train_step(model, batch, opt, amp: str = "fp32", device: str = "cpu", *, clip: float | None = None,
               after=None):
    """A closure running one training step of an mmgen model as the engine does: its loss under
    autocast `amp`, backward, optional gradient-norm clipping, the optimizer step, then `after()`
    (e.g. CLIP's logit-scale clamp)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        with autocast(amp, device.split(":")[0]):
            loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if after is not None:
            after()
    return run


def matmul_peak_flops(dtype: str = "fp32", n: int = 1024, device: str = "cpu") -> float:
    """Measured matmul throughput (FLOP/s) of an n x n x n product, the MFU denominator."""
    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    t = measure(lambda: a @ b, warmup=3, repeats=10)
    return 2 * n**3 / t.min_s


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A plain aligned table (the format `make bench` prints)."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
