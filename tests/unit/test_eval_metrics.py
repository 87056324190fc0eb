"""The metric core of ``fdpose eval`` on hand-built COCO documents: no model, no images."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from pipeline.errors import FdposeError
from pipeline.metrics import OKS_STAT_NAMES, oks, score_predictions

NAMES = ["a", "b", "c", "d"]
SIGMAS = [0.1, 0.1, 0.1, 0.1]
BOX = 100.0  # ground-truth boxes are BOX x BOX, so area = 0.53 * BOX^2 (medium range)
AREA = 0.53 * BOX * BOX


def make_gt(instances_per_image: list[list[np.ndarray]], categories: int = 1) -> dict:
    """COCO ground truth: every instance is a (K, 3) keypoint array inside a BOX x BOX box at (50, 50);
    the category cycles through ``categories``."""
    images, annotations = [], []
    for image_id, instances in enumerate(instances_per_image, start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 400, "height": 400})
        for keypoints in instances:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": len(annotations) % categories + 1,
                "bbox": [50.0, 50.0, BOX, BOX], "area": AREA, "iscrowd": 0,
                "keypoints": [float(v) for v in keypoints.reshape(-1)],
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            })
    cats = [{"id": i + 1, "name": f"class{i}", "keypoints": NAMES, "skeleton": []} for i in range(categories)]
    return {"images": images, "annotations": annotations, "categories": cats}


def square_keypoints() -> np.ndarray:
    return np.array([[60, 60, 2], [140, 60, 2], [140, 140, 2], [60, 140, 1]], dtype=np.float64)


def prediction(ann: dict, keypoints: np.ndarray, score: float, bbox: list[float] | None = None) -> dict:
    points = np.asarray(keypoints, dtype=np.float64).copy()
    points[:, 2] = 0.9  # a keypoint score, not a visibility
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": score,
            "bbox": list(bbox or ann["bbox"]), "keypoints": [float(v) for v in points.reshape(-1)]}


def shift_for_oks(target: float) -> float:
    """The x shift of every keypoint that gives OKS ``target`` with equal sigmas:
    exp(-d^2 / (2 area (2 sigma)^2)) = target."""
    return math.sqrt(-math.log(target) * 2 * AREA * (2 * SIGMAS[0]) ** 2)


def shifted(keypoints: np.ndarray, dx: float | np.ndarray) -> np.ndarray:
    out = keypoints.copy()
    out[:, 0] += dx
    return out


def pycocotools_stats(gt: dict, predictions: list[dict], sigmas: list[float], tmp_path) -> np.ndarray:
    """The reference: pycocotools' COCOeval on the documents written to JSON files."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(predictions))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "dt.json"))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_ground_truth_fed_back_scores_one():
    rng = np.random.default_rng(0)
    instances = []
    for _ in range(5):
        image = []
        for _ in range(2):
            keypoints = square_keypoints() + np.c_[rng.uniform(-5, 5, (4, 2)), np.zeros(4)]
            keypoints[1] = [0, 0, 0]  # an unlabelled keypoint must not count
            image.append(keypoints)
        instances.append(image)
    gt = make_gt(instances)
    predictions = [prediction(a, np.asarray(a["keypoints"]).reshape(-1, 3), 1.0) for a in gt["annotations"]]
    scores = score_predictions(gt, predictions, SIGMAS, NAMES)
    for name in ("oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_ar", "box_map", "box_map50"):
        assert scores.metrics[name] == pytest.approx(1.0), name
    assert scores.metrics["oks_map_large"] is None  # no ground truth that large: COCO's -1, not a number
    assert scores.matched_instances == scores.labelled_instances == 10
    labelled = [r for r in scores.keypoints if r["keypoint"] != "b"]
    assert all(r["pck@0.05"] == 1.0 and r["mean_px_error"] == 0.0 and r["count"] == 10 for r in labelled)
    unlabelled = next(r for r in scores.keypoints if r["keypoint"] == "b")
    assert unlabelled["count"] == 0 and unlabelled["pck@0.05"] is None
    assert scores.pr_curves["oks@.50"] == [1.0] * 101
    assert all(value == 1.0 for value in scores.image_scores.values())


def test_oks_matches_the_literal_formula():
    gt = square_keypoints()
    predicted = gt + np.array([[3, 4, 0], [0, 0, 0], [-6, 8, 0], [1, 0, 0]])
    sigmas = np.array([0.05, 0.1, 0.2, 0.1])
    expected = np.mean([math.exp(-d2 / (2 * AREA * (2 * s) ** 2))
                        for d2, s in zip([25, 0, 100, 1], sigmas, strict=True)])
    assert oks(gt, AREA, predicted, sigmas) == pytest.approx(expected, rel=1e-12)
    gt[2, 2] = 0  # an unlabelled keypoint leaves the mean
    expected = np.mean([math.exp(-d2 / (2 * AREA * (2 * s) ** 2))
                        for d2, s in zip([25, 0, 1], sigmas[[0, 1, 3]], strict=True)])
    assert oks(gt, AREA, predicted, sigmas) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("false_positive_score", [None, 0.95, 0.1])
