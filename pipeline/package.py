"""``fdpose package``: ship trained weights in forms someone else can load safely and run anywhere.

``fdpose package --weights W --eval DIR --out OUT`` writes ``OUT/`` and ``OUT.zip``:

* ``model.pt`` — the ultralytics checkpoint with the optimizer stripped (``strip_optimizer``), the
  checkpoint's own training date kept so a rebuild is byte-identical;
* ``model.safetensors`` + ``model.yaml`` — the weights without pickle, and everything needed to
  rebuild the model: the architecture dict (with its scale), ``kpt_shape``, keypoint and class names,
  flip permutation, OKS sigmas, skeleton edges, input size and stride.
  :func:`pipeline.model_io.load_packaged_model` reads them with ``yaml.safe_load`` and
  ``safetensors``: no pickled code runs;
* ``model.onnx`` — exported from the safetensors model by the TorchScript exporter in eval mode, so
  FDConv's cached basis kernels and FFT-free FBM projections enter the graph as constants (the input
  size is fixed, ``meta.imgsz`` in ``model.yaml``); any batch size (a model with FDConv runs its
  batch-1 graph once per sample in an ONNX ``Loop``). Checked with onnxruntime against PyTorch on a
  real image and its mirror image; packaging fails when the max abs difference of the raw outputs
  over their max abs value exceeds the tolerance (``package.onnx_tolerance``, 1e-4);
* ``model.xml`` + ``model.bin`` — with the ``fdpose[openvino]`` extra installed, the ONNX model as an
  OpenVINO IR (float32), checked against PyTorch the same way; without it, packaging says so in one
  line and leaves it out;
* ``MODEL_CARD.md`` — the model, its formats, its data, training parameters, eval numbers
  (``eval/metrics.json`` and ``eval/report.html`` copied from ``--eval DIR``), versions, intended use
  and limits; with ``--latency``, each format's batch-1 latency measured on the packaging machine;
* ``SHA256SUMS`` — every other file, in ``sha256sum -c`` format; ``fdpose package --verify OUT``
  (or ``OUT.zip``) checks them and names every mismatched, missing or unlisted file.

The eval numbers must belong to the packaged weights: a ``metrics.json`` whose ``model_sha256``
names other weights is refused. ``fdpose package --bench OUT`` times the package at batch 1 on the
CPU: PyTorch as packaged, PyTorch with Conv+BN fused, and onnxruntime (:func:`bench_latency`).

The archive is reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions 0644, and
nothing time- or location-dependent in any file (ONNX doc strings cleared, OpenVINO operations named
by position, no absolute paths in the card), so packaging the same weights again gives a
byte-identical ``OUT.zip`` (not with ``--latency``: measured times differ from run to run).
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
from pipeline.config import PARAMS_FILE, apply_overrides, as_dict, load_section
from pipeline.errors import FdposeError
from pipeline.inference import (
    ModelMeta,
    OnnxRunner,
    OpenVinoRunner,
    Runner,
    TorchRunner,
    import_openvino,
    letterbox,
)
from pipeline.io import atomic_dir, read_json, sha256_file, stage_bytes, write_json
from pipeline.metrics import data_fingerprint, format_number
from pipeline.model_io import (
    ONNX_META_KEY,
    PACKAGE_FORMAT,
    Layout,
    check_fits,
    checkpoint_model,
    load_checkpoint,
    load_packaged_model,
    meta_from_model,
    read_model_yaml,
    read_onnx_meta,
)

CHECKSUMS = "SHA256SUMS"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold: no build time leaks in


# --- the skeleton and data behind the checkpoint -------------------------------------------------


@dataclass
class DataInfo:
    """What the card says about the training data."""

    source: str  # where the keypoint layout came from
    data_yaml: Path | None = None
    fingerprint: str | None = None
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> images, instances, sha256
    sample_image: Path | None = None


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


# --- export and check ----------------------------------------------------------------------------

BATCH_AXES = {"images": {0: "batch"}, "output0": {0: "batch"}}
LOOP_PREFIX = "fdpose_loop_"  # names of the values the per-sample loop adds around the batch-1 graph


def runs_per_sample(model: Any) -> bool:
    """True when ``model`` has a dynamic FDConv: it convolves each sample with its own kernel as one
    grouped convolution whose group count is the batch size, which ONNX fixes in the graph."""
    from pipeline.nn.fdconv import FDConv

    return any(isinstance(module, FDConv) and module.is_dynamic for module in model.modules())


def export_onnx(model: Any, meta: ModelMeta, imgsz: int, path: Path, opset: int = 17) -> Path:
    """Export ``model`` for ``(batch, 3, imgsz, imgsz)`` inputs, any batch, deterministically.

    The TorchScript exporter runs in eval mode: FDConv uses cached basis kernels and FFT-free FBM
    projections, traced as constants, so the spatial size is fixed. A model with FDConv is traced for
    one sample and wrapped in an ONNX ``Loop`` over the batch (:func:`batch_loop`); others are
    exported with a dynamic batch axis. The head's ``export`` flag makes it return the decoded
    tensor alone. Doc strings (which may carry source locations) are cleared; the metadata is JSON.
    """
    import copy

    import onnx
    import torch

    export_model = copy.deepcopy(model).float().eval()
    for module in export_model.modules():
        if hasattr(module, "export") and hasattr(module, "kpt_shape"):
            module.export = True
            module.format = "onnx"
    per_sample = runs_per_sample(export_model)
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python values (FDConv's projection sizes, its kernel-or-activation side
        # choice) are meant to become constants, as the tracer warns.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(export_model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], do_constant_folding=True,
                          dynamic_axes=None if per_sample else BATCH_AXES)
    proto = onnx.load_from_string(buffer.getvalue())
    if per_sample:
        proto = batch_loop(proto)
    proto.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    proto.producer_name, proto.producer_version = "fdpose", __version__
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps({**meta.to_dict(), "imgsz": imgsz}, sort_keys=True)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString(deterministic=True))
    return path


def batch_loop(proto: Any) -> Any:
    """The batch-1 model ``proto`` (input ``images``, output ``output0``) as a model of any batch size:
    an ONNX ``Loop`` runs the graph once per sample and stacks the outputs. The weights live in the
    loop body, where onnxruntime and OpenVINO optimise them as constants of the graph they feed."""
    import onnx
    from onnx import TensorProto, helper

    graph = proto.graph
    (images,), (output,) = graph.input, graph.output
    p = LOOP_PREFIX
    names = {images.name: p + "sample", output.name: p + "sample_raw"}
    nodes = []
    for node in graph.node:
        node = copy_node(node)
        node.doc_string = ""
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
        nodes.append(node)
    sample_dims = [d.dim_value for d in output.type.tensor_type.shape.dim][1:]
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", [p + "iter", p + "axis"], [p + "start"]),
         helper.make_node("Add", [p + "start", p + "one"], [p + "end"]),
         helper.make_node("Slice", [images.name, p + "start", p + "end", p + "axis"], [p + "sample"]),
         *nodes,
         helper.make_node("Squeeze", [p + "sample_raw", p + "axis"], [p + "sample_out"]),
         helper.make_node("Identity", [p + "cond_in"], [p + "cond_out"])],
        "sample",
        [helper.make_tensor_value_info(p + "iter", TensorProto.INT64, []),
         helper.make_tensor_value_info(p + "cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + "sample_out", TensorProto.FLOAT, sample_dims)],
        initializer=[helper.make_tensor(p + "one", TensorProto.INT64, [1], [1]),
                     helper.make_tensor(p + "axis", TensorProto.INT64, [1], [0]), *graph.initializer],
        # The sample's static shape, so that runtimes fold the shape arithmetic inside as they do in the
        # batch-1 graph (without it, onnxruntime runs ~50 more small operations per sample).
        value_info=[helper.make_tensor_value_info(p + "sample", TensorProto.FLOAT,
                                                  [d.dim_value for d in images.type.tensor_type.shape.dim])])
    input_dims = ["batch"] + [d.dim_value for d in images.type.tensor_type.shape.dim][1:]
    outer = helper.make_graph(
        [helper.make_node("Shape", [images.name], [p + "shape"]),
         helper.make_node("Gather", [p + "shape", p + "zero"], [p + "count"], axis=0),
         helper.make_node("Loop", [p + "count", ""], [output.name], body=body)],
        graph.name,
        [helper.make_tensor_value_info(images.name, TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(output.name, TensorProto.FLOAT, ["batch", *sample_dims])],
        initializer=[helper.make_tensor(p + "zero", TensorProto.INT64, [], [0])])
    looped = onnx.ModelProto()
    looped.CopyFrom(proto)
    looped.graph.CopyFrom(outer)
    return looped


def copy_node(node: Any) -> Any:
    """A copy of an ONNX node (protobuf messages are mutable and shared by reference)."""
    import onnx

    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    return copied


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """Convert an ONNX file :func:`export_onnx` wrote to an OpenVINO IR (``xml_path`` + its ``.bin``),
    float32, deterministically: operations named by their position (OpenVINO numbers unnamed ones from
    a process-wide counter), the conversion's own record (the source file name) left out, and the ONNX
    file's metadata stored as the ``fdpose`` runtime info."""
    openvino = import_openvino()
    meta = read_onnx_meta(onnx_path)
    model = openvino.convert_model(str(onnx_path))
    _name_operations(model)
    info = model.get_rt_info()
    if "conversion_parameters" in info:
        del info["conversion_parameters"]
    model.set_rt_info(json.dumps(meta.to_dict(), sort_keys=True), [ONNX_META_KEY])
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def _name_operations(model: Any, prefix: str = "") -> None:
    """Name every operation (loop bodies included) by its type and position in the graph."""
    for index, operation in enumerate(model.get_ordered_ops()):
        name = f"{prefix}{operation.get_type_name()}_{index}"
        operation.set_friendly_name(name)
        if hasattr(operation, "get_function"):
            _name_operations(operation.get_function(), name + "/")


