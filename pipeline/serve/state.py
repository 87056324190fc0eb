"""The server's work folder: which model is served, what training did, what failed.

``<work>/state.json`` (written atomically, changed under ``<work>/state.lock``, so several server
processes share it)::

    {"base": <the --model the folder was made for>, "base_version", "current": {"version", "path"},
     "history": [{"version", "path", "started", "finished", "status": "accepted" | "rejected" | "failed",
                  "project", "metrics": {"new": {...}, "old": {...}}, "reason"}],
     "training": null | {"project", "started"}, "queued": null | {"project", "requested"},
     "annotations": {"<project>": <new annotations since the last training>}, "last_error": null | str}

Trained packages live in ``<work>/models/<version>/``, training runs in ``<work>/jobs/<n>/``; after
each training, :meth:`WorkFolder.prune` keeps the newest ``--keep`` of each (and always the served
package), marking the history entries of removed packages ``"pruned": true``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError
from pipeline.io import write_json

HISTORY_KEPT = 100  # entries of training history kept in state.json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class WorkFolder:
    """``state.json`` and its lock in one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "state.json"
        self.models = self.root / "models"
        self.jobs = self.root / "jobs"

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise FdposeError(f"unreadable server state ({error})", path=self.path) from None

    @contextlib.contextmanager
    def lock(self, name: str = "state.lock", blocking: bool = True) -> Iterator[bool]:
        """An exclusive lock on ``<work>/<name>`` across processes; yields whether it was taken."""
        with open(self.root / name, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change, write back atomically, all under the state lock."""
        with self.lock():
            state = self.read()
            yield state
            state["history"] = state.get("history", [])[-HISTORY_KEPT:]
            write_json(self.path, state)

    def initialise(self, base: Path, version: str) -> dict[str, Any]:
        """The state for serving ``base``: a fresh one, or the folder's own if it was made for ``base``
        (then its current model, maybe a trained one, is served again)."""
        base = Path(base).resolve()
        with self.update() as state:
            if state and state.get("base") != str(base):
                raise FdposeError(f"this work folder serves models derived from {state.get('base')}, not "
                                  f"{base}; use another --work-dir", path=self.root)
            if not state:
                state.update(base=str(base), base_version=version, history=[], annotations={},
                             current={"version": version, "path": str(base)}, last_error=None)
            state.setdefault("training", None)
            state.setdefault("queued", None)
            return dict(state)

    def clear_stale_training(self) -> None:
        """At server start: a server that stopped mid-training left no job running, so its training
        flag and queue are stale (called once, before any worker process starts)."""
        with self.update() as state:
            if state.get("training"):
                state["last_error"] = f"training of project {(state.get('training') or {}).get('project')} " \
                                      "was interrupted by a server restart"
            state["training"], state["queued"] = None, None

    def next_job(self) -> Path:
        """A new, empty run folder ``jobs/<n>``, numbered after the highest one (pruning leaves gaps)."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        numbers = [int(path.name) for path in self.jobs.iterdir() if path.name.isdigit()]
        out = self.jobs / f"{max(numbers, default=0) + 1:04d}"
        out.mkdir()
        return out

    def prune(self, keep: int) -> list[Path]:
        """Remove all but the ``keep`` newest trained packages (the served one is always kept) and
        training runs; ``keep`` 0 keeps everything. Returns what was removed. Newest: made last by the
        history, then by name (a package older than the history kept in state.json counts as oldest)."""
        if keep <= 0:
            return []
        removed = []
        with self.update() as state:
            history = state.get("history") or []
            made = {str(Path(entry["path"])): index for index, entry in enumerate(history)
                    if entry.get("path")}
            packages = sorted(_folders(self.models), key=lambda path: (made.get(str(path), -1), path.name))
            served = Path(state["current"]["path"])
            removed += [package for package in packages[:-keep] if package != served]
            jobs = sorted((path for path in _folders(self.jobs) if path.name.isdigit()),
                          key=lambda path: int(path.name))
            removed += jobs[:-keep]
            for path in removed:
                shutil.rmtree(path)
            gone = {str(path) for path in removed}
            for entry in history:
                if entry.get("path") and str(Path(entry["path"])) in gone:
                    entry["pruned"] = True
        return removed


def _folders(root: Path) -> list[Path]:
    return [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
