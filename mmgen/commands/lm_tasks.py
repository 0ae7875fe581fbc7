"""`mmgen lm-tasks icl|cot`: evaluate the language-task recipes (in-context learning;
arithmetic with and without a chain-of-thought scratchpad): tables and the figures of
docs/llm.md (mmgen.metrics.lm_tasks)."""
from __future__ import annotations

from ._args import positive_int


def register(sub) -> None:
    top = sub.add_parser("lm-tasks", help="evaluate the in-context-learning and chain-of-thought GPT runs",
                         description=__doc__.split("\n\n")[0])
    tasks = top.add_subparsers(dest="what", required=True, metavar="TASK")
    p = tasks.add_parser("icl", help="in-context learning: accuracy vs examples, head scores, attention picture")
    p.add_argument("--model", required=True, help="a run of `python -m train --recipe icl_gpt`")
    p.add_argument("--n", type=positive_int, default=1024, help="test sequences")
    p.add_argument("--png", default=None, help="write the attention picture here")
    p.add_argument("--curve-png", default=None, help="write the accuracy curve here")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=positive_int, default=1)
    p.set_defaults(func=_run("run_icl"))
    p = tasks.add_parser("cot", help="arithmetic: plain vs scratchpad, accuracy vs steps and operand length")
    p.add_argument("--plain", default=None, help="a run of `python -m train --recipe cot_plain`")
    p.add_argument("--scratchpad", default=None, help="a run of `python -m train --recipe cot_scratchpad`")
    p.add_argument("--n", type=positive_int, default=100, help="problems per operation and length")
    p.add_argument("--max-digits", type=positive_int, default=6)
    p.add_argument("--example", default="3697*8=", help="the worked example's prompt")
    p.add_argument("--every", type=positive_int, default=100, help="print the training curve every this many steps")
    p.add_argument("--png", default=None, help="write the curves here")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=positive_int, default=1)
    p.set_defaults(func=_run("run_cot"))


def _run(name: str):
    def run(args) -> int:
        from mmgen.metrics import lm_tasks
        if name == "run_cot" and not (args.plain or args.scratchpad):
            raise ValueError("cot needs --plain and/or --scratchpad run directories")
        return getattr(lm_tasks, name)(args)
    return run