@dataclass
class ExportCheck:
    """An exported format vs PyTorch on one real image and its mirror image (a batch of 2): raw output
    difference, absolute and relative to the output scale."""

    image: str
    max_abs_diff: float
    max_abs_value: float
    relative: float
    tolerance: float
    format: str = "ONNX"

    def line(self) -> str:
        return (f"{self.format} vs PyTorch relative diff {self.relative:.2e} (tolerance "
                f"{self.tolerance:.0e})")


def check_export(model: Any, meta: ModelMeta, runner: Runner, image_path: Path, tolerance: float,
                 path: Path) -> ExportCheck:
    """Compare raw outputs of ``model`` (PyTorch) and ``runner`` (the exported ``path``) on the image
    ``image_path`` and its mirror image; raise :class:`FdposeError` naming ``path`` above ``tolerance``."""
    import cv2

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise FdposeError("cannot read the image for the export check", path=image_path)
    single, _ = letterbox(image, meta.imgsz)
    batch = np.ascontiguousarray(np.concatenate([single, single[..., ::-1]]))
    expected = TorchRunner(model, meta, "safetensors")(batch)
    actual = runner(batch)
    name = FORMAT_NAMES[runner.kind]
    if actual.shape != expected.shape:
        raise FdposeError(f"{name} output shape {actual.shape} differs from PyTorch's {expected.shape}",
                          path=path)
    max_abs_diff = float(np.abs(actual.astype(np.float64) - expected).max())
    max_abs_value = float(np.abs(expected).max())
    relative = max_abs_diff / max(max_abs_value, 1e-12)
    check = ExportCheck(image_path.name, max_abs_diff, max_abs_value, relative, tolerance, name)
    if not check.relative <= tolerance:
        raise FdposeError(f"{name} output differs from PyTorch by {check.relative:.3e} of the output scale "
                          f"(max abs diff {check.max_abs_diff:.3e}) > tolerance {tolerance:.0e}", path=path)
    return check


FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO", "safetensors": "PyTorch"}


def measure_latency(runners: dict[str, Runner], imgsz: int, runs: int = 5, warmup: int = 2
                    ) -> dict[str, float]:
    """Median batch-1 latency (ms) of each runner on a random input; the runners take turns."""
    batch = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(warmup + runs):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(batch)
            if round_index >= warmup:
                samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


# --- checksums and archive -----------------------------------------------------------------------


def _package_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: Path) -> Path:
    """``SHA256SUMS`` for every file in ``directory`` (sorted; ``sha256sum -c`` compatible)."""
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in _package_files(directory)]
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


EVAL_METRICS = ("oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large", "oks_ar", "oks_ar50",
                "oks_ar75", "box_map", "box_map50", "box_map75")
TRAIN_KEYS = ("model", "epochs", "imgsz", "batch", "optimizer", "lr0", "lrf", "momentum", "weight_decay",
              "warmup_epochs", "seed", "deterministic", "amp", "mosaic", "fliplr", "degrees", "scale",
              "translate", "hsv_h", "hsv_s", "hsv_v", "pose", "kobj", "box", "cls", "dfl", "patience")
CARD_NUMBER = ".6g"  # how the card writes parameters and metrics
LATENCY_RUNS = 5  # timed batch-1 runs per format for the card's latency (after 2 warm-up runs)