def test_known_oks_gives_known_ap(false_positive_score, tmp_path):
    """Two instances predicted with OKS 0.92 and 0.62: a true positive at OKS thresholds <= the OKS, a
    false positive above. The expected AP follows from COCO's 101-point interpolated precision."""
    gt = make_gt([[square_keypoints()], [square_keypoints()]])
    first, second = gt["annotations"]
    predictions = [
        prediction(first, shifted(square_keypoints(), shift_for_oks(0.92)), 0.9),
        prediction(second, shifted(square_keypoints(), shift_for_oks(0.62)), 0.8),
    ]
    if false_positive_score is not None:  # far from everything on image 1
        predictions.append(prediction(first, shifted(square_keypoints(), 250.0), false_positive_score,
                                      bbox=[300.0, 300.0, 20.0, 20.0]))
    scores = score_predictions(gt, predictions, SIGMAS, NAMES)

    half = 51 / 101  # precision 1 (or p) on recall points 0.00..0.50, nothing beyond recall 0.5
    if false_positive_score == 0.95:
        # Ranked FP, TP, TP at OKS <= 0.6: interpolated precision 2/3 everywhere. Above: FP, TP, FP:
        # precision 1/2 up to recall 0.5.
        low, mid = 2 / 3, half / 2
    else:
        low, mid = 1.0, half
    thresholds = np.linspace(0.5, 0.95, 10)
    per_threshold = [low if t <= 0.62 else mid if t <= 0.92 else 0.0 for t in thresholds]
    assert scores.metrics["oks_map"] == pytest.approx(np.mean(per_threshold), abs=1e-12)
    assert scores.metrics["oks_map50"] == pytest.approx(low, abs=1e-12)
    assert scores.metrics["oks_map75"] == pytest.approx(mid, abs=1e-12)
    assert scores.metrics["oks_ar"] == pytest.approx(np.mean([1.0 if t <= 0.62 else 0.5 if t <= 0.92 else 0
                                                              for t in thresholds]), abs=1e-12)
    assert scores.metrics["oks_ar75"] == pytest.approx(0.5)
    assert scores.pr_curves["oks@.75"][:51] == pytest.approx([mid / half] * 51)
    assert scores.pr_curves["oks@.75"][51:] == [0.0] * 50
    # Matched at OKS >= 0.5: both; the image scores are the two OKS values.
    assert scores.image_scores == {1: pytest.approx(0.92), 2: pytest.approx(0.62)}
    # The reference implementation agrees on every statistic.
    reference = pycocotools_stats(gt, predictions, SIGMAS, tmp_path)
    ours = [scores.metrics[n] if scores.metrics[n] is not None else -1.0 for n in OKS_STAT_NAMES]
    np.testing.assert_allclose(ours, reference[:10], atol=1e-6)


def test_pck_and_pixel_error_per_keypoint():
    gt = make_gt([[square_keypoints()]])
    errors = np.array([0.0, 5.0, 10.0, 20.0])  # the diagonal is 141.4 px: 5 % = 7.07 px, 10 % = 14.14 px
    predicted = prediction(gt["annotations"][0], shifted(square_keypoints(), errors), 0.9)
    scores = score_predictions(gt, [predicted], SIGMAS, NAMES)
    rows = {r["keypoint"]: r for r in scores.keypoints}
    assert [rows[n]["pck@0.05"] for n in NAMES] == [1.0, 1.0, 0.0, 0.0]
    assert [rows[n]["pck@0.1"] for n in NAMES] == [1.0, 1.0, 1.0, 0.0]
    assert [rows[n]["mean_px_error"] for n in NAMES] == pytest.approx(errors)
    assert {r["class"] for r in scores.keypoints} == {"class0"}


def test_unmatched_instances_stay_out_of_keypoint_accuracy():
    """A prediction whose OKS is below match_oks matches nothing: no PCK rows are filled, the image
    scores 0."""
    gt = make_gt([[square_keypoints()]])
    far = prediction(gt["annotations"][0], shifted(square_keypoints(), shift_for_oks(0.3)), 0.9)
    scores = score_predictions(gt, [far], SIGMAS, NAMES, match_oks=0.5)
    assert scores.matched_instances == 0 and scores.labelled_instances == 1
    assert all(r["count"] == 0 for r in scores.keypoints)
    assert scores.image_scores == {1: 0.0}
    lenient = score_predictions(gt, [far], SIGMAS, NAMES, match_oks=0.25)
    assert lenient.matched_instances == 1
    assert lenient.image_scores[1] == pytest.approx(0.3)


