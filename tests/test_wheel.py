"""The built wheel, installed outside the repository, does the package's main job: it carries
the shipped checkpoints, `mmgen generate` and `mmgen demo` write images where the
user asked, and `mmgen.load_pretrained("dalle_shapes")` finds its checkpoint by name.

Kept fast: the wheel is built without build isolation from a copy of the sources (so the
repository gets no build/ folder), the fresh virtualenv has no pip, and it reaches this test
environment's dependencies through a .pth file listing our site-packages folder as a plain path
(so the editable mmgen installed there is *not* activated: only the wheel's mmgen is importable)."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "mmgen", "checkpoints"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", **extra)
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, a working directory outside the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "shipped")
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name, **(
            {"ignore": ignore} if (ROOT / name).is_dir() else {}))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(src)], cwd=tmp)
    (wheel,) = dist.glob("mmgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("dalle_shapes", "vq_shapes", "clip_shapes"):
        assert f"mmgen/shipped/{shipped}/model.safetensors" in names, f"{shipped} is not in the wheel"

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=tmp).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()}
    (purelib / "_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours) if Path(p).is_dir()))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=tmp)
    work = tmp / "elsewhere"
    work.mkdir()
    return venv, work


def test_installed_wheel_is_the_mmgen_that_runs(installed):
    venv, work = installed
    r = _run([str(venv / "bin" / "python"), "-c",
              "import mmgen; m = mmgen.load_pretrained('dalle_shapes'); "
              "print(mmgen.__file__); print(m.checkpoint_dir); print(type(m).__name__)"], cwd=work)
    file, ckpt, cls = r.stdout.split()
    assert Path(file).is_relative_to(venv), f"mmgen was imported from {file}, not the installed wheel"
    assert Path(ckpt).is_relative_to(venv) and Path(ckpt).name == "dalle_shapes", ckpt
    assert cls == "DALLE"


def test_generate_from_another_directory(installed):
    venv, work = installed
    _run([str(venv / "bin" / "mmgen"), "generate", "a red circle", "-o", "x.png"],
         cwd=work)
    assert (work / "x.png").stat().st_size > 0


def test_demo_writes_under_the_working_directory(installed):
    venv, work = installed
    r = _run([str(venv / "bin" / "mmgen"), "demo"], cwd=work)
    assert (work / "out" / "demo.png").stat().st_size > 0, r.stdout
    site_out = list(venv.rglob("site-packages/out"))
    assert not site_out, f"the demo wrote into site-packages: {site_out}"


def test_editable_install_reads_the_checkpoints_folder_in_place(tmp_path):
    """`pip install -e .` (what `make install` does) keeps finding checkpoints/ by name."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "mmgen", src / "mmgen", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "checkpoints").mkdir()
    shutil.copytree(ROOT / "checkpoints" / "vq_shapes", src / "checkpoints" / "vq_shapes")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=tmp_path).stdout.strip())
    (purelib / "_test_deps.pth").write_text(f"{sysconfig.get_path('purelib')}\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-e", str(src)], cwd=tmp_path)
    r = _run([str(py), "-c", "import mmgen; m = mmgen.load_pretrained('vq_shapes'); "
              "print(mmgen.__file__); print(m.checkpoint_dir)"], cwd=tmp_path)
    file, ckpt = r.stdout.split()
    assert Path(file) == src / "mmgen" / "__init__.py"
    assert Path(ckpt) == (src / "checkpoints" / "vq_shapes").resolve()
