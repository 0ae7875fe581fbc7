"""Packaging beyond what pyproject.toml can say: the shipped checkpoints.

The repository keeps its small trained checkpoints in the top-level checkpoints/ folder. A wheel
carries them as package data under `mmgen/shipped/<name>/` (the package `mmgen.shipped` is mapped
onto checkpoints/), where `mmgen.checkpoint.find_checkpoint` looks for them by name. An editable
install (`pip install -e .`) reads checkpoints/ in place."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
SHIPPED = sorted(d.name for d in (HERE / "checkpoints").iterdir() if (d / "config.json").is_file())

setup(
    packages=find_packages(include=["mmgen", "mmgen.*"]) + ["mmgen.shipped"]
    + [f"mmgen.shipped.{name}" for name in SHIPPED],
    package_dir={"mmgen.shipped": "checkpoints"},
    package_data={
        "mmgen": ["data/assets/*", "web/static/*"],
        **{f"mmgen.shipped.{name}": ["*"]
           for name in SHIPPED},
    },
)
