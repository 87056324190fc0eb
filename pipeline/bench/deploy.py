"""``fdpose bench deploy``: FDConv models against their stock twins in every format a package has.

For each family (YOLOv8, YOLO11, YOLO26: those whose model YAML ships) at one scale and each input
size, the FDConv model and its stock twin (:func:`pipeline.nn.info.stock_model_dict`: the same YAML with
stock blocks, so the same scale, ``nc`` and ``kpt_shape``) are built from YAML, untrained (weights do
not change the cost), and run in each format, both exported the same way:

- ``pytorch``: eval mode, no grad, as a package's ``model.safetensors`` runs (``TorchRunner``);
- ``pytorch-fused``: the same with Conv+BN fused, as ultralytics' predictor runs it;
- ``onnxruntime``: the ONNX file ``fdpose package`` writes (:func:`pipeline.package.export.export_onnx`:
  dynamic batch; FDConv's per-sample kernels run as one batched matrix product, no ``Loop``);
- ``openvino``: that ONNX file as an OpenVINO IR (:func:`pipeline.package.export.export_openvino`), when
  the ``fdpose[openvino]`` extra is installed.

``conv_form`` picks FDConv's export form for the two exported formats (``im2col``, what a package
ships, or ``taps``: :func:`pipeline.nn.fdconv.batched_conv`), so both can be measured.

Per format: batch-1 latency (median and 95th percentile over ``runs`` calls) and throughput at
``batch`` (8 by default: images per second from the median batch call), and the FDConv / stock
ratios of each (for throughput the ratio of times, stock images/s over FDConv images/s, so that above
1 always means FDConv costs more), all timed by the one harness (:mod:`pipeline.bench.timing`):
FDConv and stock calls in interleaved pairs, so load from other processes hits both alike. Per
family, the file sizes: the FDConv ``model.onnx`` against the stock twin's ONNX exported by
ultralytics (float32 both), and both OpenVINO ``.bin`` files. Verdicts judge latency, batch-8
throughput and the ONNX size against the deployment targets (:mod:`pipeline.bench.deploy_targets`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.bench.deploy_targets import (
    FORMAT_TITLES,
    Judged,
    SizeRow,
    case_lines,
    latency_target,
    throughput_target,
    verdict,
)
from pipeline.bench.timing import Ratio, time_pair, torch_threads
from pipeline.errors import FdposeError

FORMATS = ("pytorch", "pytorch-fused", "onnxruntime", "openvino")


@dataclass
class DeployRow:
    """One family, format and input size: both models' figures, their ratios and targets."""

    family: str
    format: str
    imgsz: int
    fdconv_ms: float  # batch-1 median
    stock_ms: float
    fdconv_p95_ms: float
    stock_p95_ms: float
    fdconv_images_s: float  # at the throughput batch
    stock_images_s: float
    ratio: float  # FDConv / stock batch-1 median latency
    ratio_p95: float
    throughput_ratio: float  # stock images/s / FDConv images/s (> 1: FDConv is slower)
    target: float | None  # of the latency ratio
    throughput_target: float | None = None

    @property
    def verdict(self) -> str:
        return verdict(self.ratio, self.target)

    @property
    def throughput_verdict(self) -> str:
        return verdict(self.throughput_ratio, self.throughput_target)


