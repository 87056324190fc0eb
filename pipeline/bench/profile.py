"""Where FDConv's deployed time goes: onnxruntime's and OpenVINO's own per-operator profiles, side by side.

``fdpose bench profile`` exports a family's FDConv model and its stock twin as ``fdpose package``
does (``model.onnx``, then its OpenVINO IR, float32), runs each ``--runs`` times on one batch with the
runtime's profiler on (onnxruntime's ``enable_profiling``, OpenVINO's ``PERF_COUNT``) and sums the
time per operator: per ONNX operator type for onnxruntime, per layer type and the kernel that ran it
for OpenVINO. It also sums the time of the nodes that belong to FDConv's dynamic layers (by the
module path in their names), so the gap splits into the layers' own work and what they cost around
them (layout reorders, copies). Profiled times include the profiler's overhead: read them as shares;
latency and its ratios are ``fdpose bench deploy``'s.
"""

from __future__ import annotations

import collections
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.errors import FdposeError


@dataclass
class OpTime:
    """One operator (type, or OpenVINO layer type and kernel): ms per run in each model."""

    op: str
    fdconv_ms: float
    stock_ms: float

    @property
    def difference(self) -> float:
        return self.fdconv_ms - self.stock_ms


@dataclass
class RuntimeProfile:
    """One runtime's profile of both models, ms per run."""

    runtime: str
    version: str
    fdconv_ms: float
    stock_ms: float
    fdconv_layers_ms: float  # the nodes of FDConv's dynamic layers
    ops: list[OpTime]

    def lines(self, top: int) -> list[str]:
        inside = self.fdconv_layers_ms
        lines = [f"{self.runtime} {self.version}: FDConv {self.fdconv_ms:.2f} ms, "
                 f"stock {self.stock_ms:.2f} ms per run ({self.fdconv_ms / self.stock_ms:.2f}x); "
                 f"inside FDConv's layers {inside:.2f} ms, "
                 f"the rest {self.fdconv_ms - inside:.2f} ms",
                 f"  {'operator':44s} {'FDConv ms':>9s} {'stock ms':>9s} {'diff ms':>8s}"]
        ranked = sorted(self.ops, key=lambda op: -abs(op.difference))[:top]
        lines += [f"  {op.op[:44]:44s} {op.fdconv_ms:9.3f} {op.stock_ms:9.3f} {op.difference:+8.3f}"
                  for op in ranked]
        return lines


@dataclass
class ProfileResult:
    family: str
    scale: str
    imgsz: int
    batch: int
    threads: int
    runs: int
    fdconv_layers: int  # FDConv's dynamic layers in the model
    profiles: list[RuntimeProfile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, top: int = 12) -> str:
        head = (f"{self.family} {self.scale} @{self.imgsz}, batch {self.batch}, {self.threads} threads, "
                f"{self.runs} profiled runs, {self.fdconv_layers} FDConv layers; ms per run with the "
                "profiler on (its overhead included: shares, not latency), operators by |FDConv - stock|")
        lines = [head]
        for profile in self.profiles:
            lines += profile.lines(top)
        return "\n".join(lines + self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fdconv_layer_names(model: Any) -> list[str]:
    """Module paths of the model's dynamic FDConv layers (``model.8.m.0.cv2.conv``)."""
    from pipeline.nn.fdconv import FDConv

    return [name for name, module in model.named_modules()
            if isinstance(module, FDConv) and module.is_dynamic]


def in_layers(node_name: str, layers: list[str]) -> bool:
    """Whether an exported node (``/model.8/m.0/cv2/conv/MatMul_5``, fused names too) is in a layer."""
    dotted = "." + node_name.split(",")[0].replace("/", ".").lstrip(".")
    return any(dotted.startswith(f".{layer}.") for layer in layers)


def profile_onnxruntime(path: Path, batch: np.ndarray, threads: int, runs: int,
                        layers: list[str]) -> tuple[dict[str, float], float]:
    """ms per run by ONNX operator type, and the part in ``layers``, from onnxruntime's profiler."""
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="fdpose-profile-") as tmp:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = collections.Counter()
    inside = 0.0
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        ms = event["dur"] / 1000 / runs
        by_op[event["args"].get("op_name", "?")] += ms
        inside += ms if in_layers(event["name"][: -len("_kernel_time")], layers) else 0.0
    return dict(by_op), inside


