"""The package stage: weights, eval numbers and data in; the package folder and its zip out
(:func:`package`; what a package holds is described in :mod:`pipeline.package`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import EvalParams, PackageParams
from pipeline.errors import FdposeError
from pipeline.inference import ModelMeta, OnnxRunner, OpenVinoRunner, Runner, TorchRunner, import_openvino
from pipeline.io import atomic_dir, read_json, sha256_file, stage_bytes
from pipeline.metrics import data_fingerprint
from pipeline.model_io import (
    PACKAGE_FORMAT,
    Layout,
    check_fits,
    checkpoint_model,
    load_checkpoint,
    load_packaged_model,
    meta_from_model,
)
from pipeline.package.archive import CHECKSUMS, archive_bytes, package_files, write_checksums
from pipeline.package.card import LATENCY_RUNS, DataInfo, FormatScores, model_card
from pipeline.package.export import ExportCheck, check_export, export_onnx, export_openvino


def data_info(data_yaml: Path | None, meta: ModelMeta, weights: Path) -> tuple[ModelMeta, DataInfo]:
    """Complete the model's metadata from its dataset (flip permutation, sigmas, edges), count it and
    fingerprint it. Without a dataset the checkpoint's own attributes are used as they are."""
    if data_yaml is None or not data_yaml.is_file():
        return meta, DataInfo(source="checkpoint attributes (dataset not found: flip permutation and "
                                     "sigmas inferred from keypoint names)")
    from pipeline.formats.yolo import read_yolo

    dataset = read_yolo(data_yaml)
    check_fits(Layout.of_skeleton(meta.skeleton), Layout.of_skeleton(dataset.skeleton), role="packaged",
               model_path=weights, data_path=data_yaml)
    meta = ModelMeta(dataset.skeleton, imgsz=meta.imgsz, stride=meta.stride)
    # Per split, the fingerprint fdpose eval records as data_sha256 (images and labels by name and
    # content), so the card shows which split the eval numbers belong to; the whole dataset's
    # fingerprint covers data.yaml and every split's.
    counts: dict[str, dict[str, Any]] = {}
    for split, records in sorted(dataset.splits().items()):
        if records:
            counts[split] = {"images": len(records), "instances": sum(len(r.instances) for r in records),
                             "sha256": data_fingerprint(records)}
    digest = hashlib.sha256(data_yaml.read_bytes())
    digest.update("".join(f"\n{split} {c['sha256']}" for split, c in counts.items()).encode())
    # The ONNX check image: the first validation image (else the first image at all).
    check_split = "val" if "val" in counts else next(iter(counts), None)
    records = sorted(dataset.splits().get(check_split, []), key=lambda r: r.file_name) if check_split else []
    return meta, DataInfo(source=f"dataset {data_yaml.name}", data_yaml=data_yaml,
                          fingerprint=digest.hexdigest(), counts=counts,
                          sample_image=records[0].path if records else None)



@dataclass
class PackageResult:
    """What ``package`` wrote."""

    out: Path
    archive: Path
    files: list[str]
    checks: list[ExportCheck]
    notes: list[str] = field(default_factory=list)  # e.g. that the OpenVINO IR was skipped, and why
    latency: dict[str, float] | None = None  # format -> median batch-1 ms, when measured
    scores: FormatScores | None = None  # each format's OKS mAP on the eval split, when scored

    def summary(self) -> str:
        lines = [f"packaged {len(self.files)} files -> {self.out} and {self.archive.name}"]
        lines += [check.line() for check in self.checks] + self.notes
        if self.scores is not None:
            lines.append(self.scores.line())
        if self.latency:
            figures = ", ".join(f"{name} {ms:.1f} ms" for name, ms in self.latency.items())
            lines.append(f"batch-1 latency on this machine (median of {LATENCY_RUNS}): {figures} "
                         "(in MODEL_CARD.md, so this package is not byte-reproducible)")
        return "\n".join(lines)


def read_eval_metrics(eval_dir: Path, weights: Path) -> dict[str, Any]:
    """``eval_dir/metrics.json``, refused when it names other weights than ``weights``: the card must not
    show another model's numbers (fdpose eval records the weights' sha256)."""
    metrics_path = eval_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FdposeError("metrics.json not found (run fdpose eval first)", path=eval_dir)
    metrics = read_json(metrics_path, "metrics.json")
    if not isinstance(metrics, dict):
        raise FdposeError("expected a JSON object of metrics", path=metrics_path)
    evaluated = metrics.get("model_sha256")
    if evaluated is not None and evaluated != sha256_file(weights):
        raise FdposeError(f"these numbers are for weights with sha256 {evaluated}, not {weights} "
                          "(run fdpose eval on the weights you package)", path=metrics_path)
    return metrics


