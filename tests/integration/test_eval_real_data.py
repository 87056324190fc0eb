"""``fdpose eval``'s metric and report path on real COCO person annotations (MMPose's test fixture):
17 keypoints, COCO sigmas, crowded images, unlabelled keypoints, instances without keypoints."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import EvalParams
from pipeline.evaluate import prepare, write_outputs
from pipeline.formats.coco import read_coco
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import COCO_PERSON_SIGMAS

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "mmpose-testdata"


@pytest.fixture()
def coco_person_yolo(tmp_path) -> str:
    """MMPose's COCO fixture as a YOLO-pose dataset whose images are all in ``val``."""
    source = TESTDATA / "coco" / "test_coco.json"
    if not source.exists():
        message = f"real test data missing: {source}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    dataset = read_coco(source, TESTDATA / "coco")
    for image in dataset.images:
        image.split = "val"
    return str(write_yolo(dataset, tmp_path / "data"))


def test_real_annotations_fed_back_and_perturbed(coco_person_yolo, tmp_path):
    result = prepare(coco_person_yolo, tmp_path / "eval", EvalParams())
    assert result.sigmas == pytest.approx(COCO_PERSON_SIGMAS)  # COCO's person sigmas reach the evaluator
    assert result.counts["num_labelled_instances"] > 5

    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                "keypoints": a["keypoints"]} for a in result.gt["annotations"] if a["num_keypoints"] > 0]
    rng = np.random.default_rng(5)
    noisy = []
    for prediction in perfect:
        keypoints = np.asarray(prediction["keypoints"], dtype=np.float64).reshape(-1, 3)
        scale = np.sqrt(prediction["bbox"][2] * prediction["bbox"][3]) * rng.uniform(0.005, 0.06)
        keypoints[:, :2] += rng.normal(0, scale, (len(keypoints), 2))
        noisy.append(dict(prediction, keypoints=keypoints.reshape(-1).tolist(), score=float(rng.uniform())))
    for label, predictions in (("model", perfect), ("baseline", noisy)):
        weights = tmp_path / f"{label}.pt"
        weights.write_bytes(label.encode())  # fingerprinted only: these predictions come from no model
        result.add_model(label, weights, predictions)
    write_outputs(result)

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # Instances without labelled keypoints are ignored by the keypoint protocol (and not fed back).
    assert metrics["oks_map"] == pytest.approx(1.0) and metrics["oks_ar"] == pytest.approx(1.0)
    assert 0.1 < metrics["baseline"]["oks_map"] < 0.95

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "eval" / "ground_truth.json"))
        baseline = coco_gt.loadRes(str(tmp_path / "eval" / "baseline" / "predictions.json"))
        evaluator = COCOeval(coco_gt, baseline, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(metrics["sigmas"])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = ["oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large",
             "oks_ar", "oks_ar50", "oks_ar75", "oks_ar_medium", "oks_ar_large"]
    ours = [metrics["baseline"][n] if metrics["baseline"][n] is not None else -1.0 for n in names]
    np.testing.assert_allclose(ours, evaluator.stats, atol=1e-6)
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "left_shoulder" in markdown and f"{metrics['baseline']['oks_map']:.4f}" in markdown
