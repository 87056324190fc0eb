"""The model a server process predicts with, and its atomic swap.

Every process of the server keeps one :class:`ServedModel` and compares it with the work folder's
``current`` entry before predicting (one file stat when nothing changed); a new current model (a
training that was accepted, maybe by another worker process) is loaded beside the old one and then
put in its place with one assignment, so a request sees either the old model or the new one, whole.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError
from pipeline.model_io import load_runner
from pipeline.serve.state import WorkFolder

log = logging.getLogger("fdpose.serve")


def training_checkpoint(path: Path) -> Path:
    """The ultralytics checkpoint a training starts from and is compared with: a package's
    ``model.pt``, or the checkpoint itself."""
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


@dataclass(frozen=True)
class ServedModel:
    version: str
    path: Path
    runner: Any  # a TorchRunner or OnnxRunner

    @property
    def meta(self) -> Any:
        return self.runner.meta


class ModelSlot:
    """The current :class:`ServedModel` of this process, refreshed from the work folder."""

    def __init__(self, work: WorkFolder, backend: str = "auto", threads: int | None = None):
        self.work = work
        self.backend = backend
        self.threads = threads
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._model: ServedModel | None = None
        if threads:
            import torch

            torch.set_num_threads(threads)  # onnxruntime gets them through load_runner
        self.refresh()

    def _load(self, version: str, path: Path) -> ServedModel:
        return ServedModel(version, path, load_runner(path, self.backend, self.threads))

    def refresh(self) -> ServedModel:
        """The current model, loading a new one first when the work folder names another."""
        stat = self.work.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        model = self._model
        if model is not None and stamp == self._stamp:
            return model
        with self._lock:
            current = self.work.read()["current"]
            if self._model is None:
                self._model = self._load(current["version"], Path(current["path"]))
            elif self._model.version != current["version"]:
                try:
                    self._model = self._load(current["version"], Path(current["path"]))
                except FdposeError as error:  # keep serving the model that works
                    log.error("cannot load %s, still serving %s: %s", current["path"], self._model.version,
                              error)
            self._stamp = stamp
            return self._model
