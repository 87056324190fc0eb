"""``fdpose bench gpu``: its code paths on the CPU with a tiny model, its FFT check, its CUDA-less exit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from pipeline.bench.gpu import AGREEMENT_TOLERANCE, check_fft_dtypes, fft_recorder
from pipeline.cli import main
from pipeline.nn import FDConv

FIGURES = ("parameters", "train_images_per_s", "peak_memory_mb", "latency_ms", "throughput_images_per_s")


def test_cpu_run_writes_every_figure_and_both_checks(tmp_path):
    path = tmp_path / "gpu.json"
    tiny = ["--device", "cpu", "--imgsz", "64", "--scales", "n", "--batch", "2", "--infer-batch", "2",
            "--steps", "1", "--repeats", "1"]
    outcome = CliRunner().invoke(main, ["bench", "gpu", *tiny, "--json", str(path)])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(path.read_text())
    assert report["amp_dtype"] == "bfloat16" and report["cuda_version"] is None
    (scale,) = report["scales"]
    assert scale["scale"] == "n"
    for name in ("fdconv", "stock"):
        figures = scale[name]
        assert set(figures) == set(FIGURES)
        assert figures["peak_memory_mb"] is None  # a GPU-only figure
        for key in ("parameters", "train_images_per_s", "latency_ms", "throughput_images_per_s"):
            assert figures[key] > 0 and math.isfinite(figures[key]), (name, key)
    assert scale["fdconv"]["parameters"] > scale["stock"]["parameters"]
    latency = scale["fdconv"]["latency_ms"] / scale["stock"]["latency_ms"]
    assert scale["ratios"]["b1 latency"] == pytest.approx(latency)
    assert scale["ratios"]["peak memory"] is None
    fft = scale["fft_check"]
    assert fft["ok"] and fft["count"] > 0 and set(fft["dtypes"]) <= {"float32", "complex64"}
    agreement = scale["agreement"]
    assert agreement["tolerance"] == AGREEMENT_TOLERANCE["bfloat16"]
    assert 0 <= agreement["fdconv_rel_err"] <= agreement["tolerance"] and agreement["ok"]
    table = path.with_suffix(".txt").read_text()
    assert table == report["table"] + "\n"
    assert "FFT dtype check ok" in table and "fdconv" in outcome.output


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_fft_check_detects_a_half_precision_fft():
    """The recorder sees the dtype every FFT actually ran in; a half one fails the check."""
    recorder = fft_recorder()
    with recorder:
        torch.fft.irfft2(torch.fft.rfft2(torch.randn(6, 10)))
    assert check_fft_dtypes(recorder.records).ok
    with recorder:  # a deliberately wrong case: meta tensors let a half FFT "run" anywhere
        torch.fft.rfft2(torch.randn(6, 10, dtype=torch.half, device="meta"))
    check = check_fft_dtypes(recorder.records)
    assert not check.ok and "half precision" in check.message and "float16" in check.dtypes
    assert not check_fft_dtypes([]).ok  # nothing ran: nothing was checked
    assert not check_fft_dtypes([("_fft_c2r.default", "complex64")], error="cuFFT only supports ...").ok


def test_fdconv_under_autocast_runs_its_ffts_in_float32():
    layer = FDConv(24, 24, 3, padding=1)
    recorder = fft_recorder()
    with recorder, torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(2, 24, 9, 9)).float().sum().backward()
    check = check_fft_dtypes(recorder.records)
    assert check.ok and check.count >= 2, check.message  # the basis kernels' irfft2 and its gradient


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu.json"
    outcome = CliRunner().invoke(main, ["bench", "gpu", "--json", str(path)])
    assert outcome.exit_code == 0
    assert len(outcome.output.strip().splitlines()) == 1 and "no CUDA device" in outcome.output
    assert not path.exists()


def test_rejects_unknown_scales_and_a_missing_output_folder(tmp_path):
    outcome = CliRunner().invoke(main, ["bench", "gpu", "--device", "cpu", "--scales", "n,q"])
    assert outcome.exit_code == 2 and "scales" in outcome.output
    target = tmp_path / "missing" / "gpu.json"
    outcome = CliRunner().invoke(main, ["bench", "gpu", "--device", "cpu", "--json", str(target)])
    assert outcome.exit_code == 1 and "does not exist" in outcome.output and "Traceback" not in outcome.output