def test_several_classes_get_their_own_tables_and_an_overall_one():
    gt = make_gt([[square_keypoints(), square_keypoints()]], categories=2)
    first, second = gt["annotations"]
    predictions = [prediction(first, shifted(square_keypoints(), 2.0), 0.9),
                   prediction(second, shifted(square_keypoints(), 12.0), 0.8)]
    scores = score_predictions(gt, predictions, SIGMAS, NAMES)
    by_class = {(r["class"], r["keypoint"]): r for r in scores.keypoints}
    assert by_class["class0", "a"]["mean_px_error"] == pytest.approx(2.0)
    assert by_class["class1", "a"]["mean_px_error"] == pytest.approx(12.0)
    assert by_class["all", "a"]["mean_px_error"] == pytest.approx(7.0)
    assert by_class["all", "a"]["pck@0.05"] == 0.5 and by_class["all", "a"]["count"] == 2
    # A perfect prediction of the wrong class does not match: classes are evaluated separately, as in COCO.
    lone = make_gt([[square_keypoints()]], categories=2)
    wrong_class = dict(prediction(lone["annotations"][0], square_keypoints(), 0.9), category_id=2)
    wrong = score_predictions(lone, [wrong_class], SIGMAS, NAMES)
    assert wrong.metrics["oks_map"] == 0.0 and wrong.matched_instances == 0


def test_random_predictions_match_pycocotools(tmp_path):
    """Many images, sizes small to large, noise, misses and false positives: every COCO keypoint
    statistic equals pycocotools' to 1e-6."""
    rng = np.random.default_rng(7)
    images, annotations, predictions = [], [], []
    for image_id in range(1, 13):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 640, "height": 640})
        for _ in range(rng.integers(0, 4)):
            size = rng.uniform(20, 300)
            x0, y0 = rng.uniform(0, 300, 2)
            keypoints = np.c_[rng.uniform(x0, x0 + size, 4), rng.uniform(y0, y0 + size, 4),
                              rng.choice([0, 1, 2], 4, p=[0.2, 0.2, 0.6])]
            keypoints[keypoints[:, 2] == 0, :2] = 0
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                   "bbox": [x0, y0, size, size], "area": 0.53 * size * size, "iscrowd": 0,
                   "keypoints": keypoints.reshape(-1).tolist(),
                   "num_keypoints": int((keypoints[:, 2] > 0).sum())}
            annotations.append(ann)
            if rng.random() < 0.85:  # some instances are missed
                noisy = keypoints.copy()
                noisy[:, :2] += rng.normal(0, rng.uniform(1, 25), (4, 2))
                predictions.append(prediction(ann, noisy, float(rng.uniform(0.05, 1)),
                                              bbox=list(np.add(ann["bbox"], rng.normal(0, 5, 4)))))
        for _ in range(rng.integers(0, 3)):  # false positives
            junk = np.c_[rng.uniform(0, 640, (4, 2)), np.ones(4)]
            predictions.append({"image_id": image_id, "category_id": 1, "score": float(rng.uniform(0, 1)),
                                "bbox": [*rng.uniform(0, 500, 2), *rng.uniform(10, 140, 2)],
                                "keypoints": junk.reshape(-1).tolist()})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "thing", "keypoints": NAMES, "skeleton": []}]}
    sigmas = [0.025, 0.05, 0.08, 0.1]
    scores = score_predictions(gt, predictions, sigmas, NAMES)
    reference = pycocotools_stats(gt, predictions, sigmas, tmp_path)
    ours = [scores.metrics[n] if scores.metrics[n] is not None else -1.0 for n in OKS_STAT_NAMES]
    np.testing.assert_allclose(ours, reference[:10], atol=1e-6)
    assert 0.05 < scores.metrics["oks_map"] < 0.95  # a non-trivial case, not all-or-nothing


def test_ground_truth_without_labelled_keypoints_is_an_error():
    gt = make_gt([[np.zeros((4, 3))]])
    with pytest.raises(FdposeError, match="no instance with a labelled keypoint"):
        score_predictions(gt, [], SIGMAS, NAMES)


def test_no_predictions_score_zero():
    gt = make_gt([[square_keypoints()]])
    scores = score_predictions(gt, [], SIGMAS, NAMES)
    assert scores.metrics["oks_map"] == 0.0 and scores.metrics["oks_ar"] == 0.0
    assert scores.num_predictions == 0 and scores.matched_instances == 0


def test_per_class_ap_with_several_classes():
    """Class 0 predicted perfectly, class 1 missed: AP 1 and 0 per class, their mean overall."""
    gt = make_gt([[square_keypoints()], [square_keypoints()]], categories=2)
    first = gt["annotations"][0]
    assert first["category_id"] == 1 and gt["annotations"][1]["category_id"] == 2
    scores = score_predictions(gt, [prediction(first, square_keypoints(), 0.9)], SIGMAS, NAMES)
    assert scores.per_class == {"class0": {"oks_map": 1.0, "oks_map50": 1.0},
                                "class1": {"oks_map": 0.0, "oks_map50": 0.0}}
    assert scores.metrics["oks_map"] == pytest.approx(0.5)
    single = score_predictions(make_gt([[square_keypoints()]]), [], SIGMAS, NAMES)
    assert single.per_class == {}
