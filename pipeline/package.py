"""``fdpose package``: ship trained weights in forms someone else can load safely and run anywhere.

``fdpose package --weights W --eval DIR --out OUT`` writes ``OUT/`` and ``OUT.zip``:

* ``model.pt`` — the ultralytics checkpoint with the optimizer stripped (``strip_optimizer``), the
  checkpoint's own training date kept so a rebuild is byte-identical;
* ``model.safetensors`` + ``model.yaml`` — the weights without pickle, and everything needed to
  rebuild the model: the architecture dict (with its scale), ``kpt_shape``, keypoint and class names,
  flip permutation, OKS sigmas, skeleton edges, input size and stride. :func:`load_packaged_model`
  reads them with ``yaml.safe_load`` and ``safetensors``: no pickled code runs;
* ``model.onnx`` — exported from the safetensors model by the TorchScript exporter in eval mode, so
  FDConv's cached basis kernels and FFT-free FBM projections enter the graph as constants; checked
  with onnxruntime against PyTorch on a real image; packaging fails when the max abs difference of
  the raw outputs over their max abs value exceeds the tolerance (``package.onnx_tolerance``, 1e-4);
* ``MODEL_CARD.md`` — the model, its data, training parameters, eval numbers (``eval/metrics.json``
  and ``eval/report.html`` copied from ``--eval DIR``), versions, intended use and limits;
* ``SHA256SUMS`` — every other file, in ``sha256sum -c`` format; ``fdpose package --verify OUT``
  (or ``OUT.zip``) checks them and names every mismatched, missing or unlisted file.

The eval numbers must belong to the packaged weights: a ``metrics.json`` whose ``model_sha256``
names other weights is refused. ``fdpose package --bench OUT`` times the package at batch 1 on the
CPU: PyTorch as packaged, PyTorch with Conv+BN fused, and onnxruntime (:func:`bench_latency`).

The archive is reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions 0644, and
nothing time- or location-dependent in any file (ONNX doc strings cleared, no absolute paths in the
card), so packaging the same weights again gives a byte-identical ``OUT.zip``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from pipeline import __version__
from pipeline.config import load_params
from pipeline.errors import FdposeError
from pipeline.io import atomic_dir, atomic_write_bytes, write_json
from pipeline.predict import (
    ModelMeta,
    OnnxRunner,
    TorchRunner,
    letterbox,
    meta_from_ultralytics,
)

PACKAGE_FORMAT = "fdpose-model/1"
CHECKSUMS = "SHA256SUMS"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold: no build time leaks in
DEFAULTS = {"imgsz": None, "opset": 17, "onnx_tolerance": 1.0e-4}


# --- loading -------------------------------------------------------------------------------------


def _register() -> None:
    """Teach ultralytics the C2f_FDConv block before any model is built or unpickled."""
    from pipeline.nn.ultralytics import register

    register()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An ultralytics checkpoint (a pickle: only for files you trust), validated.

    Raises :class:`FdposeError` for a missing file or one that is not an ultralytics pose checkpoint.
    """
    _register()
    from ultralytics.utils.torch_utils import torch_load

    path = Path(path)
    if not path.is_file():
        raise FdposeError("weights file not found", path=path)
    try:
        checkpoint = torch_load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises a zoo of types for a non-checkpoint file
        raise FdposeError(f"not a loadable PyTorch checkpoint ({type(error).__name__}: {error})",
                          path=path) from None
    model = _checkpoint_model(checkpoint) if isinstance(checkpoint, dict) else None
    if model is None or not hasattr(model, "yaml"):
        raise FdposeError("not an ultralytics checkpoint (no 'model' or 'ema' entry with a YAML)", path=path)
    if getattr(model, "kpt_shape", None) is None:
        raise FdposeError("not a pose model (no kpt_shape)", path=path)
    return checkpoint


def _checkpoint_model(checkpoint: dict[str, Any]) -> Any:
    """The model a checkpoint carries: the EMA weights while training, else ``model``."""
    return checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint.get("model")


def read_model_yaml(directory: str | Path) -> ModelMeta:
    """The inference metadata of a package directory (``model.yaml``, read with ``yaml.safe_load``)."""
    return ModelMeta.from_dict(_read_package_yaml(Path(directory))["meta"], Path(directory) / "model.yaml")


