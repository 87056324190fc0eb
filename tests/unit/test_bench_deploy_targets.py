"""Verdicts of ``fdpose bench deploy`` against the deployment targets, on made-up ratios (no timing)."""

from __future__ import annotations

import pytest

from pipeline.bench.deploy import DeployResult, DeployRow
from pipeline.bench.deploy_targets import SizeRow, latency_target, throughput_target


def row(fmt: str, imgsz: int, ratio: float, throughput_ratio: float = 1.0, batch: int = 8,
        family: str = "YOLOv8") -> DeployRow:
    return DeployRow(family, fmt, imgsz, ratio, 1.0, 1.0, 1.0, 1.0, 1.0, ratio, 1.0, throughput_ratio,
                     latency_target(fmt, imgsz), throughput_target(fmt, batch))


def result(rows: list[DeployRow], files: list[SizeRow] = (), batch: int = 8) -> DeployResult:
    return DeployResult("n", [320, 640], 2, 20, batch, 5, {}, "test", rows, [], list(files))


@pytest.mark.parametrize("fmt, imgsz, target", [
    ("pytorch", 320, 1.15), ("pytorch", 640, 1.05), ("onnxruntime", 320, 1.10), ("onnxruntime", 640, 1.05),
    ("openvino", 320, 1.15), ("openvino", 640, 1.05)])
def test_batch_1_latency_is_judged_against_its_format_and_size_target(fmt, imgsz, target):
    assert row(fmt, imgsz, target).verdict == "ok"
    assert row(fmt, imgsz, target + 0.01).verdict == "OVER"


def test_no_target_no_verdict():
    assert row("pytorch-fused", 640, 2.0).verdict == "-"  # ultralytics' path: reported, not judged
    assert row("onnxruntime", 192, 2.0).verdict == "-"  # latency targets exist at 320 and 640 only
    assert row("pytorch", 320, 1.0, throughput_ratio=9.0).throughput_verdict == "-"  # no PyTorch b8 target
    assert row("onnxruntime", 320, 1.0, throughput_ratio=9.0, batch=4).throughput_verdict == "-"  # b8 only


def test_batch_8_throughput_is_judged_for_onnxruntime_and_openvino_at_any_size():
    assert row("onnxruntime", 192, 1.0, throughput_ratio=1.15).throughput_verdict == "ok"
    assert row("openvino", 640, 1.0, throughput_ratio=1.16).throughput_verdict == "OVER"


def test_onnx_size_is_judged_the_openvino_bin_only_reported():
    onnx = SizeRow("YOLOv8", "model.onnx", 28_000_000, 12_600_000, "ultralytics export")
    assert onnx.ratio == pytest.approx(2.222, abs=1e-3) and onnx.verdict == "OVER"
    assert SizeRow("YOLOv8", "model.onnx", 15_000_000, 12_600_000, "u").verdict == "ok"  # 1.19x
    assert SizeRow("YOLOv8", "model.bin", 28_000_000, 12_600_000, "ov").verdict == "-"


def test_verdict_lines_group_families_per_case_and_count_those_within():
    rows = [row("onnxruntime", 320, 1.07, family="YOLOv8"), row("onnxruntime", 320, 1.17, family="YOLO11"),
            row("pytorch-fused", 320, 1.5), row("openvino", 640, 1.2, throughput_ratio=1.1)]
    files = [SizeRow("YOLOv8", "model.onnx", 11, 10, "u"), SizeRow("YOLOv8", "model.bin", 30, 10, "ov")]
    lines = result(rows, files).verdicts()
    assert lines == [
        "ONNX Runtime, batch 1 @320: YOLOv8 1.07x, YOLO11 1.17x; target <= 1.1x: NOT met (1 of 2 within)",
        "OpenVINO, batch 1 @640: YOLOv8 1.20x; target <= 1.05x: NOT met (0 of 1 within)",
        "ONNX Runtime, batch 8 throughput @320: YOLOv8 1.00x, YOLO11 1.00x; target <= 1.15x: met",
        "OpenVINO, batch 8 throughput @640: YOLOv8 1.10x; target <= 1.15x: met",
        "model.onnx size vs the stock twin's: YOLOv8 1.10x; target <= 1.2x: met",
    ]
    table = result(rows, files).table()
    assert "verdicts against the deployment targets:" in table and lines[0] in table
    assert result([row("pytorch", 192, 1.3)], batch=2).verdicts() == []
