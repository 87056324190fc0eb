"""The ledger: what a comparison's finished runs leave in git, so their results survive a new machine.

The run cache (``compare.runs``) holds each run's weights and evaluation: too large for git, it lives
in DVC's cache. The ledger (``compare.ledger``, a folder committed with the reports) holds per run and
evaluation setting one small JSON file, named like the run folder: the key the run was computed from,
its record (metrics, per-keypoint PCK, training time) and what it cost in the sitting that measured it
(parameters, GFLOPs, batch-1 latency). A run missing from the cache whose key and evaluation key match
an entry is taken from the ledger instead of being trained again; the image bootstrap's result is kept
beside the entries, so a report can be rebuilt without the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.compare.cost import ModelCost
from pipeline.compare.runs import KEY_FILE, RunRecord
from pipeline.io import write_json


@dataclass
class Entry:
    """One finished run as the ledger holds it."""

    key: dict[str, Any]  # key.json of the run folder: what the run was computed from, and its hash
    record: dict[str, Any]  # RunRecord.to_dict()
    cost: dict[str, Any]  # ModelCost of the run's model, as a dict
    latency_ms: float

    def run_record(self, folder: Path, label: str) -> RunRecord:
        """The record, its folder the run cache's (where the weights would be), under ``label``."""
        values = {**self.record, "folder": str(folder), "label": label, "cached": True}
        return RunRecord(**values)

    def model_cost(self) -> ModelCost:
        return ModelCost(**self.cost)


def entry_path(ledger: Path, folder_name: str, eval_key: str) -> Path:
    return ledger / f"{folder_name}-{eval_key}.json"


def find(ledger: Path, folder: Path, key: str, eval_key: str) -> Entry | None:
    """The ledger's entry for the run ``folder`` (named by ``key``) evaluated with ``eval_key``, if the
    entry was computed from the same key."""
    path = entry_path(ledger, folder.name, eval_key)
    if not path.is_file():
        return None
    entry = Entry(**json.loads(path.read_text(encoding="utf-8")))
    if entry.key.get("key") != key or entry.record.get("eval_key") != eval_key:
        return None
    return entry


def record(ledger: Path, run: RunRecord, cost: ModelCost, latency_ms: float) -> Path:
    """Write (or replace) the entry of a finished run whose folder is in the run cache."""
    folder = Path(run.folder)
    key = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    entry = Entry(key=key, record=run.to_dict(), cost=asdict(cost), latency_ms=latency_ms)
    return write_json(entry_path(ledger, folder.name, run.eval_key), asdict(entry))