def _data_yaml(data: str | Path | None, train_args: dict[str, Any]) -> Path | None:
    """``data`` (which must exist), else the checkpoint's training data.yaml (which may be gone)."""
    if data is not None:
        if not Path(data).is_file():
            raise FdposeError("data.yaml not found", path=data)
        return Path(data)
    return Path(train_args["data"]) if train_args.get("data") else None


def write_model_files(tmp: Path, checkpoint: dict[str, Any], weights: Path, meta: ModelMeta, image: Path,
                      opset: int, tolerance: float, out: Path
                      ) -> tuple[list[ExportCheck], Any, dict[str, Any]]:
    """``model.pt``, ``model.safetensors`` + ``model.yaml`` and ``model.onnx`` into ``tmp``; the ONNX file is
    exported from the model rebuilt from safetensors (as it ships) and checked against it on ``image``.
    Returns the checks, the rebuilt model and its architecture dict."""
    from safetensors.torch import save_file
    from ultralytics.utils.torch_utils import strip_optimizer

    source_model = checkpoint_model(checkpoint)
    architecture = json.loads(json.dumps(source_model.yaml))  # plain lists/dicts for yaml.safe_dump
    architecture.pop("yaml_file", None)  # a build-time path; scale is kept in 'scale'
    # model.pt: ultralytics' own stripping, keeping the checkpoint's date instead of "now".
    strip_optimizer(weights, tmp / "model.pt", updates={"date": checkpoint.get("date", "unknown")})
    state = {k: v.detach().contiguous().clone() for k, v in source_model.state_dict().items()}
    # One metadata key only: safetensors writes the metadata map in hash order, which varies by run.
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    package_yaml = {"format": PACKAGE_FORMAT, "task": "pose", "weights": "model.safetensors",
                    "architecture": architecture, "meta": meta.to_dict()}
    package_text = yaml.safe_dump(package_yaml, sort_keys=True, default_flow_style=None)
    (tmp / "model.yaml").write_text(package_text, encoding="utf-8")
    model = load_packaged_model(tmp)
    export_onnx(model, meta, meta.imgsz, tmp / "model.onnx", opset)
    checks = [check_export(model, meta, OnnxRunner(tmp / "model.onnx", meta), image, tolerance,
                           out / "model.onnx")]
    return checks, model, architecture


def write_openvino(tmp: Path, model: Any, meta: ModelMeta, image: Path, tolerance: float,
                   out: Path) -> ExportCheck | str:
    """``model.xml`` + ``model.bin`` (OpenVINO IR) from ``tmp/model.onnx``, checked against ``model`` like
    the ONNX file; without OpenVINO installed, the one line saying it was skipped."""
    try:
        import_openvino()
    except FdposeError as error:
        return f"OpenVINO IR skipped: {error}"
    export_openvino(tmp / "model.onnx", tmp / "model.xml")
    return check_export(model, meta, OpenVinoRunner(tmp / "model.xml", meta), image, tolerance,
                        out / "model.xml")


def package_latency(tmp: Path, model: Any, meta: ModelMeta, runs: int = LATENCY_RUNS) -> dict[str, float]:
    """Median batch-1 latency (ms) of each packaged format on this machine on a random input, the
    formats taking turns (:func:`pipeline.bench.timing.time_interleaved`)."""
    import functools

    import numpy as np

    from pipeline.bench.timing import time_interleaved

    runners: dict[str, Runner] = {"PyTorch": TorchRunner(model, meta, "safetensors"),
                                  "ONNX": OnnxRunner(tmp / "model.onnx", meta)}
    if (tmp / "model.xml").is_file():
        runners["OpenVINO"] = OpenVinoRunner(tmp / "model.xml", meta)
    batch = np.random.default_rng(0).random((1, 3, meta.imgsz, meta.imgsz), dtype=np.float32)
    timings = time_interleaved({name: functools.partial(runner, batch) for name, runner in runners.items()},
                               runs, warmup=2)
    return {name: timing.median for name, timing in timings.items()}


def score_formats(tmp: Path, data: DataInfo, params: EvalParams | None) -> FormatScores | str | None:
    """The OKS mAP of each packaged format (PyTorch from the safetensors, ONNX, OpenVINO) on
    ``params.split`` of the package's dataset, each run through its own runner as ``fdpose eval`` runs it
    (:func:`pipeline.evaluate.score_artifact`), at the package's input size. None without ``params``; the
    reason (a line) when there is no such split to score on."""
    if params is None:
        return None
    if data.data_yaml is None or not data.counts.get(params.split):
        return f"formats not scored: no {params.split!r} split in the package's data"
    from pipeline.evaluate import score_artifact

    params = dataclasses.replace(params, imgsz=None)  # ONNX and OpenVINO run only at the exported size
    files = {"PyTorch": tmp, "ONNX": tmp / "model.onnx", "OpenVINO": tmp / "model.xml"}
    metrics = {name: score_artifact(path, data.data_yaml, params) for name, path in files.items()
               if path.exists()}
    return FormatScores(params.split, data.counts[params.split]["images"],
                        {name: m["oks_map"] for name, m in metrics.items()})


