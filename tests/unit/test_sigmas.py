"""``fdpose sigmas`` on generated double annotations with known per-keypoint noise.

Each instance is annotated twice; every annotation is the true point plus Gaussian noise of standard
deviation ``sigma_i * s / sqrt(2)`` per axis (``s^2`` = 0.53 x box area, the evaluation's area rule), so
an annotation's expected squared distance from the truth is ``sigma_i^2 s^2``: COCO's definition. With
400 pairs per keypoint the estimate's relative standard error is about 1 / (2 sqrt(400)) = 2.5 %;
the stated tolerance is 10 % (four standard errors).
"""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.dataset import Instance
from pipeline.sigmas import estimate, match_pairs
from pipeline.skeleton import Skeleton

NAMES = ["nose", "left_eye", "right_eye", "tail_tip"]
TRUE_SIGMAS = [0.02, 0.05, 0.05, 0.12]
TOLERANCE = 0.10


def double_annotations(rng: np.random.Generator, images: int, per_image: int, size: int = 400):
    """COCO images and annotations: ``per_image`` instances per image, each annotated twice."""
    image_list, annotations = [], []
    for image_id in range(1, images + 1):
        image_list.append({"id": image_id, "file_name": "blank.png", "width": size, "height": size})
        for slot in range(per_image):
            x0, y0 = 10 + slot * (size // per_image), 20.0
            w, h = size // per_image - 20, 300.0
            s = np.sqrt(0.53 * w * h)
            truth = np.column_stack([rng.uniform(x0 + 20, x0 + w - 20, 4),
                                     rng.uniform(y0 + 20, y0 + h - 20, 4)])
            for _ in range(2):
                noisy = truth + rng.normal(0, 1, (4, 2)) * (np.array(TRUE_SIGMAS)[:, None] * s / np.sqrt(2))
                box = [x0 + rng.uniform(-2, 2), y0 + rng.uniform(-2, 2), w, h]
                points = np.column_stack([noisy, np.full(4, 2)]).reshape(-1).round(4).tolist()
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": box, "keypoints": points, "iscrowd": 0})
    return image_list, annotations


def test_estimates_recover_known_sigmas_within_tolerance():
    rng = np.random.default_rng(3)
    _, annotations = double_annotations(rng, images=200, per_image=2)
    pairs = []
    for start in range(0, len(annotations), 4):  # one image: two instances, two annotations each
        group = annotations[start:start + 4]
        annotators = [[_instance(group[0]), _instance(group[2])], [_instance(group[1]), _instance(group[3])]]
        pairs += match_pairs(annotators)
    assert len(pairs) == 400
    found = estimate(pairs, NAMES)
    for result, truth in zip(found, TRUE_SIGMAS, strict=True):
        assert result.pairs == 400
        assert abs(result.sigma - truth) <= TOLERANCE * truth, (result, truth)
        assert result.low < result.sigma < result.high
    assert sum(r.low <= t <= r.high for r, t in zip(found, TRUE_SIGMAS, strict=True)) >= 3


def _instance(annotation: dict) -> Instance:
    x, y, w, h = annotation["bbox"]
    return Instance(0, [x, y, x + w, y + h], np.array(annotation["keypoints"]).reshape(-1, 3))


def test_too_few_pairs_give_no_estimate_and_overlap_decides_the_pairs():
    a = Instance(0, [0, 0, 100, 100], np.array([[10, 10, 2], [20, 20, 0]]))
    b = Instance(0, [2, 2, 102, 102], np.array([[12, 10, 2], [20, 21, 2]]))
    far = Instance(0, [300, 300, 400, 400], np.array([[310, 310, 2], [320, 320, 2]]))
    assert match_pairs([[a], [b, far]]) == [(a, b)]
    found = estimate([(a, b)], ["p", "q"], min_pairs=1)
    assert found[0].pairs == 1 and found[1].pairs == 0 and found[1].sigma is None
    assert abs(found[0].sigma - np.sqrt(4 / (2 * 0.53 * 10000))) < 1e-4


def test_sigmas_command_writes_estimates_into_the_skeleton_file(tmp_path):
    rng = np.random.default_rng(5)
    Image.new("RGB", (400, 400)).save(tmp_path / "blank.png")
    images, annotations = double_annotations(rng, images=200, per_image=2)
    images = [{**image, "file_name": f"{image['id']}.png"} for image in images]
    for image in images:
        (tmp_path / image["file_name"]).symlink_to(tmp_path / "blank.png")
    (tmp_path / "double.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "animal", "keypoints": NAMES}]}))
    out = tmp_path / "layout.yaml"
    result = CliRunner().invoke(main, ["sigmas", "--from", "coco", "--input", str(tmp_path / "double.json"),
                                       "--images", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    skeleton = Skeleton.load(out)
    assert skeleton.sigma_sources == ["estimated"] * 4
    for sigma, truth in zip(skeleton.sigmas, TRUE_SIGMAS, strict=True):
        assert abs(sigma - truth) <= TOLERANCE * truth
    written = yaml.safe_load(out.read_text())["sigma_estimate"]
    assert written["keypoints"]["tail_tip"]["pairs"] == 400 and "E[d_i^2 / s^2]" in written["method"]
    assert "400 pairs" in written["data"] and "tail_tip" in result.output


def test_the_interval_has_its_stated_coverage():
    """Over 300 simulated studies of 100 pairs each, the 95% bootstrap interval holds the true sigma in
    about 95% of them (measured 0.94 here; the bounds allow for 300 draws' sampling error)."""
    rng = np.random.default_rng(0)
    sigma, box = 0.05, [0, 0, 100, 100]
    spread = sigma * np.sqrt(0.53 * 100 * 100) / np.sqrt(2)
    hits = 0
    for study in range(300):
        truth = rng.uniform(20, 80, (100, 2))
        noisy = [truth + rng.normal(0, spread, (100, 2)) for _ in range(2)]
        first, second = ([Instance(0, box, np.c_[points[i:i + 1], [2]]) for i in range(100)]
                         for points in noisy)
        pairs = list(zip(first, second, strict=True))
        found = estimate(pairs, ["point"], seed=study, resamples=1000)[0]
        hits += found.low <= sigma <= found.high
    assert 0.91 <= hits / 300 <= 0.99
