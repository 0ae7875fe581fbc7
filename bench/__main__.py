"""`python -m bench [NAME ...]`: run every bench/bench_*.py (or the named ones); each prints
its table: our models beside their peers, measured in the same process."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import torch


def main(argv: list[str]) -> int:
    import bench
    names = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")]
    if argv:
        unknown = [a for a in argv if f"bench_{a}" not in names and a not in names]
        if unknown:
            print(f"unknown benchmark(s) {unknown}; have {[n[6:] for n in names]}", file=sys.stderr)
            return 2
        names = [n for n in names if n in argv or n[6:] in argv]
    print(f"# mmgen benchmarks — torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    for name in sorted(names):
        t0 = time.perf_counter()
        importlib.import_module(f"bench.{name}").main()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
