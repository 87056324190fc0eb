"""A throw-away copy of this repository for running the DVC pipeline (and the README) end to end.

The copy holds what git would check out (tracked files plus untracked, not ignored ones, so that work
in progress is tested too), its own ``git init`` with one commit (``dvc exp run`` needs one) and the
``.dvc/`` state that is committed (``.dvc/config``, ``compare/.dvc/config``). :func:`shrink` makes it
cheap: a tiny demo dataset written by ``fdpose demo-data`` in place of ``data/raw/demo`` and a params
override (one epoch, 64 px, one augmented copy). Nothing is written into the real repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv running the tests: its `fdpose` and `dvc`
STAGES = ["convert", "augment", "train", "eval", "package"]
# Small enough for a few pipeline runs on 2 busy cores, large enough for a val split and an eval.
TINY_IMAGES = 16
TINY_PARAMS = {"train": {"epochs": 1, "imgsz": 64, "batch": 8, "plots": False},
               "augment": {"copies": 1}}


def repository_files() -> list[str]:
    """Paths git would put in a checkout of the working tree (tracked, or new and not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True).stdout.decode()
    # A path under a symlinked folder (a tracked file whose folder became a link) comes with the link.
    return sorted({name for name in listed.split("\0") if name and os.path.lexists(REPO / name)
                   and not any((REPO / parent).is_symlink() for parent in Path(name).parents[:-1])})


def env() -> dict[str, str]:
    """The environment of the commands: the venv first on PATH (as `make demo` does), offline."""
    environment = dict(os.environ)
    environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
    environment["YOLO_OFFLINE"] = "1"
    environment["DVC_NO_ANALYTICS"] = "1"
    environment.pop("LABEL_STUDIO_API_KEY", None)
    # The per-process ultralytics settings folder that importing pipeline.train made for this test
    # process: the commands make their own (sharing it would hide what test_dvc_queue checks).
    if Path(environment.get("YOLO_CONFIG_DIR", "")).name.startswith("fdpose-ultralytics-"):
        del environment["YOLO_CONFIG_DIR"]
    return environment


def run(repo: Path, *command: str, check: bool = True, timeout: float = 600,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` in ``repo``; on failure (when ``check``) fail with its output."""
    result = subprocess.run(list(command), cwd=repo, env={**env(), **(extra_env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result


def git_commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=fdpose tests", "-c", "user.email=tests@example.com",
        "commit", "-q", "--no-verify", "-m", message)


def copy_repository(dest: Path) -> Path:
    """Copy the repository's files to ``dest`` (symlinks kept as links) and make it a git repo."""
    for name in repository_files():
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    run(dest, "git", "init", "-q")
    return dest


def set_params(repo: Path, overrides: dict[str, dict]) -> None:
    """Merge ``overrides`` ({section: {key: value}}) into the copy's cfg/params.yaml."""
    path = repo / "cfg" / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def shrink(repo: Path, images: int = TINY_IMAGES) -> None:
    """A tiny demo dataset in place of data/raw/demo and the tiny params override. The comparison
    pipeline stays: it is its own DVC project (compare/), which the root's commands do not see."""
    run(repo, "fdpose", "demo-data", "--out", "data/raw/demo", "--images", str(images), "--size", "128")
    set_params(repo, TINY_PARAMS)


def make_tiny_repository(dest: Path) -> Path:
    """A shrunk copy with everything committed, ready for ``dvc repro``."""
    copy_repository(dest)
    shrink(dest)
    git_commit(dest, "tiny copy for the tests")
    return dest


def stages_run(output: str) -> list[str]:
    """The stages a ``dvc repro``/``dvc exp run`` ran, in order, from its output."""
    return re.findall(r"^Running stage '([^']+)'", output, flags=re.MULTILINE)


def experiments(repo: Path) -> dict[str, dict]:
    """``dvc exp show --json``, flattened: name (``workspace``, a commit's sha, an experiment's name)
    -> {"params", "metrics", "error", "rev", "experiment"} as DVC read them in that revision."""
    found = {}
    for entry in json.loads(run(repo, "dvc", "exp", "show", "--json").stdout):
        rows = [(entry.get("name") or entry["rev"], entry, False)]
        for experiment in entry.get("experiments") or []:
            rows.extend((experiment["name"], rev, True) for rev in experiment["revs"])
        for name, row, is_experiment in rows:
            data = row.get("data") or {}
            found[name] = {"params": data.get("params") or {}, "metrics": data.get("metrics") or {},
                           "error": row.get("error"), "rev": row["rev"], "experiment": is_experiment}
    return found


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> SHA-256 of its bytes)."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def build_tiny_pipeline(dest: Path) -> tuple[Path, str]:
    """A tiny repository after one full ``dvc repro``: (its path, the output of that run)."""
    make_tiny_repository(dest)
    return dest, run(dest, "dvc", "repro").stdout


def clone_built(template: Path, dest: Path) -> Path:
    """A copy of a built repository (git, DVC cache and lock, outputs) that a test may change."""
    shutil.copytree(template, dest, symlinks=True)
    return dest