@dataclass
class DeployResult:
    """All rows with the settings and versions they were measured with."""

    scale: str
    sizes: list[int]
    threads: int
    runs: int
    batch: int
    batch_runs: int
    versions: dict[str, str]
    machine: str
    rows: list[DeployRow]
    notes: list[str] = field(default_factory=list)
    files: list[SizeRow] = field(default_factory=list)
    conv_form: str = "im2col"  # FDConv's export form in ONNX and OpenVINO

    def table(self) -> str:
        """The figures as plain text: one line per family, format and size, the file sizes, then one
        verdict line per target."""
        b = self.batch
        lines = [f"FDConv vs stock twin, scale {self.scale}, CPU, {self.threads} threads; batch-1 latency "
                 f"over {self.runs} runs, throughput at batch {b} over {self.batch_runs} runs; "
                 f"FDConv exported in {self.conv_form} form; {self.machine}",
                 f"{'':>23} {'--- batch-1 median ms ---':>27} {'---- p95 ms ----':>18} "
                 f"{f'---- batch-{b} images/s ----':>30}",
                 f"{'family':<7} {'format':<13} {'imgsz':>5} {'FDConv':>8} {'stock':>8} {'ratio':>7} "
                 f"{'FDConv':>8} {'stock':>8} {'FDConv':>9} {'stock':>9} {'ratio':>7} {'target':>7} verdict "
                 f"{f'b{b} target':>10} verdict"]
        for row in self.rows:
            lines.append(f"{row.family:<7} {row.format:<13} {row.imgsz:>5} {row.fdconv_ms:>8.2f} "
                         f"{row.stock_ms:>8.2f} {row.ratio:>6.3f}x {row.fdconv_p95_ms:>8.2f} "
                         f"{row.stock_p95_ms:>8.2f} {row.fdconv_images_s:>9.2f} {row.stock_images_s:>9.2f} "
                         f"{row.throughput_ratio:>6.3f}x {_target(row.target):>7} {row.verdict:<7} "
                         f"{_target(row.throughput_target):>10} {row.throughput_verdict}")
        if self.files:
            lines += ["", "file sizes (MB, float32): FDConv vs stock twin",
                      f"{'family':<7} {'file':<11} {'FDConv':>8} {'stock':>8} {'ratio':>7} {'target':>7} "
                      "verdict  stock file"]
            lines += [f"{f.family:<7} {f.file:<11} {f.fdconv_bytes / 1e6:>8.2f} {f.stock_bytes / 1e6:>8.2f} "
                      f"{f.ratio:>6.3f}x {_target(f.target):>7} {f.verdict:<8} {f.stock_source}"
                      for f in self.files]
        judged = self.verdicts()
        lines += ["", "verdicts against the deployment targets:"] + (judged or ["none: no size, batch or "
                                                                                "format here has a target"])
        return "\n".join(lines + self.notes)

    def verdicts(self) -> list[str]:
        """One line per target that a measured case has (:func:`deploy_targets.case_lines`)."""
        cases = [Judged(f"{FORMAT_TITLES[r.format]}, batch 1 @{r.imgsz}", r.family, r.ratio, r.target)
                 for r in self.rows if r.target is not None]
        cases += [Judged(f"{FORMAT_TITLES[r.format]}, batch {self.batch} throughput @{r.imgsz}", r.family,
                         r.throughput_ratio, r.throughput_target)
                  for r in self.rows if r.throughput_target is not None]
        cases += [Judged(f"{f.file} size vs the stock twin's", f.family, f.ratio, f.target)
                  for f in self.files if f.target is not None]
        return case_lines(cases)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, source in zip(data["rows"], self.rows, strict=True):
            row["verdict"], row["throughput_verdict"] = source.verdict, source.throughput_verdict
        for row, source in zip(data["files"], self.files, strict=True):
            row.update(ratio=source.ratio, target=source.target, verdict=source.verdict)
        data["verdicts"] = self.verdicts()
        return data


def _target(target: float | None) -> str:
    return "-" if target is None else f"<={target:.2f}"


# --- building and exporting ---------------------------------------------------------------------


def families(names: list[str] | None = None, option: str = "--families") -> tuple[dict[str, Path], list[str]]:
    """The shipped model YAML of each family asked for (all by default), and notes on missing ones;
    an unknown name is an error on ``option``."""
    from pipeline.nn.info import FAMILY_MODELS

    wanted = names or list(FAMILY_MODELS)
    unknown = [name for name in wanted if name not in FAMILY_MODELS]
    if unknown:
        raise FdposeError(f"unknown family {', '.join(unknown)} (known: {', '.join(FAMILY_MODELS)})",
                          item=option)
    found = {name: FAMILY_MODELS[name] for name in wanted if FAMILY_MODELS[name].is_file()}
    notes = [f"{name}: skipped, no model YAML {FAMILY_MODELS[name].name}"
             for name in wanted if name not in found]
    return found, notes


def twin_models(cfg: Path, scale: str, seed: int = 0) -> tuple[dict[str, Any], Any]:
    """The FDConv model of ``cfg`` at ``scale`` and its stock twin (eval mode), and their metadata."""
    import torch

    from pipeline.inference import ModelMeta
    from pipeline.nn.info import build, load_model_yaml, stock_model_dict
    from pipeline.skeleton import Skeleton

    d = load_model_yaml(cfg, scale)
    torch.manual_seed(seed)
    models = {"fdconv": build(d).eval(), "stock": build(stock_model_dict(d)).eval()}
    k, dims = (int(v) for v in d.get("kpt_shape", (17, 3)))
    skeleton = Skeleton(keypoint_names=[f"kp{i}" for i in range(k)],
                        class_names=[str(i) for i in range(int(d.get("nc", 1)))], kpt_dims=dims)
    stride = int(max(models["fdconv"].stride))
    return models, ModelMeta(skeleton, stride=stride)