def _read_package_yaml(directory: Path) -> dict[str, Any]:
    path = directory / "model.yaml"
    if not path.is_file():
        raise FdposeError("model.yaml not found (not an fdpose package?)", path=directory)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FdposeError(f"invalid YAML ({error})", path=path) from None
    if not isinstance(data, dict) or data.get("format") != PACKAGE_FORMAT:
        raise FdposeError(f"not an {PACKAGE_FORMAT} file", path=path)
    return data


def load_packaged_model(directory: str | Path) -> Any:
    """Rebuild the pose model from ``model.yaml`` + ``model.safetensors``: no pickle is involved.

    The architecture dict goes to ultralytics' ``PoseModel`` (C2f_FDConv registered first), the
    weights are loaded strictly (every tensor present, no extras) in float32, and the model comes
    back in eval mode with ultralytics' ``names``, ``kpt_shape``, ``kpt_names`` attributes set.
    """
    import torch
    from safetensors.torch import load_file

    _register()
    from ultralytics.nn.tasks import PoseModel

    directory = Path(directory)
    data = _read_package_yaml(directory)
    meta = ModelMeta.from_dict(data["meta"], directory / "model.yaml")
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FdposeError("model.safetensors not found", path=directory)
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises SafetensorError / OSError for a damaged file
        raise FdposeError(f"unreadable safetensors file ({error})", path=weights) from None
    torch.manual_seed(0)  # the weights are overwritten below; a fixed seed keeps construction repeatable
    model = PoseModel(data["architecture"], ch=3, nc=meta.num_classes, data_kpt_shape=tuple(meta.kpt_shape),
                      verbose=False)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                              strict=True)
    except RuntimeError as error:
        raise FdposeError(f"weights do not fit the architecture in model.yaml ({error})",
                          path=weights) from None
    model.names = dict(enumerate(meta.class_names))
    model.kpt_names = {i: list(meta.keypoint_names) for i in range(meta.num_classes)}
    model.kpt_oks_sigmas = list(meta.sigmas)
    return model.float().eval()


# --- the skeleton and data behind the checkpoint -------------------------------------------------


@dataclass
class DataInfo:
    """What the card says about the training data."""

    source: str  # where the keypoint layout came from
    data_yaml: Path | None = None
    fingerprint: str | None = None
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> images, instances, sha256
    sample_image: Path | None = None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _data_info(data_yaml: Path | None, meta: ModelMeta) -> tuple[ModelMeta, DataInfo]:
    """Complete the model's metadata from its dataset (flip permutation, sigmas, edges), count it and
    fingerprint it. Without a dataset the checkpoint's own attributes are used as they are."""
    if data_yaml is None or not data_yaml.is_file():
        return meta, DataInfo(source="checkpoint attributes (dataset not found: flip permutation and "
                                     "sigmas inferred from keypoint names)")
    from pipeline.formats.yolo import read_yolo

    dataset = read_yolo(data_yaml)
    skeleton = dataset.skeleton
    if skeleton.kpt_shape != meta.kpt_shape or len(skeleton.class_names) != meta.num_classes:
        raise FdposeError(f"dataset kpt_shape {skeleton.kpt_shape} / {len(skeleton.class_names)} classes do "
                          f"not match the model's {meta.kpt_shape} / {meta.num_classes}", path=data_yaml)
    meta = ModelMeta(class_names=list(skeleton.class_names), keypoint_names=list(skeleton.keypoint_names),
                     kpt_shape=list(skeleton.kpt_shape), edges=[list(e) for e in skeleton.edges],
                     flip_idx=list(skeleton.flip_permutation), sigmas=list(skeleton.sigmas),
                     imgsz=meta.imgsz, stride=meta.stride)
    # Per split, the fingerprint fdpose eval records as data_sha256 (images and labels by name and
    # content), so the card shows which split the eval numbers belong to; the whole dataset's
    # fingerprint covers data.yaml and every split's.
    from pipeline.evaluate import data_fingerprint

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


# --- export and check ----------------------------------------------------------------------------