def model_card(*, weights_name: str, weights_sha256: str, checkpoint: dict[str, Any], meta: ModelMeta,
               architecture: dict[str, Any], parameters: int, data: DataInfo, metrics: dict[str, Any] | None,
               report: str | None, checks: list[ExportCheck], opset: int,
               latency: dict[str, float] | None = None) -> str:
    """The MODEL_CARD.md text: only facts from the inputs, nothing location-dependent (and nothing
    time-dependent unless ``latency``, measured at packaging time, is given)."""
    uses_fdconv = "C2f_FDConv" in json.dumps(architecture)
    title = "# Model card: YOLOv8-pose" + (" with C2f_FDConv (Frequency Dynamic Convolution)" if uses_fdconv
                                           else "")
    lines = [title, ""]
    lines += _card_model(weights_name, weights_sha256, checkpoint, meta, architecture, parameters, checks,
                         opset)
    lines += _card_formats(checks, latency)
    lines += _card_data(data, meta)
    lines += _card_training(checkpoint.get("train_args") or {})
    lines += _card_evaluation(metrics, data, report)
    lines += _card_versions_and_limits(meta)
    return "\n".join(lines)


def _card_model(weights_name: str, weights_sha256: str, checkpoint: dict[str, Any], meta: ModelMeta,
                architecture: dict[str, Any], parameters: int, checks: list[ExportCheck],
                opset: int) -> list[str]:
    """## Model: task, architecture, source weights, the files and the export checks."""
    uses_fdconv = "C2f_FDConv" in json.dumps(architecture)
    scale = architecture.get("scale") or "?"
    k, dims = meta.skeleton.kpt_shape
    size = meta.imgsz
    lines = [
        "## Model",
        f"- Task: {k}-keypoint pose estimation (boxes + keypoints) for {meta.num_classes} class(es): "
        f"{', '.join(meta.skeleton.class_names)}.",
        f"- Architecture: ultralytics YOLOv8-pose, scale `{scale}`"
        + (", FDConv in the C2f bottlenecks of the backbone" if uses_fdconv else "")
        + f"; {parameters:,} parameters; stride {meta.stride}.",
        f"- Source weights: `{weights_name}` (sha256 `{weights_sha256}`), trained with ultralytics "
        f"{checkpoint.get('version', '?')} on {checkpoint.get('date', 'an unrecorded date')}.",
        "- Files: `model.pt` (ultralytics checkpoint, optimizer stripped; a pickle: load only if you trust "
        "it), `model.safetensors` + `model.yaml` (weights and everything to rebuild the model; loading "
        f"runs no pickled code), `model.onnx` (opset {opset}, input `images` Bx3x{size}x{size} RGB in "
        f"[0, 1] for any batch size B at the fixed input size {size}, letterboxed with grey 114; output "
        f"`output0` (B, {4 + meta.num_classes + k * dims}, N): box centre/size in input pixels, class "
        "scores, keypoints x, y" + (", visibility" if dims == 3 else "") + ")"
        + (", `model.xml` + `model.bin` (the ONNX model as an OpenVINO IR, float32, same input and output)"
           if any(check.format == "OpenVINO" for check in checks) else "") + ".",
    ]
    if "_FDConv" in json.dumps(architecture):
        lines.append("- FDConv gives every sample its own kernels, so the exported graph runs one sample at "
                     "a time: an ONNX `Loop` over the batch.")
    runtime = {"ONNX": "onnxruntime", "OpenVINO": "OpenVINO"}
    for check in checks:
        lines.append(f"- {check.format} check: {runtime.get(check.format, check.format)} vs PyTorch on "
                     f"`{check.image}` and its mirror image (batch 2): max abs difference of raw outputs "
                     f"{check.max_abs_diff:.3e} over max abs value {check.max_abs_value:.4g} = "
                     f"**{check.relative:.3e}** (tolerance {check.tolerance:.0e}).")
    return lines + [""]