def format_runners(models: dict[str, Any], meta: Any, imgsz: int, folder: Path, threads: int,
                   openvino: bool) -> dict[str, dict[str, Any]]:
    """Per format, a runner of each model (``fdconv``, ``stock``); exported files go to ``folder``."""
    from pipeline.inference import ModelMeta, OnnxRunner, OpenVinoRunner, TorchRunner
    from pipeline.package.export import export_onnx, export_openvino

    meta = ModelMeta(meta.skeleton, imgsz=imgsz, stride=meta.stride)
    runners: dict[str, dict[str, Any]] = {"pytorch": {}, "pytorch-fused": {}, "onnxruntime": {}}
    if openvino:
        runners["openvino"] = {}
    for name, model in models.items():
        runners["pytorch"][name] = TorchRunner(model, meta, "safetensors")
        runners["pytorch-fused"][name] = TorchRunner(copy.deepcopy(model).fuse(verbose=False), meta,
                                                     "safetensors")
        onnx_path = export_onnx(model, meta, imgsz, folder / f"{name}-{imgsz}.onnx")
        runners["onnxruntime"][name] = OnnxRunner(onnx_path, meta, threads)
        if openvino:
            xml_path = export_openvino(onnx_path, folder / f"{name}-{imgsz}.xml")
            runners["openvino"][name] = OpenVinoRunner(xml_path, meta, threads)
    return runners


def ultralytics_onnx(model: Any, imgsz: int, folder: Path) -> Path:
    """``model`` exported to ONNX by ultralytics' own exporter (float32, batch 1, not simplified: the
    simplifier is an optional download), as a stock model's user gets it; its log kept quiet."""
    import logging

    from ultralytics.engine.exporter import Exporter
    from ultralytics.utils import LOGGER

    model = copy.deepcopy(model)
    model.task, model.pt_path = "pose", str(folder / "stock-ultralytics.pt")
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        exporter = Exporter(overrides={"format": "onnx", "imgsz": imgsz, "batch": 1, "dynamic": False,
                                       "simplify": False, "device": "cpu", "verbose": False})
        return Path(exporter(model=model))
    finally:
        LOGGER.setLevel(level)


def file_sizes(family: str, models: dict[str, Any], imgsz: int, folder: Path,
               openvino: bool) -> list[SizeRow]:
    """The FDConv ``model.onnx`` (as ``fdpose package`` exports it, already in ``folder``) against the
    stock twin's ONNX exported by ultralytics; and both OpenVINO ``.bin`` files (each the IR of the
    model's ONNX as exported here)."""
    stock_onnx = ultralytics_onnx(models["stock"], imgsz, folder)
    rows = [SizeRow(family, "model.onnx", (folder / f"fdconv-{imgsz}.onnx").stat().st_size,
                    stock_onnx.stat().st_size, f"ultralytics export ({stock_onnx.name})")]
    if openvino:
        rows.append(SizeRow(family, "model.bin", (folder / f"fdconv-{imgsz}.bin").stat().st_size,
                            (folder / f"stock-{imgsz}.bin").stat().st_size,
                            "OpenVINO IR of the stock ONNX exported as model.onnx is"))
    return rows


# --- timing -------------------------------------------------------------------------------------


def measure(runners: dict[str, Any], family: str, fmt: str, imgsz: int, runs: int, batch: int,
            batch_runs: int, warmup: int = 2) -> DeployRow:
    """Time both runners of one format: batch-1 latency and throughput at ``batch``, in interleaved
    pairs (:func:`pipeline.bench.timing.time_pair`)."""
    rng = np.random.default_rng(imgsz)
    single = rng.random((1, 3, imgsz, imgsz), dtype=np.float32)
    many = rng.random((batch, 3, imgsz, imgsz), dtype=np.float32)
    fd, stock = runners["fdconv"], runners["stock"]
    fd_1, stock_1 = time_pair(functools.partial(fd, single), functools.partial(stock, single), runs, warmup)
    fd_b, stock_b = time_pair(functools.partial(fd, many), functools.partial(stock, many), batch_runs, 1)
    return DeployRow(family, fmt, imgsz, fd_1.median, stock_1.median, fd_1.percentile(95),
                     stock_1.percentile(95), fd_b.per_second(batch), stock_b.per_second(batch),
                     Ratio.of(fd_1, stock_1).median, fd_1.percentile(95) / stock_1.percentile(95),
                     Ratio.of(fd_b, stock_b).median, latency_target(fmt, imgsz),
                     throughput_target(fmt, batch))


