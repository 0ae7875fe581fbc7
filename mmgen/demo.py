"""`make demo` / `python -m mmgen.demo [OUTPUT.png]`: the main job of the package, end to end.

Generates a grid of images for a few prompts with the shipped DALL-E checkpoint (found by
name, so this works from any directory and from an installed wheel) and writes it to
./out/demo.png under the current directory, or to the path given."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROMPTS = ["a red circle above a blue square", "a green triangle", "a yellow square left of a magenta circle"]
MODEL = "dalle_shapes"
DEFAULT_OUTPUT = Path("out") / "demo.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgen.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", default=str(DEFAULT_OUTPUT),
                        help=f"PNG grid to write (default: {DEFAULT_OUTPUT} under the current directory)")
    args = parser.parse_args(argv)
    from mmgen.checkpoint import find_checkpoint
    from mmgen.cli import main as cli
    try:
        model = find_checkpoint(MODEL)
    except FileNotFoundError as e:
        print(f"mmgen demo: error: the demo needs the shipped checkpoint {MODEL!r}: {e}", file=sys.stderr)
        return 2
    return cli(["generate", *PROMPTS, "--model", str(model), "-o", args.output])


if __name__ == "__main__":
    sys.exit(main())
