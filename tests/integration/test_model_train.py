"""ultralytics' own engine trains, validates and predicts with the FDConv models of every family (YOLOv8
C2f_FDConv, YOLO11 and YOLO26 C3k2_FDConv) on a tiny generated set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (registers C2f_FDConv with ultralytics, as a user's `import pipeline` does)
from pipeline.nn.ultralytics import MODELS_DIR, model_cfg

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
FAMILIES = {  # family -> (shipped FDConv YAML, FDConv block)
    "YOLOv8": (MODELS_DIR / "yolov8-pose-C2f_FDConv.yaml", "C2f_FDConv"),
    "YOLO11": (MODELS_DIR / "yolo11-pose-C3k2_FDConv.yaml", "C3k2_FDConv"),
    "YOLO26": (MODELS_DIR / "yolo26-pose-C3k2_FDConv.yaml", "C3k2_FDConv"),
}


def make_dataset(root: Path, size: int = 64, counts: dict[str, int] | None = None, num_keypoints: int = 17,
                 names: tuple[str, ...] = ("person",)) -> Path:
    """A YOLO-pose dataset of bright rectangles on noise, each a 'person' (by default) with 17 keypoints
    inside it; with other ``names``, image ``n`` shows class ``n % len(names)``."""
    import cv2

    rng = np.random.default_rng(0)
    for split, count in (counts or {"train": 4, "val": 2}).items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for n in range(count):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            x0, y0 = rng.integers(4, size // 3, 2)
            x1, y1 = x0 + rng.integers(size // 3, size // 2), y0 + rng.integers(size // 3, size // 2)
            image[y0:y1, x0:x1] = 200
            cv2.imwrite(str(root / "images" / split / f"{n}.jpg"), image)
            k = num_keypoints
            kpts = np.stack([rng.uniform(x0, x1, k), rng.uniform(y0, y1, k), np.full(k, 2.0)], 1)
            kpts[:, :2] /= size
            box = [(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size]
            line = " ".join(f"{v:.6f}" for v in [*box, *kpts.ravel()])
            (root / "labels" / split / f"{n}.txt").write_text(f"{n % len(names)} {line}\n")
    flip = COCO_FLIP if num_keypoints == 17 else list(range(num_keypoints))
    data = root / "data.yaml"
    data.write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {name}\n" for i, name in enumerate(names))
        + f"kpt_shape: [{num_keypoints}, 3]\nflip_idx: {flip}\n"
    )
    return data


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_train_val_predict_with_ultralytics_engine(family, tmp_path, monkeypatch):
    from ultralytics import YOLO

    from pipeline.nn.blocks import FDCONV_BLOCKS

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    data = make_dataset(tmp_path / "data")
    cfg, block = FAMILIES[family]
    model = YOLO(str(model_cfg("n", cfg)))
    trained_metrics = model.train(data=str(data), epochs=1, imgsz=64, batch=2, workers=0, plots=False,
                                  device="cpu", amp=False, project=str(tmp_path / "runs"), name="smoke",
                                  exist_ok=True, seed=0, deterministic=True, verbose=False, mosaic=0.0)
    best = tmp_path / "runs" / "smoke" / "weights" / "best.pt"
    assert best.is_file()

    trained = YOLO(best)
    assert trained.task == "pose"
    layers = trained.model.model
    assert [i for i, m in enumerate(layers) if isinstance(m, FDCONV_BLOCKS[block])] == [2, 4, 6, 8]
    metrics = trained.val(data=str(data), imgsz=64, batch=2, workers=0, plots=False, device="cpu",
                          project=str(tmp_path / "runs"), name="val", exist_ok=True, verbose=False)
    # One epoch judges no accuracy (test_learning.py does); what it determines: best.pt, reloaded, scores
    # what the trainer's own final validation of it scored (the FDConv weights survive the checkpoint).
    for kind in ("pose", "box"):
        for name in ("map", "map50"):
            again = getattr(getattr(metrics, kind), name)
            during = getattr(getattr(trained_metrics, kind), name)
            assert np.isfinite(again) and again == pytest.approx(during, abs=1e-9), (kind, name)

    results = trained.predict(str(tmp_path / "data" / "images" / "val" / "0.jpg"), imgsz=64, conf=0.0,
                              device="cpu", verbose=False)
    assert len(results) == 1 and results[0].keypoints is not None
    assert results[0].keypoints.data.shape[1:] == (17, 3)


@pytest.mark.slow
def test_bench_model_prints_the_table_and_writes_json(tmp_path):
    """The benchmark runs end to end (figures are not asserted: tests never judge wall-clock time)."""
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "model", "--repeats", "1", "--train-repeats", "1",
                                       "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert [(r["mode"], r["imgsz"], r["batch"]) for r in figures["rows"]] == [
        ("inference", 320, 1), ("inference", 640, 1), ("train_step", 320, 8)]
    assert figures["fdconv_parameters"] > figures["stock_parameters"] > 0
    for row in figures["rows"]:
        assert 0 < row["stock_min_ms"] <= row["stock_ms"] and 0 < row["fdconv_min_ms"] <= row["fdconv_ms"]
        assert row["ratio"] == pytest.approx(row["fdconv_ms"] / row["stock_ms"])
        assert row["ratio_min"] == pytest.approx(row["fdconv_min_ms"] / row["stock_min_ms"])
        assert f"{row['ratio']:.3f}" in result.output and f"{row['ratio_min']:.3f}" in result.output
