"""``fdpose bench package PATH``: a package's batch-1 CPU latency in PyTorch and onnxruntime.

Three runners of the packaged model, timed in interleaved rounds (:mod:`pipeline.bench.timing`):
PyTorch as packaged (the model the ONNX file is exported from), PyTorch with Conv+BN fused (what
ultralytics runs) and onnxruntime. The ONNX side is exported at each size into a temporary folder
(the shipped file has one fixed size). ``threads`` sets torch's and onnxruntime's intra-op threads
(default: their own choice).
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.bench.timing import Ratio, time_interleaved, torch_threads
from pipeline.errors import FdposeError

RUNNERS = ("pytorch", "pytorch_fused", "onnxruntime")


def bench_latency(package_dir: str | Path, sizes: tuple[int, ...] = (320, 640), runs: int = 20,
                  warmup: int = 3, threads: int | None = None) -> list[dict[str, Any]]:
    """Per size: the median batch-1 ms of each runner (``<runner>_ms``), its spread
    (``<runner>_iqr_ms``) and the fused-PyTorch / onnxruntime ratio of medians."""
    from pipeline.inference import OnnxRunner, Runner, TorchRunner
    from pipeline.model_io import load_packaged_model, read_model_yaml
    from pipeline.package.export import export_onnx

    package_dir = Path(package_dir)
    meta = read_model_yaml(package_dir)
    model = load_packaged_model(package_dir)
    fused = load_packaged_model(package_dir).fuse(verbose=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        for size in sizes:
            onnx_path = export_onnx(model, meta, size, Path(tmp) / f"model-{size}.onnx")
            runners: dict[str, Runner] = {"pytorch": TorchRunner(model, meta, "safetensors"),
                                          "pytorch_fused": TorchRunner(fused, meta, "safetensors"),
                                          "onnxruntime": OnnxRunner(onnx_path, meta, threads)}
            batch = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            timings = time_interleaved({name: functools.partial(runner, batch)
                                        for name, runner in runners.items()}, runs, warmup)
            row: dict[str, Any] = {"imgsz": size, "batch": 1, "runs": runs}
            for name, timing in timings.items():
                row[f"{name}_ms"] = timing.median
                row[f"{name}_iqr_ms"] = [timing.q1, timing.q3]
            row["onnx_speedup_vs_fused"] = Ratio.of(timings["pytorch_fused"], timings["onnxruntime"]).median
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], runs: int, threads: int | None) -> str:
    """The rows as text: medians, and the fused / onnxruntime ratio."""
    lines = [f"median ms over {runs} runs, batch 1, CPU ({os.cpu_count()} cores, threads: "
             f"{threads or 'default'}, load average {os.getloadavg()[0]:.1f})",
             f"{'imgsz':>6} {'pytorch':>9} {'pytorch fused':>14} {'onnxruntime':>12} {'fused/onnx':>11}"]
    for row in rows:
        lines.append(f"{row['imgsz']:>6} {row['pytorch_ms']:>9.1f} {row['pytorch_fused_ms']:>14.1f} "
                     f"{row['onnxruntime_ms']:>12.1f} {row['onnx_speedup_vs_fused']:>10.2f}x")
    return "\n".join(lines)


@click.command("package")
@click.argument("package_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sizes", default="320,640", show_default=True, help="Comma-separated input sizes.")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed runs per size.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads of torch and onnxruntime (default: the libraries').")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows to this JSON file.")
def command(package_dir: Path, sizes: str, runs: int, threads: int | None, json_path: Path | None) -> None:
    """A package's batch-1 CPU latency: PyTorch, PyTorch fused and onnxruntime, side by side."""
    from pipeline.io import write_json

    try:
        size_list = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise FdposeError(f"expected comma-separated integers, got {sizes!r}", item="--sizes") from None
    rows = bench_latency(package_dir, size_list, runs, threads=threads)
    click.echo(table(rows, runs, threads))
    if json_path is not None:
        write_json(json_path, {"package": str(package_dir), "rows": rows})