def export_onnx(model: Any, meta: ModelMeta, imgsz: int, path: Path, opset: int = 17) -> Path:
    """Export ``model`` for ``imgsz`` x ``imgsz`` inputs with the TorchScript exporter, deterministically.

    Eval mode makes FDConv use cached basis kernels and FFT-free projections, traced as constants.
    The head's ``export`` flag makes it return the decoded tensor alone (same layout as in eval).
    Doc strings (which may carry source locations) are cleared; the metadata is stored as JSON.
    """
    import copy

    import onnx
    import torch

    export_model = copy.deepcopy(model).float().eval()
    for module in export_model.modules():
        if hasattr(module, "export") and hasattr(module, "kpt_shape"):
            module.export = True
            module.format = "onnx"
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # A static-shape export on purpose: shape-derived Python values (FDConv's projection sizes,
        # its kernel-or-activation side choice) are meant to become constants, as the tracer warns.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(export_model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    proto.producer_name, proto.producer_version = "fdpose", __version__
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fdpose", json.dumps({**meta.to_dict(), "imgsz": imgsz}, sort_keys=True)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString(deterministic=True))
    return path


@dataclass
class OnnxCheck:
    """ONNX vs PyTorch on one real image: raw output difference, absolute and relative to the scale."""

    image: str
    max_abs_diff: float
    max_abs_value: float
    relative: float
    tolerance: float


def check_onnx(model: Any, meta: ModelMeta, onnx_path: Path, image_path: Path, imgsz: int,
               tolerance: float) -> OnnxCheck:
    """Compare raw outputs of ``model`` (PyTorch) and ``onnx_path`` (onnxruntime) on ``image_path``."""
    import cv2

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise FdposeError("cannot read the image for the ONNX check", path=image_path)
    batch, _ = letterbox(image, imgsz)
    expected = TorchRunner(model, meta, "safetensors")(batch)
    actual = OnnxRunner(onnx_path, meta)(batch)
    if actual.shape != expected.shape:
        raise FdposeError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}",
                          path=onnx_path)
    max_abs_diff = float(np.abs(actual.astype(np.float64) - expected).max())
    max_abs_value = float(np.abs(expected).max())
    relative = max_abs_diff / max(max_abs_value, 1e-12)
    return OnnxCheck(image_path.name, max_abs_diff, max_abs_value, relative, tolerance)


# --- checksums and archive -----------------------------------------------------------------------


def _package_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: Path) -> Path:
    """``SHA256SUMS`` for every file in ``directory`` (sorted; ``sha256sum -c`` compatible)."""
    lines = [f"{_sha256_file(directory / name)}  {name}\n" for name in _package_files(directory)]
    path = directory / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def archive_bytes(directory: Path, root_name: str) -> bytes:
    """A reproducible zip of ``directory`` under ``root_name/``: sorted, fixed dates and permissions."""
    buffer = io.BytesIO()
    names = _package_files(directory) + [CHECKSUMS]
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(names):
            info = zipfile.ZipInfo(f"{root_name}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr below means mode bits everywhere
            info.external_attr = 0o100644 << 16
            archive.writestr(info, (directory / name).read_bytes(), compresslevel=9)
    return buffer.getvalue()


@dataclass
class VerifyResult:
    """Checksum verification of a package directory or archive."""

    path: Path
    checked: list[str]
    mismatched: list[str]
    missing: list[str]
    unlisted: list[str]

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unlisted)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {len(self.checked)} files match {CHECKSUMS} in {self.path}"
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("checksum mismatch", self.mismatched), ("missing", self.missing),
                  ("not in " + CHECKSUMS, self.unlisted)) if names]
        return "; ".join(parts)


def verify(path: str | Path) -> VerifyResult:
    """Check every file of a package directory (or its ``.zip``) against its ``SHA256SUMS``.

    Returns the result; raises :class:`FdposeError` (one line naming the bad files) when anything
    differs, is missing, or is present without a checksum.
    """
    path = Path(path)
    if path.is_dir():
        files = {name: (path / name).read_bytes() for name in _package_files(path)}
        sums_path = path / CHECKSUMS
        sums_text = sums_path.read_text(encoding="utf-8") if sums_path.is_file() else None
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()
                       if "/" in info.filename and not info.is_dir()}
        sums_text = entries.pop(CHECKSUMS).decode("utf-8") if CHECKSUMS in entries else None
        files = entries
    else:
        raise FdposeError("not a package directory or zip archive", path=path)
    if sums_text is None:
        raise FdposeError(f"no {CHECKSUMS}", path=path)
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise FdposeError("malformed line", path=path / CHECKSUMS if path.is_dir() else path,
                              item=f"line {number}")
        expected[name] = digest
    checked, mismatched, missing = [], [], []
    for name, digest in sorted(expected.items()):
        if name not in files:
            missing.append(name)
        elif hashlib.sha256(files[name]).hexdigest() != digest:
            mismatched.append(name)
        else:
            checked.append(name)
    result = VerifyResult(path, checked, mismatched, missing, sorted(set(files) - set(expected)))
    if not result.ok:
        raise FdposeError(result.summary(), path=path)
    return result


