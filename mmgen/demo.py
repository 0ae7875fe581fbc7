"""`make demo` / `mmgen demo [OUTPUT.png]`: the main job of the package, end to end.

Generates a captioned grid for a few prompts with the shipped DALL-E checkpoint (found by
name, so this works from any directory and from an installed wheel) and writes it to
./out/demo.png under the current directory, or to the path given."""
from __future__ import annotations

import sys
from pathlib import Path

PROMPTS = ["a red circle above a blue square", "a green triangle", "a yellow square left of a magenta circle"]
MODEL = "dalle_shapes"
DEFAULT_OUTPUT = Path("out") / "demo.png"


def _generate(path: Path) -> int:
    """The shipped DALL-E on PROMPTS: a captioned grid of the best 4 of 8 samples by CLIP score."""
    from mmgen.pipelines import load_pipeline, make_grid
    pipe = load_pipeline(MODEL)
    for note in pipe.check_prompts(PROMPTS):
        print(f"warning: {note}", file=sys.stderr)
    out = pipe(PROMPTS, num_images=4, candidates=2, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(out).save(path)
    print(f"wrote {path} ({len(PROMPTS)} prompts x 4 images, seed {out.seed})")
    return 0


def run(output: str | Path = DEFAULT_OUTPUT) -> int:
    """`mmgen demo [OUTPUT]`: check the shipped checkpoint is there, then write the grid."""
    from mmgen.pipelines import find_checkpoint
    try:
        find_checkpoint(MODEL)
    except (FileNotFoundError, ValueError) as e:
        print(f"mmgen demo: error: the demo needs the shipped checkpoint {MODEL!r}: {e}", file=sys.stderr)
        return 2
    return _generate(Path(output))