FORMAT_ROWS = (("PyTorch", "`model.safetensors` + `model.yaml`", "PyTorch (`predict --backend torch`)"),
               ("ONNX", "`model.onnx`", "onnxruntime (`--backend onnx`)"),
               ("OpenVINO", "`model.xml` + `model.bin`", "OpenVINO (`--backend openvino`)"))


def _card_formats(checks: list[ExportCheck], latency: dict[str, float] | None) -> list[str]:
    """## Formats: each packaged format, its runtime and (when measured) its batch-1 latency."""
    present = {"PyTorch", "ONNX"} | {check.format for check in checks}
    lines = ["## Formats", "", "| format | files | runs with | batch-1 latency |", "|---|---|---|---|"]
    for name, files, runtime in FORMAT_ROWS:
        if name in present:
            value = f"{latency[name]:.1f} ms" if latency and name in latency else "not measured"
            lines.append(f"| {name} | {files} | {runtime} | {value} |")
    if "OpenVINO" not in present:
        lines += ["", "No OpenVINO IR: packaged without the `fdpose[openvino]` extra."]
    if latency:
        lines += ["", f"Latency: median of {LATENCY_RUNS} runs at batch 1 on the CPU, measured at packaging "
                  f"time on the packaging machine ({os.cpu_count()} cores); other machines differ. "
                  "`fdpose bench deploy` compares every format with the stock model side by side."]
    else:
        lines += ["", "Latency not measured (`fdpose package --latency` measures it; `fdpose bench deploy` "
                  "compares every format with the stock model side by side)."]
    return lines + [""]


def _card_data(data: DataInfo, meta: ModelMeta) -> list[str]:
    """## Data: where the layout came from, the splits, and the keypoint table."""
    skeleton = meta.skeleton
    names = skeleton.keypoint_names
    lines = ["## Data", f"- Keypoint layout from {data.source}."]
    if data.fingerprint:
        lines.append(f"- Dataset fingerprint (sha256 of data.yaml and the splits'): `{data.fingerprint}`.")
    for split, counts in sorted(data.counts.items()):
        lines.append(f"- `{split}`: {counts['images']} images, {counts['instances']} instances "
                     f"(sha256 `{counts['sha256']}`).")
    lines += ["", "| # | keypoint | flips to | OKS sigma |", "|---|---|---|---|"]
    for index, name in enumerate(names):
        lines.append(f"| {index} | {name} | {names[skeleton.flip_permutation[index]]} | "
                     f"{skeleton.sigmas[index]:.3f} |")
    if skeleton.edges:
        edges = ", ".join(f"{names[a]}-{names[b]}" for a, b in skeleton.edges)
        lines += ["", f"Skeleton edges: {edges}."]
    return lines


def _card_training(train_args: dict[str, Any]) -> list[str]:
    """## Training parameters: the checkpoint's own record of them."""
    lines = ["", "## Training parameters", ""]
    shown = [(key, train_args[key]) for key in TRAIN_KEYS if key in train_args]
    if not shown:
        return lines + ["The checkpoint records no training arguments."]
    lines += ["| parameter | value |", "|---|---|"]
    return lines + [f"| {key} | {format_number(value, CARD_NUMBER)} |" for key, value in shown]