# --- the card ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:  # COCO has no data for this number (e.g. no large objects)
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


EVAL_METRICS = ("oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large", "oks_ar", "oks_ar50",
                "oks_ar75", "box_map", "box_map50", "box_map75")
TRAIN_KEYS = ("model", "epochs", "imgsz", "batch", "optimizer", "lr0", "lrf", "momentum", "weight_decay",
              "warmup_epochs", "seed", "deterministic", "amp", "mosaic", "fliplr", "degrees", "scale",
              "translate", "hsv_h", "hsv_s", "hsv_v", "pose", "kobj", "box", "cls", "dfl", "patience")


def model_card(*, weights_name: str, weights_sha256: str, checkpoint: dict[str, Any], meta: ModelMeta,
               architecture: dict[str, Any], parameters: int, data: DataInfo, metrics: dict[str, Any] | None,
               report: str | None, check: OnnxCheck, opset: int) -> str:
    """The MODEL_CARD.md text: only facts from the inputs, nothing time- or location-dependent."""
    import torch
    import ultralytics

    train_args = checkpoint.get("train_args") or {}
    uses_fdconv = "C2f_FDConv" in json.dumps(architecture)
    scale = architecture.get("scale") or "?"
    k, dims = meta.kpt_shape
    lines = [
        "# Model card: YOLOv8-pose"
        + (" with C2f_FDConv (Frequency Dynamic Convolution)" if uses_fdconv else ""),
        "",
        "## Model",
        f"- Task: {k}-keypoint pose estimation (boxes + keypoints) for {meta.num_classes} class(es): "
        f"{', '.join(meta.class_names)}.",
        f"- Architecture: ultralytics YOLOv8-pose, scale `{scale}`"
        + (", FDConv in the C2f bottlenecks of the backbone" if uses_fdconv else "")
        + f"; {parameters:,} parameters; stride {meta.stride}.",
        f"- Source weights: `{weights_name}` (sha256 `{weights_sha256}`), trained with ultralytics "
        f"{checkpoint.get('version', '?')} on {checkpoint.get('date', 'an unrecorded date')}.",
        "- Files: `model.pt` (ultralytics checkpoint, optimizer stripped; a pickle: load only if you trust "
        "it), `model.safetensors` + `model.yaml` (weights and everything to rebuild the model; loading "
        "runs no pickled code), `model.onnx` (opset "
        f"{opset}, input `images` 1x3x{meta.imgsz}x{meta.imgsz} RGB in [0, 1], letterboxed with grey 114; "
        f"output `output0` (1, {4 + meta.num_classes + k * dims}, N): box centre/size in input pixels, "
        "class scores, keypoints x, y" + (", visibility" if dims == 3 else "") + ").",
        f"- ONNX check: onnxruntime vs PyTorch on `{check.image}`: max abs difference of raw outputs "
        f"{check.max_abs_diff:.3e} over max abs value {check.max_abs_value:.4g} = **{check.relative:.3e}** "
        f"(tolerance {check.tolerance:.0e}).",
        "",
        "## Data",
        f"- Keypoint layout from {data.source}.",
    ]
    if data.fingerprint:
        lines.append(f"- Dataset fingerprint (sha256 of data.yaml and the splits'): `{data.fingerprint}`.")
    for split, counts in sorted(data.counts.items()):
        lines.append(f"- `{split}`: {counts['images']} images, {counts['instances']} instances "
                     f"(sha256 `{counts['sha256']}`).")
    lines += ["", "| # | keypoint | flips to | OKS sigma |", "|---|---|---|---|"]
    for index, name in enumerate(meta.keypoint_names):
        flip = meta.keypoint_names[meta.flip_idx[index]] if meta.flip_idx else name
        sigma = f"{meta.sigmas[index]:.3f}" if meta.sigmas else "?"
        lines.append(f"| {index} | {name} | {flip} | {sigma} |")
    if meta.edges:
        lines += ["", "Skeleton edges: " + ", ".join(f"{meta.keypoint_names[a]}-{meta.keypoint_names[b]}"
                                                    for a, b in meta.edges) + "."]
    lines += ["", "## Training parameters", ""]
    shown = [(key, train_args[key]) for key in TRAIN_KEYS if key in train_args]
    if shown:
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in shown]
    else:
        lines.append("The checkpoint records no training arguments.")
    lines += ["", "## Evaluation", ""]
    if metrics:
        baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
        header = "| metric | this model |" + (" baseline |" if baseline else "")
        lines += [header, "|---|---|" + ("---|" if baseline else "")]
        for key in EVAL_METRICS:
            if key in metrics:
                row = f"| {key} | {_fmt(metrics[key])} |"
                lines.append(row + (f" {_fmt(baseline.get(key))} |" if baseline else ""))
        lines.append("")
        split = metrics.get("split", "?")
        evaluated = (f"Evaluated on split `{split}`: {metrics.get('num_images', '?')} images, "
                     f"{metrics.get('num_instances', '?')} instances")
        if "data_sha256" in metrics:
            same = data.counts.get(split, {}).get("sha256") == metrics["data_sha256"]
            evaluated += (f", data sha256 `{metrics['data_sha256']}` ("
                          + ("the packaged model's dataset split" if same else
                             "NOT the training dataset's split listed above") + ")")
        lines.append(evaluated + ". OKS mAP by the COCO protocol with the sigmas above "
                     "(`eval/metrics.json`)." + (f" Full report: [{report}]({report})." if report else ""))
    else:
        lines.append("Not evaluated (packaged without `--eval`).")
    lines += [
        "",
        "## Versions",
        f"- fdpose {__version__}, torch {torch.__version__.split('+')[0]}, "
        f"ultralytics {ultralytics.__version__}.",
        "",
        "## Intended use and limits",
        f"- Intended for detecting the {k} keypoints above on images like the training data, e.g. to "
        "pre-annotate the next labelling batch (`fdpose predict --to-label-studio`).",
        "- Accuracy outside the training distribution (other viewpoints, lighting, object sizes, "
        "crowding) is unknown; the eval numbers hold only for the evaluated split.",
        "- Keypoints come with a confidence, not a calibrated probability; occluded points may be "
        "placed plausibly yet wrongly. Not for safety-critical or identity-related decisions.",
        f"- The ONNX file has a fixed input size of {meta.imgsz}; the safetensors model accepts any "
        f"multiple of {meta.stride}.",
        "",
    ]
    return "\n".join(lines)


