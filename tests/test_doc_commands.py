"""Every shell command shown in README.md and docs/*.md runs, so a documented command cannot
silently break. A failure is named by its file and line (`docs/gpt.md:107`).

How a command is run
--------------------
* The ```bash fenced blocks are parsed: `\\` continuations joined, `# comments` dropped,
  `export A=1 B=2` lines apply to the rest of their block, `VAR=value` prefixes and `nice [-n N]`
  are honoured.
* `mmgen ...` runs `mmgen.cli.main`, `python -m MODULE ...` and `python SCRIPT ...` run the module or
  script as `__main__` (runpy), `torchrun [launcher flags] -m train ...` runs the engine at world
  size 1. They run in this process (isolated: working directory, environment, argv, sys.path,
  grad mode and thread count are restored after each), which saves a Python + torch start per
  command. Set MMGEN_DOC_SUBPROCESS=1 to run each in a fresh `python` process instead.
* Commands run in one scratch directory per test session that looks like the repository to them:
  a copy of checkpoints/ (restored after any command that writes into it, e.g. `dalle_eval.py
  ship`), scripts/, an empty docs/img/, a fake CIFAR-10 under $MMGEN_DATA_ROOT and an img.png.
* Training is shrunk by TRAIN_OVERRIDES (appended: the engine's later `--set` wins). A path that
  a documented training command writes with `--out` (or one in PREREQUISITES) is trained first,
  shrunk the same way, when a command needs it and it does not exist yet.
* RULES lists, with a reason each, the commands skipped and the extra flags given to others
  (argparse: a later flag wins). Add a rule when you document a long command; a rule that no
  longer matches any documented command fails test_every_rule_is_used.
"""
from __future__ import annotations

import contextlib
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = ("bash", "sh", "shell", "console")
SUBPROCESS = os.environ.get("MMGEN_DOC_SUBPROCESS") == "1"

# Appended to every command that trains (the engine: a later --set of the same field wins). No
# sample grids: a diffusion recipe's grid alone takes 50 guided sampling steps (~30 CPU-s).
TRAIN_OVERRIDES = ["--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.eval_batches=1",
                   "--set", "train.num_samples=0", "--set", "train.progress=false", "--set", "train.log_every=1"]
# Paths documented commands read that no documented command trains: how to make a tiny one.
PREREQUISITES = {
    "runs/clip_animal_mnist": "python -m train --recipe clip_animal_mnist --out runs/clip_animal_mnist",
    "runs/clip_shapes": "python -m train --recipe clip_shapes --out runs/clip_shapes",
    "runs/vae_shapes": "python -m train --recipe vae_shapes --out runs/vae_shapes",
    # the generator samples a reranker recipe trains on (the documented command draws 6,144)
    "runs/shapes_sample_bank.safetensors": "python scripts/sample_bank.py --n 8 --out runs/shapes_sample_bank.safetensors",
    "runs/shapes_sample_bank_two_stage.safetensors": "python scripts/sample_bank.py --n 8 --replace-correct --out "
                                                     "runs/shapes_sample_bank_two_stage.safetensors",
}


@dataclass
class Rule:
    """What to do with the documented commands whose text matches `pattern` (re.search)."""
    pattern: str
    reason: str
    skip: bool = False
    append: list[str] = field(default_factory=list)  # extra arguments, after the documented ones
    env: dict[str, str] = field(default_factory=dict)


