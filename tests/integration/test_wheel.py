"""fdpose as an installed package: a wheel, installed non-editable into a fresh virtual environment,
works from a folder outside the repository (model files and skeletons ship inside the package).

Offline: the wheel is built without build isolation (when the installed setuptools can: else
pyproject's build requirements come from the package index) and installed with ``--no-deps --no-index``;
the new environment sees the dependencies already installed for this interpreter through a ``.pth``
file that lists their site-packages folders (added after installing, so pip never sees the
repository's editable fdpose; ``.pth`` files inside those folders, the editable finder's among
them, are not processed, so ``import pipeline`` finds the wheel's copy only).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _setuptools_builds_wheels() -> bool:
    """Whether this interpreter's setuptools builds this wheel as it is: without the ``wheel`` package
    (>= 70.1) and with an SPDX ``license`` string (>= 77)."""
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (77, 0)


def _run(args: list[str], cwd: Path, timeout: int = 600, index: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", YOLO_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               YOLO_CONFIG_DIR=str(cwd / ".ultralytics"))
    if not index:
        env["PIP_NO_INDEX"] = "1"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of a clean copy of the sources (a stale build/ folder in the checkout cannot leak in)."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    # Offline with the installed setuptools when it can build the wheel (>= 77); an older one
    # (Python 3.11's venv default) gets pyproject's build requirements from the index instead.
    offline = _setuptools_builds_wheels()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *(["--no-build-isolation"] if offline else []),
          "--wheel-dir", str(wheels), str(source)], cwd=tmp_path, index=not offline)
    (wheel,) = wheels.glob("fdpose-*.whl")
    return wheel


def _dependency_dirs() -> list[str]:
    """This interpreter's site-packages folders (where fdpose's dependencies are installed)."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            site.getusersitepackages()]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, a working folder outside the repository)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path).stdout.strip()
    (Path(purelib) / "fdpose-test-dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    return venv / "bin", outside


def test_wheel_imports_its_own_copy_with_the_model_files(installed):
    bin_dir, outside = installed
    code = ("import pipeline, pathlib; from pipeline.nn.ultralytics import MODELS_DIR; "
            "print(pipeline.__file__); print(sorted(p.name for p in MODELS_DIR.iterdir())); "
            "print((pathlib.Path(pipeline.__file__).parent / 'cfg/skeletons/coco_person.yaml').is_file())")
    lines = _run([str(bin_dir / "python"), "-c", code], cwd=outside).stdout.strip().splitlines()
    venv = bin_dir.parent.resolve()
    assert Path(lines[0]).resolve().is_relative_to(venv), lines[0]  # not the repository's pipeline/
    assert not Path(lines[0]).resolve().is_relative_to(REPO)
    assert "yolov8-pose-C2f_FDConv.yaml" in lines[1] and "yolo26-pose-C3k2_FDConv.yaml" in lines[1]
    assert lines[2] == "True"


def test_wheel_cli_help_and_model_info_by_bare_name(installed):
    bin_dir, outside = installed
    fdpose = str(bin_dir / "fdpose")
    assert "train" in _run([fdpose, "--help"], cwd=outside).stdout
    info = _run([fdpose, "model", "info", "yolov8n-pose-C2f_FDConv.yaml", "--imgsz", "320"],
                cwd=outside).stdout
    assert "yolov8n-pose-C2f_FDConv" in info and "ratio" in info


def test_wheel_trains_one_epoch_with_the_default_model(installed):
    bin_dir, outside = installed
    fdpose = str(bin_dir / "fdpose")
    _run([fdpose, "demo-data", "--out", "demo", "--images", "8", "--size", "64"], cwd=outside)
    _run([fdpose, "convert", "--from", "label-studio", "--input", "demo/export.json",
          "--images", "demo/images", "--label-config", "demo/label_config.xml",
          "--skeleton", "coco_person.yaml", "--split", "0.5,0.5", "--out", "dataset", "--quiet"], cwd=outside)
    assert not (outside / "cfg").exists()  # nothing here but what the commands wrote
    result = _run([fdpose, "train", "--data", "dataset/data.yaml", "--out", "run", "--epochs", "1",
                   "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu"], cwd=outside)
    assert "trained 1 epochs on cpu" in result.stdout
    args = (outside / "run" / "args.yaml").read_text()
    assert "yolov8n-pose-C2f_FDConv.yaml" in args and str(bin_dir.parent) in args  # the wheel's model file
    assert (outside / "run" / "weights" / "best.pt").is_file()
