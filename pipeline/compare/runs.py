"""The runs of a comparison: one folder per (model, seed), keyed by everything that determines it.

A run is ``fdpose train`` followed by ``fdpose eval`` (the stage functions themselves). Its folder
``<runs>/<model>-seed<seed>-<key>`` holds ``key.json`` (what the key was computed from), ``train/``
(the train stage's run folder), ``train_time.json`` (training seconds so far, updated every epoch),
and per evaluation setting ``eval-<eval key>/`` (the eval stage's output) and, once it is done,
``run-<eval key>.json``: the record the report is built from. The key is a hash of what determines
the training: the model (its YAML as ultralytics reads it, or the checkpoint's bytes), the dataset's
images and labels, the training settings, the seed, any pretrained checkpoint, the model code
(``pipeline/nn``) and the torch and ultralytics versions; the eval key, of the split and the scoring
settings. So other eval settings evaluate the trained runs again without training them again.

Resuming: a run with its record is done and kept; so is one the ledger knows
(:mod:`pipeline.compare.ledger`: the committed record of a finished run with the same key). Without
either, a finished ``train/`` is kept and only evaluated; an interrupted training
(``train.partial/weights/last.pt``) is resumed from its last epoch; anything else trains from the
start.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import TrainParams, validate_section
from pipeline.errors import FdposeError
from pipeline.evaluate import evaluate
from pipeline.io import sha256_file, write_json
from pipeline.train import train

KEY_FILE = "key.json"
CLOCK_FILE = "train_time.json"
METRICS = ("oks_map", "oks_map50", "oks_map75", "box_map", "box_map50")  # from the eval's metrics.json
SCORING = ("conf", "iou", "max_det", "device", "match_oks", "pck_thresholds")  # eval settings that change it


@dataclass(frozen=True)
class RunSettings:
    """What every run of a comparison shares: the data and the training and evaluation settings."""

    data: Path
    epochs: int
    imgsz: int
    batch: int
    device: str
    hyp: dict[str, Any]
    split: str
    eval_imgsz: int
    eval_params: dict[str, Any]
    code_sha256: str = ""  # model code (pipeline/nn) the runs are built with: model_code_fingerprint()
    plots: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One run: a model (under its label in the report), a seed and an optional pretrained start."""

    label: str
    model: str
    seed: int
    pretrained: str | None = None


@dataclass
class RunRecord:
    """A finished run as ``run.json`` holds it."""

    label: str
    model: str
    seed: int
    key: str
    eval_key: str
    folder: str  # the run folder (run.json stores its name; loading puts the folder's path here)
    metrics: dict[str, float | None]
    keypoints: list[dict[str, Any]]  # the eval's plots/keypoints.csv rows: PCK and pixel error
    train_seconds: float
    epochs: int
    pretrained: str | None = None
    cached: bool = field(default=False, compare=False)  # found done on disk, not run now

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        values = json.loads(path.read_text(encoding="utf-8"))
        values.update(folder=str(path.parent), cached=True)
        return cls(**values)

    @property
    def weights(self) -> Path:
        return Path(self.folder) / "train" / "weights" / "best.pt"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("cached")
        values["folder"] = Path(self.folder).name
        return values


# --- the key ---------------------------------------------------------------------------------------


def dataset_fingerprint(data_yaml: Path) -> str:
    """A hash of ``data.yaml`` and of what training reads under the dataset's root: the images and the
    label files (names and bytes); reports and previews beside them play no part."""
    from pipeline.formats.yolo import load_data_yaml
    from pipeline.images import IMAGE_SUFFIXES

    _, root = load_data_yaml(data_yaml)
    digest = hashlib.sha256(data_yaml.read_bytes())
    read = {*IMAGE_SUFFIXES, ".txt"}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in read):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def model_fingerprint(model: str) -> str:
    """A hash of what a model argument builds: a checkpoint's bytes, or the model dict of a YAML as
    ultralytics reads it (scale included), so a bare name and a path to the same file agree."""
    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise FdposeError("model checkpoint not found", path=model)
        return sha256_file(Path(model))
    from ultralytics.nn.tasks import yaml_model_load

    from pipeline.nn.ultralytics import register

    register()
    try:
        d = yaml_model_load(model)
    except FileNotFoundError:
        raise FdposeError("model YAML not found", path=model) from None
    d = {key: value for key, value in d.items() if key != "yaml_file"}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def model_code_fingerprint() -> str:
    """A hash of the model code (``pipeline/nn/*.py``: FDConv, its blocks and the ultralytics adapter)
    as this process first reads it: the code it runs, which later edits of the files do not change."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "nn").glob("*.py")):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def run_key(spec: RunSpec, settings: RunSettings, data_hash: str) -> dict[str, Any]:
    """Everything that determines a run's training, as key.json holds it; its hash names the folder."""
    import torch
    import ultralytics

    return {
        "model_sha256": model_fingerprint(spec.model), "seed": spec.seed,
        "pretrained_sha256": sha256_file(Path(spec.pretrained)) if spec.pretrained else None,
        "data_sha256": data_hash, "epochs": settings.epochs, "imgsz": settings.imgsz,
        "batch": settings.batch, "device": settings.device, "hyp": settings.hyp,
        "code_sha256": settings.code_sha256, "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
    }