RULES = [
    Rule(r"^make\b", "make demo / make test create .venv and run this suite (tests/test_wheel.py runs the demo)",
         skip=True),
    Rule(r"^apt-get\b", "installs system packages", skip=True),
    Rule(r"^mmgen serve\b", "a web server that runs until stopped (tests/test_serve.py starts and stops it)",
         skip=True),
    Rule(r"scripts/build_emoji\.py", "rebuilds the shipped emoji asset in mmgen/data/assets (~2 min)", skip=True),
    Rule(r"-m pytest\b", "runs part of this test suite", skip=True),
    Rule(r"--nnodes=([2-9]|\d\d)", "multi-node training needs several machines", skip=True),
    Rule(r"--recipe NAME\b", "a synopsis: NAME and the [bracketed] options are placeholders", skip=True),
    Rule(r"--data cifar10\b", "CIFAR-10 cannot be downloaded here: a fake copy (no official md5s) stands in",
         append=["--data-set", "check_md5=false"]),
    Rule(r"^mmgen generate .*--model \S*ddpm", "diffusion sampling: 2 steps instead of 25",
         append=["--steps", "2"]),
    Rule(r"^mmgen generate .*-o docs/img/", "the docs' sample grids: 2 images per prompt instead of 6",
         append=["-n", "2"]),
    Rule(r"^mmgen evaluate\b", "4 samples, 2 sampling steps instead of 200 x 25",
         append=["--n", "4", "--steps", "2", "--batch", "4", "--quiet"]),
    Rule(r"scripts/dalle_eval\.py shapes\b", "4 captions and 1 or 2 candidates instead of 200 and 1 or 8",
         append=["--n", "4", "--candidates", "1", "2", "--quiet"]),
    Rule(r"runs/dalle_shapes_factored/steps/", "reads the weights the 94-minute run kept at step 1,500 (a 2-step "
         "run keeps none; tests/test_two_stage.py runs scripts/colour_stage.py)", skip=True),
    Rule(r"scripts/fidelity_curve\.py", "reads checkpoints copied from a run while it trained (minutes of sampling)",
         skip=True),
    Rule(r"scripts/evaluate_curve\.py", "draws the evaluations of weights kept along two runs (tests/test_metrics.py "
         "runs it on small files)", skip=True),
    Rule(r"scripts/shapes_fidelity\.py", "one two-object prompt, 1 or 2 candidates, guidance 1.25 instead of 200 "
         "prompts per group, 1 or 8 candidates and the documented guidances",
         append=["--n", "1", "--groups", "two", "--candidates", "1", "2", "--guidance", "1.25"]),
    Rule(r"scripts/gpt_curve\.py .*--full-val", "the first 16 validation blocks instead of the whole split (3 min "
         "of bf16 emulated on this CPU)", append=["--val-blocks", "16"]),
    Rule(r"scripts/shapes_fidelity\.py .*--layout-set", "one group, 1 candidate: the outline stage's settings",
         append=["--groups", "one", "--candidates", "1"]),
    Rule(r"scripts/shapes_fidelity\.py .*--compose", "compositional sampling draws 7 rows per image: one weight, "
         "one group, 1 candidate", append=["--compose", "1", "--groups", "heldout", "--candidates", "1"]),
    Rule(r"scripts/rerank_oracle\.py", "2 prompts per group and 2 candidates instead of 100 and 8",
         append=["--n", "2", "--k", "2"]),
    Rule(r"scripts/sample_bank\.py", "8 generator samples instead of 6,144", append=["--n", "8"]),
    Rule(r"scripts/text_use\.py", "8 test images instead of 256", append=["--n", "8"]),
    Rule(r"scripts/vq_token_coverage\.py", "codes counted on 500 training scenes and 20 objects per group instead of "
         "20,000 and 1,000", append=["--n-train", "500", "--n-objects", "20"]),
    Rule(r"scripts/ae_report\.py", "the first 16 test images instead of the whole split",
         append=["--limit", "16"]),
    Rule(r"^mmgen retrieve .*--dataset\b", "recall@K on 64 items instead of 1,000", append=["--limit", "64"]),
    Rule(r"bench/bench_llm\.py", "a benchmark: 4 tokens, one repeat, no torch.compile (70-100 s to compile)",
         append=["--tokens", "4", "--repeats", "1", "--no-compile"]),
    Rule(r"-m bench\.bench_(ddpm|dalle)\b", "a benchmark: tiny presets, batch 4, one repeat (minutes in full)",
         append=["--tiny"]),
]


# ------------------------------------------------------------------------------ parsing
@dataclass
class DocCommand:
    where: str  # "docs/gpt.md:107"
    text: str  # the command as documented (continuations joined, comment dropped)
    env: dict[str, str]  # from `export` lines above it in its block and VAR=value prefixes
    argv: list[str]  # without the env prefixes and `nice`


