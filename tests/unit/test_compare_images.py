"""Evaluation noise: the paired bootstrap over val images scores by the eval stage's COCO protocol, gives
identical models zero, finds a real difference, and is reproducible."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pipeline.compare.images import image_bootstrap, oks_map, resample, top_detections
from pipeline.metrics import score_predictions

NAMES = [f"k{i}" for i in range(5)]
SIGMAS = [0.05] * 5


def synthetic(images: int, noise: float, seed: int) -> tuple[dict, list[dict]]:
    """A COCO keypoints ground truth of ``images`` images with two people each, and predictions that
    miss the labelled points by ``noise`` pixels (sd) plus low-score clutter."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [],
          "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": []}]}
    predictions = []
    for image in range(1, images + 1):
        gt["images"].append({"id": image, "width": 200, "height": 200, "file_name": f"{image}.png"})
        for _ in range(2):
            x, y, w, h = *rng.uniform(10, 120, 2), *rng.uniform(40, 70, 2)
            points = np.stack([rng.uniform(x, x + w, 5), rng.uniform(y, y + h, 5), np.full(5, 2.0)], 1)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image, "category_id": 1,
                                      "bbox": [x, y, w, h], "area": 0.53 * w * h, "iscrowd": 0,
                                      "num_keypoints": 5, "keypoints": points.ravel().tolist()})
            guess = points.copy()
            guess[:, :2] += rng.normal(0, noise, (5, 2))
            predictions.append({"image_id": image, "category_id": 1, "bbox": [x, y, w, h],
                                "score": float(rng.uniform(0.5, 1)), "keypoints": guess.ravel().tolist()})
        for _ in range(3):
            x, y = rng.uniform(0, 150, 2)
            clutter = np.stack([rng.uniform(x, x + 40, 5), rng.uniform(y, y + 40, 5), np.full(5, 0.2)], 1)
            predictions.append({"image_id": image, "category_id": 1, "bbox": [x, y, 40, 40],
                                "score": float(rng.uniform(0.01, 0.4)),
                                "keypoints": clutter.ravel().tolist()})
    return gt, predictions


def test_oks_map_is_the_eval_stages_figure():
    gt, predictions = synthetic(12, 3.0, 0)
    expected = score_predictions(gt, predictions, SIGMAS, NAMES).metrics["oks_map"]
    assert oks_map(copy.deepcopy(gt), copy.deepcopy(top_detections(predictions)), SIGMAS) == \
        pytest.approx(expected, abs=1e-12)


def test_resample_repeats_images_under_new_ids():
    gt, predictions = synthetic(3, 3.0, 0)
    new_gt, new_predictions = resample(gt, predictions, [2, 2, 3])
    assert [image["id"] for image in new_gt["images"]] == [1, 2, 3]
    assert [ann["image_id"] for ann in new_gt["annotations"]] == [1, 1, 2, 2, 3, 3]
    assert len({ann["id"] for ann in new_gt["annotations"]}) == 6
    assert sorted({p["image_id"] for p in new_predictions}) == [1, 2, 3] and len(new_predictions) == 15
    assert gt["images"][0]["id"] == 1 and len(gt["annotations"]) == 6  # the input is not changed


def test_identical_models_have_no_evaluation_noise_and_a_better_one_is_found():
    gt, good = synthetic(15, 1.0, 0)
    _, poor = synthetic(15, 6.0, 0)  # the same people (same seed), looser points
    same = image_bootstrap(gt, {0: (good, good), 1: (poor, poor)}, SIGMAS, resamples=8, seed=3)
    assert same.mean_sd == 0.0
    assert all(v["sd"] == 0.0 and v["difference"] == 0.0 for v in same.per_seed.values())
    better = image_bootstrap(gt, {0: (good, poor), 1: (good, poor)}, SIGMAS, resamples=8, seed=3)
    assert better.per_seed[0]["difference"] > 0 and better.per_seed[0]["ci_low"] > 0
    assert better.mean_sd > 0 and better.images == 15 and better.resamples == 8
    assert image_bootstrap(gt, {0: (good, poor), 1: (good, poor)}, SIGMAS, resamples=8, seed=3) == better
    assert "15 val images" in better.note()
