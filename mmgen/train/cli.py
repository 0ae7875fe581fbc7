"""`python -m train` (in the repository) or `mmgen train`: build a model preset and a dataset,
resolve typed dotted overrides, and run the loop.

  python -m train PRESET --data NAME [--data-set k=v] [--set train.lr=3e-4 --set model.depth=4] [--out DIR]
  python -m train --recipe NAME [--set ...] [--out DIR]      (default DIR: runs/NAME-YYYYmmdd-HHMMSS)
  python -m train --resume --out DIR [--set train.steps=2000]
  python -m train finetune {gpt,clip,dpo} --base RUN --out DIR [--methods ...] [--set train.KEY=VALUE]

Every user error (a bad flag, value, device, dataset or run directory) is one line on stderr
and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from mmgen.config import field_type, parse_value

from .config import TrainConfig, train_fields
from .loop import NonFiniteLossError, fit
from .state import RUN_CONFIG_NAME, STATE_NAME, check_out_dir, seed_everything
from .recipes import get_recipe, list_recipes

PREFIXES = ("model.", "data.", "train.")


def _epilog() -> str:
    import mmgen
    lines = ["presets (mmgen.list_models()):"]
    lines += textwrap.wrap(", ".join(mmgen.list_models()) or "(none registered)", 100,
                           initial_indent="  ", subsequent_indent="  ")
    lines.append("\nrecipes (--recipe NAME; details with --list-recipes):")
    recipes = list_recipes()
    lines += [f"  {r.name:28s} {r.model} on {r.data}" for r in recipes] or ["  (none registered)"]
    lines.append("\nfine-tuning methods compared from one base: finetune {gpt,clip,dpo} --base RUN --out DIR "
                 "(see `finetune --help`)")
    lines.append("\ntrain fields (--set train.NAME=VALUE):")
    lines += [f"  {name:24s} {tp:22s} default {default!r}" for name, tp, default in train_fields()]
    lines.append("\nmodel fields: --set model.FIELD=VALUE (dotted for nested configs, e.g. model.text.depth=2);"
                 "\n  `--print-config` shows the resolved model overrides; the fields are those of the family config dataclass."
                 "\ndata fields: --data-set KEY=VALUE (= --set data.KEY=VALUE), keyword arguments of "
                 "mmgen.data.build_dataset(NAME, split, **kw).")
    return "\n".join(lines)


def default_prog() -> str:
    """How the user called the engine: `mmgen train` (the console script or mmgen.cli) or
    `python -m train` (the repository's pointer package, or python -m mmgen.train)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "mmgen train" if name in ("mmgen", "mmgen.exe", "cli.py") else "python -m train"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or default_prog(), description="Train any mmgen model with the one loop.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())
    p.add_argument("preset", nargs="?", help="a registered model preset (see below)")
    p.add_argument("--recipe", help="a registered recipe: preset + data + schedule")
    p.add_argument("--data", help="dataset name for mmgen.data.build_dataset, or module:function "
                                  "(called as function(split, **data_kwargs))")
    p.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset keyword argument (repeatable)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="PREFIX.KEY=VALUE",
                   help="override model.*, data.* or train.* fields, typed (repeatable)")
    p.add_argument("--out", help="run directory (default: a fresh runs/<recipe or preset>-YYYYmmdd-HHMMSS); "
                                 "a directory holding a checkpoint no run wrote there is refused")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt "
                                                         "(starts fresh when there is none)")
    p.add_argument("--device", help="= --set train.device=DEVICE (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument("--list-recipes", nargs="?", const="text", choices=("text", "markdown"),
                   help="print every recipe with its expected result (markdown: the table of docs/training.md)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _split(kv: str, flag: str) -> tuple[str, str]:
    if "=" not in kv:
        raise ValueError(f"{flag} expects KEY=VALUE, got {kv!r}")
    k, v = kv.split("=", 1)
    return k.strip(), v


def _parse_loose(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _finite(key: str, value: Any) -> Any:
    """Refuse nan / inf anywhere in a parsed value (numbers, tuples, lists, dicts)."""
    vals = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    for v in vals:
        if isinstance(v, (dict, list, tuple)):
            _finite(key, v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{key} must be a finite number, got {v}")
    return value


def _lookup(cfg: dict, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return False, None
        cfg = cfg[part]
    return True, cfg


def _same(a: Any, b: Any) -> bool:
    def norm(x):
        return json.loads(json.dumps(x, default=str))
    return norm(a) == norm(b)


def resolve(args, prog: str = "python -m train") -> dict:
    """The run config: {preset, recipe, data, model_overrides, data_kwargs, train}."""
    out_dir = Path(args.out) if args.out else None
    saved = None
    if args.resume and out_dir is None:
        raise ValueError("--resume needs --out DIR: the run directory to continue")
    if args.resume and (out_dir / RUN_CONFIG_NAME).exists():
        try:
            saved = json.loads((out_dir / RUN_CONFIG_NAME).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--resume: cannot read {out_dir / RUN_CONFIG_NAME}: {e}") from None
    recipe = get_recipe(args.recipe) if args.recipe else None
    preset = args.preset or (recipe.model if recipe else None) or (saved or {}).get("preset")
    data = args.data or (recipe.data if recipe else None) or (saved or {}).get("data")
    if saved is not None:
        for what, new, old in (("preset", preset, saved.get("preset")), ("data", data, saved.get("data"))):
            if new != old:
                raise ValueError(f"--resume: {out_dir} was trained with {what} {old!r}, not {new!r}")
    if not preset:
        if args.resume:
            raise ValueError(f"--resume: {out_dir} holds no run to continue (no {RUN_CONFIG_NAME}); name a preset "
                             "or --recipe to start one there")
        raise ValueError(f"name a model preset ({prog} PRESET ...) or a --recipe; see --help")
    if not data:
        raise ValueError("name a dataset with --data NAME (or use a --recipe); see --help")
    if ":" in data:  # a user module: importing it may register its presets too
        _import_data_module(data)
    import mmgen.registry as reg
    model_cls = reg.get_preset(preset).model_cls

    model_over: dict[str, Any] = {}
    data_kw: dict[str, Any] = {}
    train_over: dict[str, Any] = {}
    if saved is not None:
        model_over.update(saved.get("model_overrides", {}))
        data_kw.update(saved.get("data_kwargs", {}))
        train_over.update(saved.get("train", {}))
    if recipe is not None:
        model_over.update(recipe.model_overrides)
        data_kw.update(recipe.data_kwargs)
        train_over.update(recipe.train)
    raw = [(f"data.{k}", v) for k, v in (_split(s, "--data-set") for s in args.data_set)]
    raw += [_split(s, "--set") for s in args.sets]
    if getattr(args, "device", None):
        raw.append(("train.device", args.device))
    for key, text in raw:
        if not key.startswith(PREFIXES):
            hint = f" (did you mean train.{key}?)" if key in TrainConfig.__dataclass_fields__ else ""
            raise ValueError(f"--set keys start with model., data. or train.; got {key!r}{hint}")
        prefix, name = key.split(".", 1)
        if prefix == "train":
            train_over[name] = _finite(key, parse_value(text, field_type(TrainConfig, name)))
        elif prefix == "model":
            value = _finite(key, parse_value(text, field_type(model_cls.config_class, name)))
            if saved is not None:  # the same value as the run's (resolved config or override) is fine
                known, old = _lookup(saved.get("model", {}), name)
                k2, old2 = _lookup(saved.get("model_overrides", {}), name)
                if not ((known and _same(old, value)) or (k2 and _same(old2, value))):
                    known, old = (known, old) if known else (k2, old2)
                    was = f" (the run has {old!r})" if known else ""
                    raise ValueError(f"--resume: model fields cannot change on resume, got model.{name}={text}{was}; "
                                     "train a new run (another --out) to change the model")
            model_over[name] = value
        else:
            data_kw[name] = _finite(key, _parse_loose(text))
    train_cfg = TrainConfig(**train_over)  # validates
    return {"preset": preset, "recipe": args.recipe or (saved or {}).get("recipe"), "data": data,
            "model_overrides": model_over, "data_kwargs": data_kw, "train": train_cfg}


def _import_data_module(name: str):
    mod = name.split(":", 1)[0]
    try:
        return importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"--data {name}: cannot import module {mod!r} ({e})") from None


def build_dataset(name: str, split: str, **kw):
    """mmgen.data.build_dataset(name, split, **kw), or module:function(split, **kw)."""
    if ":" in name:
        fn = name.split(":", 1)[1]
        module = _import_data_module(name)
        if not callable(getattr(module, fn, None)):
            raise ValueError(f"--data {name}: module {module.__name__!r} has no function {fn!r}")
        return getattr(module, fn)(split, **kw)
    try:
        from mmgen.data import build_dataset as build
    except ImportError as e:
        raise ValueError(f"dataset {name!r}: mmgen.data.build_dataset is not available ({e}); "
                         "pass --data module:function") from None
    return build(name, split=split, **kw)


def run(rc: dict, out: Path, resume: bool, argv: list[str] | None = None) -> dict:
    import mmgen
    cfg: TrainConfig = rc["train"]
    seed_everything(cfg.seed)  # the initial weights depend on the seed only
    model = mmgen.create_model(rc["preset"], **rc["model_overrides"])
    if cfg.init_from and not (out / STATE_NAME).exists():  # a run being resumed has its own weights
        warm_start(model, cfg.init_from)
    train_ds = build_dataset(rc["data"], "train", **rc["data_kwargs"])
    val_ds = None
    if cfg.val_split and cfg.eval_batches:
        try:
            val_ds = build_dataset(rc["data"], cfg.val_split, **rc["data_kwargs"])
        except (ValueError, KeyError) as e:
            print(f"train: no evaluation: split {cfg.val_split!r} of {rc['data']!r} is not available ({e})",
                  file=sys.stderr)
    run_config = {"preset": rc["preset"], "recipe": rc["recipe"], "data": rc["data"],
                  "model_overrides": rc["model_overrides"], "data_kwargs": rc["data_kwargs"],
                  "model": mmgen.config.config_to_dict(model.config), "argv": sys.argv[1:] if argv is None else list(argv),
                  "num_params": model.num_params() if hasattr(model, "num_params") else None}
    try:
        return fit(model, train_ds, cfg, out=out, val_ds=val_ds, resume=resume, run_config=run_config)
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def warm_start(model, source: str) -> None:
    """Copy every weight of the checkpoint `source` (a run directory or a shipped name) into
    `model`: a fine-tune that continues another run with a changed loss or data. The two must
    be the same model family with the same weights; config fields that hold no weights (loss
    terms, sampling defaults) may differ."""
    import torch

    from mmgen.checkpoint import load_companion
    src = load_companion(source, None, "train.init_from")
    if src.model_type != model.model_type:
        raise ValueError(f"train.init_from {source!r} holds a {src.model_type!r} checkpoint; the model being trained "
                         f"is a {model.model_type!r}")
    theirs, ours = src.state_dict(), model.state_dict()
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = [k for k in set(ours) & set(theirs)  # extra state (DALL-E's caption words) is no tensor
              if torch.is_tensor(ours[k]) and getattr(theirs[k], "shape", None) != ours[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"train.init_from {source!r} does not fit this model: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}, other shapes {sorted(shapes)[:3]}")
    model.load_state_dict(theirs)


def default_out(name: str, device_name: str = "auto") -> Path:
    """A fresh run directory runs/NAME-YYYYmmdd-HHMMSS (a -2, -3, ... suffix if it exists).
    Under torchrun rank 0 picks it and the others receive it, so every rank writes one run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = name.replace("/", "_")
    path = None
    if int(os.environ.get("RANK", "0")) == 0:
        base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    if world > 1:
        from . import dist as D
        D.init_distributed(D.resolve_device(device_name))
        import torch.distributed as dist
        box = [str(path) if path is not None else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0])
    return path


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the engine's command line; returns the exit code (0 done, 2 bad input, 3
    non-finite loss, 128 + signal when stopped by SIGTERM / SIGINT after saving)."""
    prog = prog or default_prog()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["finetune"]:  # fine-tuning methods compared from one base (mmgen.train.finetune)
        from .finetune import main as finetune_main
        return finetune_main(argv[1:], prog=f"{prog} finetune")
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.list_recipes == "markdown":
            from .recipes import markdown_table
            print(markdown_table())
            return 0
        if args.list_recipes:
            for r in list_recipes():
                print(f"{r.name}: {r.model} on {r.data}\n  {r.description}\n  expected: {r.expected}\n"
                      f"  overrides: {json.dumps(r.overrides())}")
            if not list_recipes():
                print("no recipes registered")
            return 0
        rc = resolve(args, prog)
        cfg: TrainConfig = rc["train"]
        if args.print_config:
            import dataclasses
            out = Path(args.out) if args.out else Path("runs") / f"{rc['recipe'] or rc['preset']}-YYYYmmdd-HHMMSS"
            print(json.dumps({**rc, "train": dataclasses.asdict(cfg), "out": str(out)}, indent=2))
            return 0
        from . import dist as D
        D.resolve_device(cfg.device)  # an absent device fails here, before any data is built
        out = Path(args.out) if args.out else default_out(rc["recipe"] or rc["preset"], cfg.device)
        check_out_dir(out, args.resume)  # before building the model and data (again in the loop)
        is_main = int(os.environ.get("RANK", "0")) == 0
        if is_main and not args.resume:
            print(f"train: writing the run to {out} (continue it with `{prog} --resume --out {out}`)",
                  file=sys.stderr)
        summary = run(rc, out, args.resume, argv)
        code = 128 + summary["interrupted"] if summary.get("interrupted") else 0
        if not is_main:
            return code
        keys = [k for k in summary if k in ("step", "loss", "examples_per_s", "wall_s") or k.startswith("val/")]
        print(f"train: {'stopped' if code else 'done'} " + " ".join(f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else
                                        f"{k}={summary[k]}" for k in keys) + f" -> {out}", file=sys.stderr)
        return code
    except NonFiniteLossError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, TypeError, KeyError, ImportError) as e:
        # user errors: one line, no traceback (KeyError: an unknown name in a registry or dataset)
        print(f"train: error: {_one_line(e)}", file=sys.stderr)
        return 2