# --- the stage -----------------------------------------------------------------------------------


@dataclass
class PackageResult:
    """What ``package`` wrote."""

    out: Path
    archive: Path
    files: list[str]
    onnx_check: OnnxCheck

    def summary(self) -> str:
        return (f"packaged {len(self.files)} files -> {self.out} and {self.archive.name}; ONNX vs PyTorch "
                f"relative diff {self.onnx_check.relative:.2e} (tolerance {self.onnx_check.tolerance:.0e})")


def package(weights: str | Path, eval_dir: str | Path | None, out: str | Path, *,
            data: str | Path | None = None, image: str | Path | None = None, imgsz: int | None = None,
            opset: int | None = None, tolerance: float | None = None,
            params_path: str | Path = "cfg/params.yaml") -> PackageResult:
    """Package ``weights`` (an ultralytics pose checkpoint) into ``out/`` and ``out.zip``.

    ``data`` (a data.yaml) defaults to the checkpoint's training data when that still exists; it gives
    the keypoint layout, counts, fingerprint and the real image for the ONNX check (``image`` overrides
    that). ``imgsz`` (ONNX input size) defaults to ``package.imgsz``, else the training size.
    """
    from safetensors.torch import save_file
    from ultralytics.utils.torch_utils import strip_optimizer

    settings = {**DEFAULTS, **load_params("package", params_path)}
    opset = int(opset or settings["opset"])
    tolerance = float(tolerance if tolerance is not None else settings["onnx_tolerance"])
    weights, out = Path(weights), Path(out)
    checkpoint = load_checkpoint(weights)
    source_model = _checkpoint_model(checkpoint)
    train_args = checkpoint.get("train_args") or {}
    imgsz = int(imgsz or settings["imgsz"] or train_args.get("imgsz") or 640)
    meta = meta_from_ultralytics(source_model, imgsz)
    if imgsz % meta.stride:
        raise FdposeError(f"imgsz {imgsz} is not a multiple of the model stride {meta.stride}", item="imgsz")
    data_yaml = Path(data) if data is not None else None
    if data_yaml is None and train_args.get("data"):
        data_yaml = Path(train_args["data"])
    if data is not None and not data_yaml.is_file():
        raise FdposeError("data.yaml not found", path=data_yaml)
    meta, data_info = _data_info(data_yaml, meta)
    image = Path(image) if image is not None else data_info.sample_image
    if image is None:
        raise FdposeError("no real image for the ONNX check: the training data was not found; pass --image "
                          "or --data", path=weights)
    metrics, report_name = None, None
    if eval_dir is not None:
        eval_dir = Path(eval_dir)
        metrics_path = eval_dir / "metrics.json"
        if not metrics_path.is_file():
            raise FdposeError("metrics.json not found (run fdpose eval first)", path=eval_dir)
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise FdposeError(f"invalid JSON ({error})", path=metrics_path) from None
        if not isinstance(metrics, dict):
            raise FdposeError("expected a JSON object of metrics", path=metrics_path)
        # The card must not show another model's numbers: fdpose eval records the weights' sha256.
        evaluated = metrics.get("model_sha256")
        if evaluated is not None and evaluated != _sha256_file(weights):
            raise FdposeError(f"these numbers are for weights with sha256 {evaluated}, not {weights} "
                              "(run fdpose eval on the weights you package)", path=metrics_path)

    architecture = json.loads(json.dumps(source_model.yaml))  # plain lists/dicts for yaml.safe_dump
    architecture.pop("yaml_file", None)  # a build-time path; scale is kept in 'scale'
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        # model.pt: ultralytics' own stripping, keeping the checkpoint's date instead of "now".
        strip_optimizer(weights, tmp / "model.pt", updates={"date": checkpoint.get("date", "unknown")})
        state = {k: v.detach().contiguous().clone() for k, v in source_model.state_dict().items()}
        # One metadata key only: safetensors writes the metadata map in hash order, which varies by run.
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        package_yaml = {"format": PACKAGE_FORMAT, "task": "pose", "weights": "model.safetensors",
                        "architecture": architecture, "meta": meta.to_dict()}
        package_text = yaml.safe_dump(package_yaml, sort_keys=True, default_flow_style=None)
        (tmp / "model.yaml").write_text(package_text, encoding="utf-8")
        # Export and check the model as it ships: rebuilt from safetensors, not the pickled one.
        model = load_packaged_model(tmp)
        export_onnx(model, meta, imgsz, tmp / "model.onnx", opset)
        check = check_onnx(model, meta, tmp / "model.onnx", image, imgsz, tolerance)
        if not check.relative <= tolerance:
            raise FdposeError(f"ONNX output differs from PyTorch by {check.relative:.3e} of the output scale "
                              f"(max abs diff {check.max_abs_diff:.3e}) > tolerance {tolerance:.0e}",
                              path=out / "model.onnx")
        if eval_dir is not None:
            (tmp / "eval").mkdir()
            shutil.copyfile(eval_dir / "metrics.json", tmp / "eval" / "metrics.json")
            if (eval_dir / "report.html").is_file():
                shutil.copyfile(eval_dir / "report.html", tmp / "eval" / "report.html")
                report_name = "eval/report.html"
        card = model_card(weights_name=weights.name, weights_sha256=_sha256_file(weights),
                          checkpoint=checkpoint, meta=meta, architecture=architecture,
                          parameters=sum(p.numel() for p in model.parameters()), data=data_info,
                          metrics=metrics, report=report_name, check=check, opset=opset)
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        for path in tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        write_checksums(tmp)
        os.chmod(tmp / CHECKSUMS, 0o644)
        archive = archive_bytes(tmp, out.name)
        files = _package_files(tmp) + [CHECKSUMS]
    archive_path = out.with_name(out.name + ".zip")
    atomic_write_bytes(archive_path, archive)
    os.chmod(archive_path, 0o644)
    return PackageResult(out, archive_path, files, check)


