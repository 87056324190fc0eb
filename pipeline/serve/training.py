"""Training requests of ``fdpose serve``: one training at a time, at most one more waiting.

A request (START_TRAINING, ``/train``, or every ``train_every`` new annotations) starts a training
when none runs, else it becomes *the* queued one; later requests for the same project join it, those
for another project are refused (429) until the queued one has started. The
training is a :mod:`pipeline.serve.job` process holding ``<work>/training.lock``; this process's
thread waits for it, records the outcome in ``state.json`` (the new model becomes ``current`` only
when the job accepted it) and then starts the queued request, if any. The Label Studio key goes to
the job through its environment only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pipeline.io import write_json
from pipeline.labelstudio.client import API_KEY_ENV, URL_ENV
from pipeline.serve.protocol import RequestError
from pipeline.serve.state import WorkFolder, now

log = logging.getLogger("fdpose.serve")
ERROR_TAIL_LINES = 5  # lines of the job's stderr kept as the error in state.json


class Trainer:
    """Starts and follows training jobs for one server process."""

    def __init__(self, work: WorkFolder, params_path: Path, train_every: int = 0, keep: int = 0):
        self.work = work
        self.keep = keep  # trained packages and runs kept (WorkFolder.prune); 0: all
        self.params_path = Path(params_path).resolve()
        self.train_every = train_every
        self._keys: dict[int, tuple[str, str]] = {}  # project -> (url, key), in memory only
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def remember(self, project: int, url: str, key: str) -> None:
        """The Label Studio URL and key a project's trainings use (from /setup; never written)."""
        self._keys[project] = (url, key)

    def request(self, project: int) -> str:
        """Ask for a training of ``project``: ``"started"``, ``"queued"`` or ``"already queued"``."""
        with self.work.update() as state:
            if state.get("training") is None:
                state["training"] = {"project": project, "started": now()}
                status = "started"
            elif state.get("queued") is None:
                state["queued"] = {"project": project, "requested": now()}
                status = "queued"
            elif state["queued"]["project"] == project:
                status = "already queued"
            else:
                running, waiting = state["training"]["project"], state["queued"]["project"]
                raise RequestError(429, f"a training of project {running} is running and one of project "
                                        f"{waiting} is waiting; ask again once it has started")
        if status == "started":
            self._thread = threading.Thread(target=self._run_chain, args=(project,), daemon=True,
                                            name="fdpose-training")
            self._thread.start()
        return status

    def count_annotations(self, project: int, new: int = 1) -> str | None:
        """Count ``new`` annotations; start (or queue) a training every ``train_every`` of them."""
        if self.train_every <= 0:
            return None
        with self.work.update() as state:
            counts = state.setdefault("annotations", {})
            counts[str(project)] = counts.get(str(project), 0) + new
            due = counts[str(project)] >= self.train_every
            if due:
                counts[str(project)] = 0
        return self.request(project) if due else None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for this process's training thread (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """End a running training job (server shutdown); its entry is recorded as failed."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def _run_chain(self, project: int) -> None:
        while True:
            self._run_one(project)
            with self.work.update() as state:
                queued = state.get("queued")
                state["queued"] = None
                state["training"] = {"project": queued["project"], "started": now()} if queued else None
            if not queued:
                return
            project = int(queued["project"])

    def _run_one(self, project: int) -> None:
        started = now()
        entry: dict[str, Any] = {"project": project, "started": started}
        try:
            with self.work.lock("training.lock"):
                entry.update(self._job(project))
        except Exception as error:  # the server keeps serving; the reason goes to /health
            entry.update(status="failed", reason=f"{type(error).__name__}: {error}")
        entry["finished"] = now()
        with self.work.update() as state:
            state.setdefault("history", []).append(entry)
            if entry["status"] == "accepted":
                state["current"] = {"version": entry["version"], "path": entry["path"]}
                state["last_error"] = None
            elif entry["status"] == "failed":
                state["last_error"] = f"training of project {project} failed: {entry['reason']}"
        for path in self.work.prune(self.keep):
            log.info("pruned %s (--keep %d)", path, self.keep)

    def _job(self, project: int) -> dict[str, Any]:
        url, key = self._keys.get(project, (os.environ.get(URL_ENV), os.environ.get(API_KEY_ENV)))
        if not url or not key:
            return {"status": "failed",
                    "reason": f"no Label Studio URL and key for project {project}: connect the project "
                              f"(its /setup) or set {URL_ENV} and {API_KEY_ENV}"}
        served = Path(self.work.read()["current"]["path"])
        out = self.work.next_job()
        env = {**os.environ, API_KEY_ENV: key}
        command = [sys.executable, "-m", "pipeline.serve.job", "--url", url, "--project", str(project),
                   "--model", str(served), "--out", str(out), "--models", str(self.work.models),
                   "--params", str(self.params_path)]
        with open(out / "log.txt", "wb") as log:
            self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.PIPE,
                                             stdin=subprocess.DEVNULL)
            stderr = self._process.communicate()[1]
            log.write(stderr)
        process, self._process = self._process, None
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            errors = [line for line in lines if line.startswith("Error:")] or lines[-ERROR_TAIL_LINES:]
            write_json(out / "result.json", {"status": "failed", "returncode": process.returncode})
            return {"status": "failed", "job": out.name,
                    "reason": " | ".join(errors) or f"exit code {process.returncode}"}
        result = json.loads((out / "result.json").read_text(encoding="utf-8"))
        return {**result, "job": out.name}
