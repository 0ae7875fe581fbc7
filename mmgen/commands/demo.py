"""`mmgen demo [OUTPUT.png]`: the main job of the package, end to end: a captioned grid for a
few prompts from the shipped DALL-E checkpoint, written to ./out/demo.png or OUTPUT
(mmgen.demo; `make demo` runs it)."""
from __future__ import annotations


def register(sub) -> None:
    from mmgen.demo import DEFAULT_OUTPUT
    p = sub.add_parser("demo", help="generate a grid for a few prompts with the shipped DALL-E (out/demo.png)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("output", nargs="?", default=str(DEFAULT_OUTPUT),
                   help=f"image to write (default: {DEFAULT_OUTPUT} under the current directory)")
    p.set_defaults(func=lambda args: __import__("mmgen.demo", fromlist=["run"]).run(args.output))