def eval_key(settings: RunSettings) -> dict[str, Any]:
    """What determines a run's evaluation beside its weights and data: the split, size and scoring."""
    return {"split": settings.split, "imgsz": settings.eval_imgsz,
            **{name: settings.eval_params.get(name) for name in SCORING}}


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def run_folder(runs: Path, spec: RunSpec, key: str) -> Path:
    """``<runs>/<model name>-seed<seed>-<key prefix>``; the label a report gives the model plays no part."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec.model).stem).strip("_") or "model"
    return runs / f"{slug}-seed{spec.seed}-{key[:12]}"


# --- one run ---------------------------------------------------------------------------------------


class TrainClock:
    """Training seconds of a run across interruptions: what earlier sessions recorded in
    ``train_time.json`` plus this session's, written after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
        self.start = time.monotonic()

    def seconds(self) -> float:
        return self.before + time.monotonic() - self.start

    def save(self, _trainer: Any = None) -> None:
        write_json(self.path, {"seconds": round(self.seconds(), 3)})


def _train(spec: RunSpec, settings: RunSettings, folder: Path) -> None:
    """Train the run into ``folder/train``: resumed from its last epoch when it was interrupted."""
    clock = TrainClock(folder / CLOCK_FILE)
    callbacks = {"on_fit_epoch_end": [clock.save]}
    out = folder / "train"
    params = TrainParams(model=spec.model, pretrained=spec.pretrained, epochs=settings.epochs,
                         imgsz=settings.imgsz, batch=settings.batch, device=settings.device, seed=spec.seed,
                         plots=settings.plots, hyp=settings.hyp)
    if (folder / "train.partial" / "weights" / "last.pt").is_file():
        train(settings.data, out, params, resume=True, given=("imgsz", "batch", "plots"), callbacks=callbacks)
    else:
        clock.before = 0.0
        train(settings.data, out, params, params_source="compare", callbacks=callbacks)
    clock.save()


def _keypoint_rows(path: Path) -> list[dict[str, Any]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    numeric = [key for key in (rows[0] if rows else {}) if key.startswith("pck@") or key in ("count",
                                                                                           "mean_px_error")]
    return [{key: (float(value) if value != "" else None) if key in numeric else value
             for key, value in row.items()} for row in rows]


Reuse = Callable[[Path, str, str, str], "RunRecord | None"]  # (folder, key, eval key, label) -> a done run


def execute(spec: RunSpec, settings: RunSettings, runs: Path, data_hash: str,
            reuse: Reuse | None = None) -> RunRecord:
    """The record of a run: read back when done, else from ``reuse`` (the ledger) when it knows the run,
    otherwise trained (or resumed) and evaluated now."""
    key = run_key(spec, settings, data_hash)
    digest = key_hash(key)
    folder = run_folder(runs, spec, digest)
    scoring = key_hash(eval_key(settings))[:12]
    record_path, eval_dir = folder / f"run-{scoring}.json", folder / f"eval-{scoring}"
    if record_path.is_file():
        record = RunRecord.load(record_path)
        record.label = spec.label  # a report's name for the model, not part of the run
        return record
    if reuse is not None and (known := reuse(folder, digest, scoring, spec.label)) is not None:
        return known
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / KEY_FILE, {**key, "key": digest})
    train_dir = folder / "train"
    if not (train_dir / "metrics.json").is_file():
        _train(spec, settings, folder)
    weights = train_dir / "weights" / "best.pt"
    if not (eval_dir / "metrics.json").is_file():
        params = validate_section("eval", {**settings.eval_params, "split": settings.split,
                                           "imgsz": settings.eval_imgsz}, "compare")
        evaluate(weights, settings.data, eval_dir, params=params)
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    trained = json.loads((train_dir / "metrics.json").read_text(encoding="utf-8"))
    clock = folder / CLOCK_FILE
    record = RunRecord(
        label=spec.label, model=spec.model, seed=spec.seed, key=digest, eval_key=scoring, folder=str(folder),
        metrics={name: metrics.get(name) for name in METRICS},
        keypoints=_keypoint_rows(eval_dir / "plots" / "keypoints.csv"),
        train_seconds=json.loads(clock.read_text())["seconds"] if clock.is_file() else 0.0,
        epochs=int(trained.get("epochs", settings.epochs)), pretrained=spec.pretrained,
    )
    write_json(record_path, record.to_dict())  # last: its presence marks the run done
    return record


# --- several runs ----------------------------------------------------------------------------------


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def execute_all(specs: list[RunSpec], settings: RunSettings, runs: Path, data_hash: str,
                reuse: Reuse | None = None, jobs: int = 1) -> list[RunRecord]:
    """The records of ``specs`` in their order: one after another, or ``jobs`` at a time in worker
    processes (each on its share of the CPU threads). A run is the same either way: its key does not
    hold the number of jobs (float sums over another thread count may differ in the last digits)."""
    if jobs <= 1 or len(specs) <= 1:
        return [execute(spec, settings, runs, data_hash, reuse) for spec in specs]
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(specs)), mp_context=spawn, initializer=_worker_threads,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(execute, spec, settings, runs, data_hash, reuse) for spec in specs]
        return [future.result() for future in futures]