def _strip_prefixes(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        k, v = tokens.pop(0).split("=", 1)
        env[k] = v
    if tokens[:1] == ["nice"]:
        tokens = tokens[1:]
        if tokens[:1] == ["-n"]:
            tokens = tokens[2:]
        elif tokens and re.fullmatch(r"-\d+", tokens[0]):
            tokens = tokens[1:]
    return env, tokens


def doc_commands() -> list[DocCommand]:
    out = []
    for md in DOCS:
        rel = md.relative_to(ROOT).as_posix()
        fence, pending, start, block_env = None, "", 0, {}
        for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                if fence is None:
                    fence, block_env = stripped[3:].strip().lower(), {}
                else:
                    fence = None
                continue
            if fence not in SHELL_FENCES:
                continue
            if not pending:
                start = n
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text, pending = (pending + stripped).strip(), ""
            tokens = shlex.split(text, comments=True)
            if not tokens:
                continue
            if tokens[0] == "export":
                block_env.update(kv.split("=", 1) for kv in tokens[1:] if "=" in kv)
                continue
            env, argv = _strip_prefixes(tokens)
            out.append(DocCommand(f"{rel}:{start}", shlex.join(tokens), {**block_env, **env}, argv))
    return out


COMMANDS = doc_commands()


def rules_for(cmd: DocCommand) -> list[Rule]:
    return [r for r in RULES if re.search(r.pattern, cmd.text)]


def _module(argv: list[str]) -> str | None:
    """The module a python / torchrun command line runs with -m (None for a script)."""
    return argv[argv.index("-m") + 1] if "-m" in argv else None


def trains(argv: list[str]) -> bool:
    """Does this command run the training engine (and not just print its help or config)?"""
    engine = (argv[:1] == ["mmgen"] and argv[1:2] == ["train"]) or _module(argv) == "train"
    info = {"--help", "-h", "--list-recipes", "--print-config"}
    return engine and not info & set(argv)


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


# ------------------------------------------------------------------------------ running
def _write_fake_cifar10(root: Path) -> None:
    """A tiny cifar-10-batches-py in the real pickle format (what torchvision reads)."""
    import pickle

    import numpy as np
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n, offset):
        return {"batch_label": "fake", "labels": [(i + offset) % 10 for i in range(n)],
                "data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
                "filenames": [f"img{offset + i}.png" for i in range(n)]}

    for k in range(1, 6):
        (d / f"data_batch_{k}").write_bytes(pickle.dumps(batch(20, 100 * k)))
    (d / "test_batch").write_bytes(pickle.dumps(batch(20, 0)))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "num_cases_per_batch": 20}))