def _copy_eval(eval_dir: Path, tmp: Path) -> str | None:
    """``eval/metrics.json`` (and ``eval/report.html`` when there is one, whose name is returned)."""
    (tmp / "eval").mkdir()
    shutil.copyfile(eval_dir / "metrics.json", tmp / "eval" / "metrics.json")
    if not (eval_dir / "report.html").is_file():
        return None
    shutil.copyfile(eval_dir / "report.html", tmp / "eval" / "report.html")
    return "eval/report.html"


def read_comparison(folder: Path) -> dict[str, Any]:
    """The ``summary.json`` of an ``fdpose compare`` report folder (with its ``report.md`` beside it)."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file() or not (folder / "report.md").is_file():
        raise FdposeError("not an fdpose compare report folder (summary.json and report.md)", path=folder)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FdposeError(f"unreadable summary: {error}", path=summary_path) from None
    if not isinstance(summary, dict) or "verdict" not in summary or "settings" not in summary:
        raise FdposeError("not a compare summary (no verdict or settings)", path=summary_path)
    return summary


def package(weights: str | Path, eval_dir: str | Path | None, out: str | Path,
            params: PackageParams | None = None, *, data: str | Path | None = None,
            image: str | Path | None = None, latency: bool = False,
            eval_params: EvalParams | None = None) -> PackageResult:
    """Package ``weights`` (an ultralytics pose checkpoint) into ``out/`` and ``out.zip``.

    ``params`` is the ``package`` section (default: its built-in defaults). ``data`` (a data.yaml)
    defaults to the checkpoint's training data when that still exists; it gives the keypoint layout,
    counts, fingerprint and the real image for the ONNX check (``image`` overrides that). The ONNX
    input size is ``params.imgsz``, else the training size recorded in the checkpoint. With OpenVINO
    installed (``fdpose[openvino]``) the package also holds an OpenVINO IR, checked like the ONNX
    file. ``latency`` measures each format's batch-1 latency into the card (which then differs from
    build to build). With ``eval_params`` each packaged format is evaluated on that split of the data
    and the card lists their OKS mAP side by side (:func:`score_formats`).
    """
    params = params if params is not None else PackageParams()
    weights, out = Path(weights), Path(out)
    checkpoint = load_checkpoint(weights)
    train_args = checkpoint.get("train_args") or {}
    imgsz = int(params.imgsz or train_args.get("imgsz") or 640)
    meta = meta_from_model(checkpoint_model(checkpoint), imgsz)
    if imgsz % meta.stride:
        raise FdposeError(f"imgsz {imgsz} is not a multiple of the model stride {meta.stride}", item="imgsz")
    meta, data = data_info(_data_yaml(data, train_args), meta, weights)
    image = Path(image) if image is not None else data.sample_image
    if image is None:
        raise FdposeError("no real image for the ONNX check: the training data was not found; pass --image "
                          "or --data", path=weights)
    metrics = read_eval_metrics(Path(eval_dir), weights) if eval_dir is not None else None
    comparison = Path(params.comparison) if params.comparison else None
    summary = read_comparison(comparison) if comparison is not None else None
    opset = params.opset
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        tolerance = float(params.onnx_tolerance)
        checks, model, architecture = write_model_files(tmp, checkpoint, weights, meta, image, opset,
                                                        tolerance, out)
        openvino = write_openvino(tmp, model, meta, image, tolerance, out)
        notes = [openvino] if isinstance(openvino, str) else []
        checks += [] if isinstance(openvino, str) else [openvino]
        measured = package_latency(tmp, model, meta) if latency else None
        scores = score_formats(tmp, data, eval_params)
        if isinstance(scores, str):
            notes.append(scores)
            scores = None
        report_name = _copy_eval(Path(eval_dir), tmp) if eval_dir is not None else None
        card = model_card(weights_name=weights.name, weights_sha256=sha256_file(weights),
                          checkpoint=checkpoint, meta=meta, architecture=architecture,
                          parameters=sum(p.numel() for p in model.parameters()), data=data,
                          metrics=metrics, report=report_name, checks=checks, opset=opset,
                          latency=measured, comparison=summary, scores=scores)
        if comparison is not None:  # the card links these
            (tmp / "comparison").mkdir()
            for name in ("summary.json", "report.md"):
                shutil.copyfile(comparison / name, tmp / "comparison" / name)
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        for path in tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        write_checksums(tmp)
        os.chmod(tmp / CHECKSUMS, 0o644)
        files = package_files(tmp) + [CHECKSUMS]
        # The archive is written before the folder replaces the old one: a write that fails keeps both.
        archive = stage_bytes(out.with_name(out.name + ".zip"), archive_bytes(tmp, out.name))
    archive_path = out.with_name(out.name + ".zip")
    os.replace(archive, archive_path)
    os.chmod(archive_path, 0o644)
    return PackageResult(out, archive_path, files, checks, notes, measured, scores)