def _card_evaluation(metrics: dict[str, Any] | None, data: DataInfo, report: str | None) -> list[str]:
    """## Evaluation: the model's numbers (and the baseline's), on which split and data."""
    lines = ["", "## Evaluation", ""]
    if not metrics:
        return lines + ["Not evaluated (packaged without `--eval`)."]
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    lines += ["| metric | this model |" + (" baseline |" if baseline else ""),
              "|---|---|" + ("---|" if baseline else "")]
    for key in EVAL_METRICS:
        if key in metrics:
            row = f"| {key} | {format_number(metrics[key], CARD_NUMBER)} |"
            lines.append(row + (f" {format_number(baseline.get(key), CARD_NUMBER)} |" if baseline else ""))
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
    return lines


def _card_versions_and_limits(meta: ModelMeta) -> list[str]:
    """## Versions, and ## Intended use and limits."""
    import torch
    import ultralytics

    k = meta.skeleton.num_keypoints
    return [
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
        f"- The ONNX file (and the OpenVINO IR) has a fixed input size of {meta.imgsz} and any batch "
        f"size; the safetensors model accepts any multiple of {meta.stride}.",
        "",
    ]


# --- the stage -----------------------------------------------------------------------------------


@dataclass
class PackageResult:
    """What ``package`` wrote."""

    out: Path
    archive: Path
    files: list[str]
    checks: list[ExportCheck]
    notes: list[str] = field(default_factory=list)  # e.g. that the OpenVINO IR was skipped, and why
    latency: dict[str, float] | None = None  # format -> median batch-1 ms, when measured

    def summary(self) -> str:
        lines = [f"packaged {len(self.files)} files -> {self.out} and {self.archive.name}"]
        lines += [check.line() for check in self.checks] + self.notes
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


def package_latency(tmp: Path, model: Any, meta: ModelMeta, runs: int = 5) -> dict[str, float]:
    """Median batch-1 latency (ms) of each packaged format on this machine (:func:`measure_latency`)."""
    runners: dict[str, Runner] = {"PyTorch": TorchRunner(model, meta, "safetensors"),
                                  "ONNX": OnnxRunner(tmp / "model.onnx", meta)}
    if (tmp / "model.xml").is_file():
        runners["OpenVINO"] = OpenVinoRunner(tmp / "model.xml", meta)
    return measure_latency(runners, meta.imgsz, runs)


def _copy_eval(eval_dir: Path, tmp: Path) -> str | None:
    """``eval/metrics.json`` (and ``eval/report.html`` when there is one, whose name is returned)."""
    (tmp / "eval").mkdir()
    shutil.copyfile(eval_dir / "metrics.json", tmp / "eval" / "metrics.json")
    if not (eval_dir / "report.html").is_file():
        return None
    shutil.copyfile(eval_dir / "report.html", tmp / "eval" / "report.html")
    return "eval/report.html"