class Scratch:
    """The working directory of the documented commands (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path
        shutil.copytree(ROOT / "checkpoints", path / "checkpoints")
        self.shipped = {d.name: self._stamp(d) for d in (path / "checkpoints").iterdir() if d.is_dir()}
        (path / "scripts").symlink_to(ROOT / "scripts")
        (path / "bench").symlink_to(ROOT / "bench")
        (path / "docs" / "img").mkdir(parents=True)
        (path / "runs").mkdir()
        _write_fake_cifar10(path / "data")
        from torchvision.utils import save_image

        from mmgen.data import build_dataset
        save_image(build_dataset("shapes", split="test")[0]["image"] * 0.5 + 0.5, path / "img.png")
        self.producers = dict(PREREQUISITES)
        for cmd in COMMANDS:  # documented training commands make the run directories others read
            out = _value(cmd.argv, "--out")
            if trains(cmd.argv) and out and "--resume" not in cmd.argv and not any(r.skip for r in rules_for(cmd)):
                self.producers.setdefault(out, shlex.join(cmd.argv))

    @staticmethod
    def _stamp(d: Path) -> dict[str, tuple[int, int]]:
        return {f.name: (f.stat().st_mtime_ns, f.stat().st_size) for f in d.iterdir()}

    def restore_shipped(self) -> None:
        for name, stamp in self.shipped.items():
            d = self.path / "checkpoints" / name
            if not d.is_dir() or self._stamp(d) != stamp:
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(ROOT / "checkpoints" / name, d)
                self.shipped[name] = self._stamp(d)

    def ensure_inputs(self, argv: list[str]) -> None:
        """Train (tiny) the run directories this command reads and nobody made yet."""
        own_out = _value(argv, "--out") if trains(argv) and "--resume" not in argv else None
        tokens = list(argv)
        if trains(argv) and _value(argv, "--recipe"):  # a recipe that starts from another run's weights
            from mmgen.train.recipes import get_recipe
            recipe = get_recipe(_value(argv, "--recipe"))
            tokens += [recipe.train.get("init_from", "")] + [v for v in recipe.data_kwargs.values() if isinstance(v, str)]
        for tok in tokens:
            for cand in {tok, tok.rstrip("/")}:
                if cand in self.producers and cand != own_out and not (self.path / cand).exists():
                    producer = shlex.split(self.producers[cand])
                    rc = self.run(producer + (TRAIN_OVERRIDES if trains(producer) else []), {})
                    assert rc == 0, f"making {cand} with `{self.producers[cand]}` failed ({rc})"

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        env = {"HF_HUB_OFFLINE": "1", "MMGEN_DATA_ROOT": str(self.path / "data"), **env}
        try:
            return run_subprocess(argv, env, self.path) if SUBPROCESS else run_in_process(argv, env, self.path)
        finally:
            self.restore_shipped()


def _python_target(argv: list[str]) -> tuple[str, str, list[str]]:
    """('module' | 'script', name, args) for a python / torchrun / mmgen command line."""
    prog = Path(argv[0]).name
    if prog == "mmgen":
        return "module", "mmgen.cli", argv[1:]
    if prog == "torchrun":  # world size 1: the engine itself, without the launcher
        i = argv.index("-m")
        return "module", argv[i + 1], argv[i + 2:]
    if re.fullmatch(r"python(3(\.\d+)?)?", prog):
        if argv[1] == "-m":
            return "module", argv[2], argv[3:]
        return "script", argv[1], argv[2:]
    raise ValueError(f"no way to run {argv[0]!r}: add a Rule (skip with a reason) to {__file__}")


@contextlib.contextmanager
def _isolated(cwd: Path, env: dict[str, str], argv: list[str]):
    saved = (os.getcwd(), dict(os.environ), sys.argv[:], sys.path[:], torch.is_grad_enabled(),
             torch.get_num_threads())
    os.chdir(cwd)
    os.environ.update(env)
    sys.argv = argv
    sys.path.insert(0, str(ROOT))  # `python -m train` from the repository root sees ./train
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        sys.argv, sys.path = saved[2], saved[3]
        torch.set_grad_enabled(saved[4])
        torch.set_num_threads(saved[5])


COMMAND_TIMEOUT_S = 600  # a command that never returns (a server, a prompt) fails instead of hanging


@contextlib.contextmanager
def _time_limit(seconds: int):
    if not hasattr(signal, "SIGALRM"):  # not on Windows: no limit
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"the command ran longer than {seconds} s: skip it with a Rule if it is meant to run "
                           f"until stopped")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_in_process(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    kind, name, args = _python_target(argv)
    with _isolated(cwd, env, [name, *args]), _time_limit(COMMAND_TIMEOUT_S):
        try:
            if kind == "module" and name == "mmgen.cli":
                from mmgen.cli import main
                return int(main(args) or 0)
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(cwd / name), run_name="__main__")
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0


def run_subprocess(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    kind, name, args = _python_target(argv)
    cmd = [sys.executable, *(["-m", name] if kind == "module" else [name]), *args]
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("docs"))


# ------------------------------------------------------------------------------ tests
def test_the_docs_have_commands():
    assert len(COMMANDS) > 20 and {c.where.split(":")[0] for c in COMMANDS} >= {"README.md", "docs/training.md"}


def test_commands_are_in_fenced_blocks():
    """An indented (4-space) code block is invisible to this test: fence commands with ```bash."""
    hidden = []
    for md in DOCS:
        fenced = False
        for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith("```"):
                fenced = not fenced
            elif not fenced and re.match(r"( {4,}|\t)(mmgen|python3?|torchrun) ", line):
                hidden.append(f"{md.relative_to(ROOT).as_posix()}:{n}")
    assert not hidden, f"commands outside a ```bash block (they would not be tested): {hidden}"


def test_every_rule_is_used():
    unused = [r.pattern for r in RULES if not any(re.search(r.pattern, c.text) for c in COMMANDS)]
    assert not unused, f"rules that match no documented command any more (remove them): {unused}"


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_runs(cmd: DocCommand, scratch: Scratch):
    rules = rules_for(cmd)
    skipped = [r.reason for r in rules if r.skip]
    if skipped:
        pytest.skip("; ".join(skipped))
    argv = list(cmd.argv)
    if trains(argv):
        argv += TRAIN_OVERRIDES
    env = dict(cmd.env)
    for r in rules:
        argv += r.append
        env.update(r.env)
    scratch.ensure_inputs(argv)
    out = _value(argv, "--out")
    if trains(argv) and out and "--resume" not in argv:  # a fresh run, as the docs' reader would start
        shutil.rmtree(scratch.path / out, ignore_errors=True)
    rc = scratch.run(argv, env)
    assert rc == 0, f"{cmd.where}: `{cmd.text}` exited with {rc} (run as {shlex.join(argv)})"