# --- latency benchmark ---------------------------------------------------------------------------


def bench_latency(package_dir: str | Path, sizes: tuple[int, ...] = (320, 640), runs: int = 20,
                  warmup: int = 3, threads: int | None = None) -> list[dict[str, Any]]:
    """Median batch-1 CPU latency (ms) of the packaged model: PyTorch as packaged (the model the ONNX
    file is exported from), PyTorch with Conv+BN fused (what ultralytics runs), and onnxruntime.

    The ONNX side is exported at each size into a temporary folder (the shipped file has one fixed
    size). The three take turns within every timed round, so load from other processes hits them
    alike. ``threads`` sets torch's and onnxruntime's intra-op threads (default: their own choice).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    package_dir = Path(package_dir)
    meta = read_model_yaml(package_dir)
    model = load_packaged_model(package_dir)
    fused = load_packaged_model(package_dir).fuse(verbose=False)
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            batch = rng.random((1, 3, size, size), dtype=np.float32)
            onnx_path = export_onnx(model, meta, size, Path(tmp) / f"model-{size}.onnx")
            runners = {"pytorch_ms": TorchRunner(model, meta, "safetensors"),
                       "pytorch_fused_ms": TorchRunner(fused, meta, "safetensors"),
                       "onnxruntime_ms": OnnxRunner(onnx_path, meta, threads)}
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for round_index in range(warmup + runs):
                for name, runner in runners.items():
                    start = time.perf_counter()
                    runner(batch)
                    if round_index >= warmup:
                        samples[name].append((time.perf_counter() - start) * 1000)
            row: dict[str, Any] = {"imgsz": size, "batch": 1, "runs": runs}
            row.update({name: statistics.median(values) for name, values in samples.items()})
            row["onnx_speedup_vs_fused"] = row["pytorch_fused_ms"] / row["onnxruntime_ms"]
            rows.append(row)
    return rows


# --- CLI -----------------------------------------------------------------------------------------


@click.command("package")
@click.option("--weights", type=click.Path(path_type=Path), help="Trained checkpoint (e.g. weights/best.pt).")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path), help="fdpose eval output folder.")
@click.option("--out", type=click.Path(path_type=Path), help="Package folder to write (and OUT.zip).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="data.yaml (default: the checkpoint's training data, when it still exists).")
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="Real image for the ONNX check (default: one from the data).")
@click.option("--imgsz", type=int, default=None, help="ONNX input size (default: the training size).")
@click.option("--verify", "verify_path", type=click.Path(path_type=Path), default=None,
              help="Only check OUT (or OUT.zip) against its SHA256SUMS.")
@click.option("--bench", "bench_path", type=click.Path(path_type=Path), default=None,
              help="Only benchmark the package at OUT: PyTorch vs onnxruntime latency, batch 1, CPU.")
@click.option("--sizes", default="320,640", show_default=True, help="Input sizes for --bench.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per size for --bench.")
@click.option("--threads", type=int, default=None,
              help="Intra-op threads for --bench (default: the libraries').")
@click.option("--bench-json", type=click.Path(path_type=Path), default=None,
              help="Also write the --bench rows to this JSON file.")
def package_command(weights: Path | None, eval_dir: Path | None, out: Path | None, data: Path | None,
                    image: Path | None, imgsz: int | None, verify_path: Path | None, bench_path: Path | None,
                    sizes: str, runs: int, threads: int | None, bench_json: Path | None) -> None:
    """Package weights as model.pt, model.safetensors + model.yaml, model.onnx, MODEL_CARD.md, SHA256SUMS."""
    if verify_path is not None:
        click.echo(verify(verify_path).summary())
        return
    if bench_path is not None:
        try:
            size_list = tuple(int(s) for s in sizes.split(","))
        except ValueError:
            raise FdposeError(f"expected comma-separated integers, got {sizes!r}", item="--sizes") from None
        rows = bench_latency(bench_path, size_list, runs, threads=threads)
        click.echo(f"median ms over {runs} runs, batch 1, CPU ({os.cpu_count()} cores, threads: "
                   f"{threads or 'default'}, load average {os.getloadavg()[0]:.1f})")
        click.echo(f"{'imgsz':>6} {'pytorch':>9} {'pytorch fused':>14} {'onnxruntime':>12} "
                   f"{'fused/onnx':>11}")
        for row in rows:
            click.echo(f"{row['imgsz']:>6} {row['pytorch_ms']:>9.1f} {row['pytorch_fused_ms']:>14.1f} "
                       f"{row['onnxruntime_ms']:>12.1f} {row['onnx_speedup_vs_fused']:>10.2f}x")
        if bench_json is not None:
            write_json(bench_json, {"package": str(bench_path), "rows": rows})
        return
    if weights is None or eval_dir is None or out is None:
        raise click.UsageError("--weights, --eval and --out are required (or use --verify / --bench)")
    result = package(weights, eval_dir, out, data=data, image=image, imgsz=imgsz)
    click.echo(result.summary())