def package(weights: str | Path, eval_dir: str | Path | None, out: str | Path, *,
            data: str | Path | None = None, image: str | Path | None = None, imgsz: int | None = None,
            opset: int | None = None, tolerance: float | None = None, latency: bool = False,
            params_path: str | Path = PARAMS_FILE) -> PackageResult:
    """Package ``weights`` (an ultralytics pose checkpoint) into ``out/`` and ``out.zip``.

    ``data`` (a data.yaml) defaults to the checkpoint's training data when that still exists; it gives
    the keypoint layout, counts, fingerprint and the real image for the ONNX check (``image`` overrides
    that). ``imgsz`` (ONNX input size) defaults to ``package.imgsz``, else the training size. With
    OpenVINO installed (``fdpose[openvino]``) the package also holds an OpenVINO IR, checked like the
    ONNX file. ``latency`` measures each format's batch-1 latency into the card (which then differs
    from build to build).
    """
    settings = apply_overrides(as_dict(load_section("package", params_path)), opset=opset or None,
                               onnx_tolerance=tolerance)
    weights, out = Path(weights), Path(out)
    checkpoint = load_checkpoint(weights)
    train_args = checkpoint.get("train_args") or {}
    imgsz = int(imgsz or settings["imgsz"] or train_args.get("imgsz") or 640)
    meta = meta_from_model(checkpoint_model(checkpoint), imgsz)
    if imgsz % meta.stride:
        raise FdposeError(f"imgsz {imgsz} is not a multiple of the model stride {meta.stride}", item="imgsz")
    meta, data = data_info(_data_yaml(data, train_args), meta, weights)
    image = Path(image) if image is not None else data.sample_image
    if image is None:
        raise FdposeError("no real image for the ONNX check: the training data was not found; pass --image "
                          "or --data", path=weights)
    metrics = read_eval_metrics(Path(eval_dir), weights) if eval_dir is not None else None
    opset = int(settings["opset"])
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        tolerance = float(settings["onnx_tolerance"])
        checks, model, architecture = write_model_files(tmp, checkpoint, weights, meta, image, opset,
                                                        tolerance, out)
        openvino = write_openvino(tmp, model, meta, image, tolerance, out)
        notes = [openvino] if isinstance(openvino, str) else []
        checks += [] if isinstance(openvino, str) else [openvino]
        measured = package_latency(tmp, model, meta, LATENCY_RUNS) if latency else None
        report_name = _copy_eval(Path(eval_dir), tmp) if eval_dir is not None else None
        card = model_card(weights_name=weights.name, weights_sha256=sha256_file(weights),
                          checkpoint=checkpoint, meta=meta, architecture=architecture,
                          parameters=sum(p.numel() for p in model.parameters()), data=data,
                          metrics=metrics, report=report_name, checks=checks, opset=opset,
                          latency=measured)
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        for path in tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        write_checksums(tmp)
        os.chmod(tmp / CHECKSUMS, 0o644)
        files = _package_files(tmp) + [CHECKSUMS]
        # The archive is written before the folder replaces the old one: a write that fails keeps both.
        archive = stage_bytes(out.with_name(out.name + ".zip"), archive_bytes(tmp, out.name))
    archive_path = out.with_name(out.name + ".zip")
    os.replace(archive, archive_path)
    os.chmod(archive_path, 0o644)
    return PackageResult(out, archive_path, files, checks, notes, measured)


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
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            onnx_path = export_onnx(model, meta, size, Path(tmp) / f"model-{size}.onnx")
            runners: dict[str, Runner] = {"pytorch_ms": TorchRunner(model, meta, "safetensors"),
                                          "pytorch_fused_ms": TorchRunner(fused, meta, "safetensors"),
                                          "onnxruntime_ms": OnnxRunner(onnx_path, meta, threads)}
            row: dict[str, Any] = {"imgsz": size, "batch": 1, "runs": runs}
            row.update(measure_latency(runners, size, runs, warmup))
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
@click.option("--latency", is_flag=True, default=False,
              help="Measure each format's batch-1 latency into the model card (the package then differs "
                   "from build to build).")
@click.option("--bench-json", type=click.Path(path_type=Path), default=None,
              help="Also write the --bench rows to this JSON file.")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (section package).")
def package_command(weights: Path | None, eval_dir: Path | None, out: Path | None, data: Path | None,
                    image: Path | None, imgsz: int | None, verify_path: Path | None, bench_path: Path | None,
                    sizes: str, runs: int, threads: int | None, latency: bool, bench_json: Path | None,
                    params_path: Path) -> None:
    """Package weights as model.pt, model.safetensors + model.yaml, model.onnx (and model.xml + model.bin
    with fdpose[openvino]), MODEL_CARD.md, SHA256SUMS."""
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
    load_section("package", params_path)  # a bad params file stops packaging before anything is read
    if weights is None or eval_dir is None or out is None:
        raise click.UsageError("--weights, --eval and --out are required (or use --verify / --bench)")
    result = package(weights, eval_dir, out, data=data, image=image, imgsz=imgsz, latency=latency,
                     params_path=params_path)
    click.echo(result.summary())
