"""``fdpose bench deploy`` on a tiny configuration: every figure present and positive, never a time."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from click.testing import CliRunner

from pipeline.bench.deploy import FORMATS, bench_deploy
from pipeline.cli import main
from pipeline.errors import FdposeError
from pipeline.nn import fdconv

pytestmark = pytest.mark.slow

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
NUMBERS = ("fdconv_ms", "stock_ms", "fdconv_p95_ms", "stock_p95_ms", "fdconv_images_s", "stock_images_s",
           "ratio", "ratio_p95", "throughput_ratio")


@pytest.mark.parametrize("form", ["im2col", "taps"])
def test_bench_deploy_gives_every_figure_for_every_format(tmp_path, form):
    out = tmp_path / "deploy.json"
    args = ["--families", "YOLOv8", "--sizes", "64", "--runs", "2", "--batch", "2", "--batch-runs", "1",
            "--threads", "1", "--conv-form", form, "--json", str(out)]
    result = CliRunner().invoke(main, ["bench", "deploy", *args])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    formats = [row["format"] for row in data["rows"]]
    assert formats == [f for f in FORMATS if f != "openvino" or HAS_OPENVINO]
    for row in data["rows"]:
        assert row["family"] == "YOLOv8" and row["imgsz"] == 64
        for key in NUMBERS:
            assert math.isfinite(row[key]) and row[key] > 0, (row["format"], key)
        assert row["ratio"] == pytest.approx(row["fdconv_ms"] / row["stock_ms"])
        assert row["throughput_ratio"] == pytest.approx(row["stock_images_s"] / row["fdconv_images_s"])
        assert row["target"] is None and row["verdict"] == "-"  # targets are set for 320 and 640 only
        assert row["throughput_target"] is None and row["throughput_verdict"] == "-"  # and for batch 8
    sizes = {entry["file"]: entry for entry in data["files"]}
    assert sorted(sizes) == (["model.bin", "model.onnx"] if HAS_OPENVINO else ["model.onnx"])
    onnx_size = sizes["model.onnx"]
    assert onnx_size["fdconv_bytes"] > 0 and onnx_size["stock_bytes"] > 0 and onnx_size["target"] == 1.2
    assert onnx_size["ratio"] == pytest.approx(onnx_size["fdconv_bytes"] / onnx_size["stock_bytes"])
    assert any(line.startswith("model.onnx size vs the stock twin's: YOLOv8 ") for line in data["verdicts"])
    assert data["batch"] == 2 and data["versions"]["onnxruntime"] and data["conv_form"] == form
    assert f"FDConv exported in {form} form" in result.output
    assert fdconv.EXPORT_CONV_FORM == "im2col"  # the package's form again once the benchmark is done
    for fmt in formats:
        assert any(line.startswith(f"YOLOv8  {fmt} ") for line in result.output.splitlines()), fmt
    assert f"wrote {out}" in result.output


def test_bad_options_are_one_clear_error():
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "deploy", "--families", "YOLOv9"])
    assert result.exit_code == 1 and "--families: unknown family YOLOv9" in result.output
    result = runner.invoke(main, ["bench", "deploy", "--sizes", "64,x"])
    assert result.exit_code == 1 and "--sizes: expected comma-separated integers" in result.output
    with pytest.raises(FdposeError, match="--sizes: 48 is not a multiple of the stride 32"):
        bench_deploy(["YOLOv8"], sizes=(48,), runs=2, batch=1, batch_runs=1, threads=1)