def bench_deploy(family_names: list[str] | None = None, scale: str = "n", sizes: tuple[int, ...] = (320, 640),
                 threads: int = 2, runs: int = 20, batch: int = 8, batch_runs: int = 5,
                 json_path: str | Path | None = None, seed: int = 0,
                 progress: Callable[[str], None] | None = None, conv_form: str = "im2col") -> DeployResult:
    """Measure every family x size x format (see the module docstring); write JSON when asked.
    ``progress`` is told each family and size as it is done."""
    import onnxruntime
    import torch

    from pipeline.io import write_json

    if runs < 2 or batch_runs < 1 or batch < 1:
        raise FdposeError("need at least 2 runs, 1 batch run and a batch of 1", item="--runs")
    found, notes = families(family_names)
    if not found:
        raise FdposeError("no model YAML of the families asked for", item="--families")
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.__version__
    except ImportError:
        notes.append("openvino: skipped, not installed (pip install 'fdpose[openvino]')")
    with torch_threads(threads), export_conv_form(conv_form):
        rows, files = _measure_all(found, scale, sizes, threads, runs, batch, batch_runs,
                                   "openvino" in versions, seed, progress or (lambda line: None))
    load = os.getloadavg()[0]
    machine = (f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end (a shared machine: "
               "ratios are measured side by side, absolute times vary)")
    result = DeployResult(scale, list(sizes), threads, runs, batch, batch_runs, versions, machine, rows,
                          notes, files, conv_form)
    if json_path is not None:
        write_json(json_path, result.to_dict())
    return result


@contextlib.contextmanager
def export_conv_form(form: str):
    """FDConv's export form (``pipeline.nn.fdconv.EXPORT_CONV_FORM``) set to ``form`` while inside."""
    from pipeline.nn import fdconv

    if form not in ("im2col", "taps"):
        raise FdposeError(f"unknown export form {form!r} (im2col or taps)", item="--conv-form")
    previous, fdconv.EXPORT_CONV_FORM = fdconv.EXPORT_CONV_FORM, form
    try:
        yield
    finally:
        fdconv.EXPORT_CONV_FORM = previous


def _measure_all(found: dict[str, Path], scale: str, sizes: tuple[int, ...], threads: int, runs: int,
                 batch: int, batch_runs: int, openvino: bool, seed: int,
                 progress: Callable[[str], None]) -> tuple[list[DeployRow], list[SizeRow]]:
    """Every family x size x format, and each family's file sizes (at the first size); exported files
    live in a temporary folder, emptied after each size."""
    import torch

    rows: list[DeployRow] = []
    files: list[SizeRow] = []
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="fdpose-bench-deploy-") as tmp:
        for family, cfg in found.items():
            models, meta = twin_models(cfg, scale, seed)
            for imgsz in sizes:
                if imgsz % meta.stride:
                    raise FdposeError(f"{imgsz} is not a multiple of the stride {meta.stride}",
                                      item="--sizes")
                runners = format_runners(models, meta, imgsz, Path(tmp), threads, openvino)
                if imgsz == sizes[0]:
                    files += file_sizes(family, models, imgsz, Path(tmp), openvino)
                for fmt, pair in runners.items():
                    rows.append(measure(pair, family, fmt, imgsz, runs, batch, batch_runs))
                for path in Path(tmp).iterdir():
                    path.unlink()
                progress(f"{family} {imgsz}: done ({', '.join(runners)})")
    return rows, files


def _integers(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FdposeError(f"expected comma-separated integers, got {text!r}", item=option) from None
    if not values or min(values) <= 0:
        raise FdposeError(f"expected positive integers, got {text!r}", item=option)
    return values


@click.command("deploy")
@click.option("--families", "family_names", default="YOLOv8,YOLO11,YOLO26", show_default=True,
              help="Comma-separated model families (those whose model YAML ships are run).")
@click.option("--scale", default="n", show_default=True, help="Model scale.")
@click.option("--sizes", default="320,640", show_default=True, help="Comma-separated input sizes.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Intra-op threads of torch, onnxruntime and OpenVINO.")
@click.option("--runs", type=click.IntRange(min=2), default=20, show_default=True,
              help="Timed batch-1 calls per model and format.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Batch size of the throughput measurement.")
@click.option("--batch-runs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed batch calls per model and format.")
@click.option("--conv-form", type=click.Choice(["im2col", "taps"]), default="im2col", show_default=True,
              help="FDConv's export form in ONNX and OpenVINO (a package ships im2col).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the figures to this JSON file.")
def command(family_names: str, scale: str, sizes: str, threads: int, runs: int, batch: int, batch_runs: int,
            conv_form: str, json_path: str | None) -> None:
    """FDConv vs stock in PyTorch (eager, fused), onnxruntime and OpenVINO: latency, throughput, ratios."""
    result = bench_deploy([name.strip() for name in family_names.split(",") if name.strip()], scale,
                          _integers(sizes, "--sizes"), threads, runs, batch, batch_runs, json_path,
                          progress=lambda line: click.echo(line, err=True), conv_form=conv_form)
    click.echo(result.table())
    if json_path is not None:
        click.echo(f"wrote {json_path}")
