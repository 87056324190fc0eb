"""``fdpose bench convert`` runs end to end at a tiny size (the figures themselves are not tested)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pipeline.bench.convert import generate
from pipeline.cli import main
from pipeline.formats.coco import read_coco


def test_generated_file_is_valid_coco_with_the_stated_slips(tmp_path):
    path = generate(tmp_path, annotations=50, images=10, keypoints=5)
    dataset = read_coco(path, tmp_path / "images")
    assert len(dataset.images) <= 10 and sum(len(im.instances) for im in dataset.images) == 50
    (slip,) = dataset.report.items  # max(1, 50 // 1000) keypoints placed past the right edge
    assert slip.action == "repaired" and slip.reason.startswith("keypoints [1] outside the 64x48 image")


def test_bench_prints_both_timings_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", "convert", "--annotations", "200", "--images", "40", "--json-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (
        "fdpose convert" in result.output and "ultralytics" in result.output and "speed-up" in result.output
    )
    figures = json.loads(out.read_text())
    assert figures["fdpose"]["instances"] == 200 and figures["fdpose"]["images"] == 40
    assert figures["ultralytics"]["label_files"] > 0 and figures["speedup"] > 0
