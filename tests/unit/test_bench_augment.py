"""``fdpose bench augment``: both runs happen, the figures are consistent with their seconds, and the
byte-identity check between worker counts can fail (times themselves are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline.augment
from pipeline.bench.augment import bench_augment
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "cfg" / "augment.yaml")


def test_bench_augment_prints_and_writes_consistent_figures(tmp_path):
    out = tmp_path / "bench.json"
    done = CliRunner().invoke(main, ["bench", "augment", "--images", "6", "--size", "64", "--copies", "2",
                                     "--workers", "2", "--config", CONFIG, "--json", str(out)])
    assert done.exit_code == 0, done.output
    figures = json.loads(out.read_text())
    assert (figures["images"], figures["size"], figures["copies"]) == (6, 64, 2)
    assert [row["workers"] for row in figures["rows"]] == [1, 2]
    for row in figures["rows"]:
        assert row["seconds"] > 0
        assert row["images_per_s"] == pytest.approx(6 / row["seconds"], rel=0.01)
        assert row["variants_per_s"] == pytest.approx(12 / row["seconds"], rel=0.01)
    one, two = figures["rows"]
    assert figures["speedup"] == pytest.approx(one["seconds"] / two["seconds"], abs=0.01)
    assert "outputs byte-identical" in done.output and f"{figures['speedup']:.2f}x" in done.output


def test_bench_augment_refuses_outputs_that_differ_between_worker_counts(tmp_path, monkeypatch):
    """A parallel augment that wrote different bytes than the serial one is an error, not a speed-up."""
    real = pipeline.augment.augment

    def seeded_by_workers(data, out, params, *, workers, **kwargs):
        result = real(data, out, params, workers=workers, **kwargs)
        (Path(out) / "workers.txt").write_text(str(workers))  # what a worker-dependent output looks like
        return result

    monkeypatch.setattr(pipeline.augment, "augment", seeded_by_workers)
    with pytest.raises(RuntimeError, match="not deterministic"):
        bench_augment(images=4, size=64, copies=1, config=CONFIG, workers=2)