def profile_openvino(path: Path, batch: np.ndarray, threads: int, runs: int,
                     layers: list[str]) -> tuple[dict[str, float], float]:
    """ms per run by OpenVINO layer type and kernel, and the part in ``layers``, from ``PERF_COUNT``.

    The IR is read in memory from ``path`` as ``fdpose package`` reads it, keeping the ONNX node
    names (the package renames them by position) so nodes can be told apart by layer.
    """
    from pipeline.inference import import_openvino

    core = import_openvino().Core()
    model = core.read_model(str(path))
    model.reshape(list(batch.shape))
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.infer({0: batch})  # the first call allocates; not profiled
    by_op: dict[str, float] = collections.Counter()
    inside = 0.0
    for _ in range(runs):
        request.infer({0: batch})
        for info in request.profiling_info:
            ms = info.real_time.total_seconds() * 1000 / runs
            by_op[f"{info.node_type} ({info.exec_type})"] += ms
            inside += ms if in_layers(info.node_name, layers) else 0.0
    return dict(by_op), inside


def bench_profile(family: str = "YOLOv8", scale: str = "n", imgsz: int = 320, batch: int = 1,
                  threads: int = 2, runs: int = 30, seed: int = 0) -> ProfileResult:
    """Profile both twins of ``family`` under onnxruntime and (when installed) OpenVINO."""
    import onnxruntime
    import torch

    from pipeline.bench.deploy import families, twin_models
    from pipeline.inference import ModelMeta
    from pipeline.package.export import export_onnx

    found, _ = families([family], option="--family")
    if not found:
        raise FdposeError(f"no model YAML ships for {family}", item="--family")
    models, meta = twin_models(found[family], scale, seed)
    if imgsz % meta.stride:
        raise FdposeError(f"{imgsz} is not a multiple of the stride {meta.stride}", item="--imgsz")
    meta = ModelMeta(meta.skeleton, imgsz=imgsz, stride=meta.stride)
    layers = {name: fdconv_layer_names(model) for name, model in models.items()}
    inputs = np.random.default_rng(imgsz).random((batch, 3, imgsz, imgsz), dtype=np.float32)
    result = ProfileResult(family, scale, imgsz, batch, threads, runs, len(layers["fdconv"]))
    runtimes = [("onnxruntime", onnxruntime.__version__, profile_onnxruntime)]
    try:
        import openvino

        runtimes.append(("openvino", openvino.__version__, profile_openvino))
    except ImportError:
        result.notes.append("openvino: skipped, not installed (pip install 'fdpose[openvino]')")
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="fdpose-bench-profile-") as tmp:
        paths = {name: export_onnx(model, meta, imgsz, Path(tmp) / f"{name}.onnx")
                 for name, model in models.items()}
        for runtime, version, profile in runtimes:
            figures = {name: profile(paths[name], inputs, threads, runs, layers[name]) for name in models}
            result.profiles.append(_runtime_profile(runtime, version, figures))
    return result


def _runtime_profile(runtime: str, version: str,
                     figures: dict[str, tuple[dict[str, float], float]]) -> RuntimeProfile:
    """Both models' operator times side by side (an operator one model lacks counts 0 there)."""
    (fd_ops, inside), (stock_ops, _) = figures["fdconv"], figures["stock"]
    names = sorted(set(fd_ops) | set(stock_ops))
    ops = [OpTime(op, fd_ops.get(op, 0.0), stock_ops.get(op, 0.0)) for op in names]
    return RuntimeProfile(runtime, version, sum(fd_ops.values()), sum(stock_ops.values()), inside, ops)


@click.command("profile")
@click.option("--family", default="YOLOv8", show_default=True, help="Model family (YOLOv8, YOLO11, YOLO26).")
@click.option("--scale", default="n", show_default=True, help="Model scale.")
@click.option("--imgsz", type=click.IntRange(min=32), default=320, show_default=True, help="Input size.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Intra-op threads of onnxruntime and OpenVINO.")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Profiled runs per model.")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True,
              help="Operators shown per runtime (the JSON has all).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the profiles to this JSON file.")
def command(family: str, scale: str, imgsz: int, batch: int, threads: int, runs: int, top: int,
            json_path: str | None) -> None:
    """Where FDConv's time goes in onnxruntime and OpenVINO: per-operator profiles, FDConv vs stock."""
    from pipeline.io import write_json

    result = bench_profile(family, scale, imgsz, batch, threads, runs)
    click.echo(result.table(top))
    if json_path is not None:
        write_json(json_path, result.to_dict())
        click.echo(f"wrote {json_path}")
