"""Cross-checks that only mean something on a model that has learned (learning.py's trained stock model,
and the same model after one epoch as the deliberately worse one): fdpose eval's OKS mAP is pycocotools'
on the files it wrote, and serve's retraining rule keeps the better model and refuses the worse."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from learning import STOCK, TRAINING
from test_learning import MAP50_BAR

pytestmark = pytest.mark.slow

# |fdpose eval's OKS mAP50 - ultralytics' pose mAP50| on the trained stock model: 0.026, 0.041, 0.004 over
# seeds 0, 1, 2 (calibration in test_learning.py).
ULTRALYTICS_AGREEMENT = 0.1


def test_eval_is_pycocotools_on_its_own_files(learned):
    trained = learned.get(STOCK)
    metrics = json.loads((trained.eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["oks_map50"] >= MAP50_BAR  # not a 0-against-0 agreement
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(trained.eval_dir / "ground_truth.json"))
        predictions = coco_gt.loadRes(str(trained.eval_dir / "predictions.json"))
        evaluator = COCOeval(coco_gt, predictions, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(metrics["sigmas"])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert metrics["oks_map"] == pytest.approx(evaluator.stats[0], abs=1e-6)
    assert metrics["oks_map50"] == pytest.approx(evaluator.stats[1], abs=1e-6)
    assert metrics["oks_map75"] == pytest.approx(evaluator.stats[2], abs=1e-6)
    # ultralytics' own validation of the same weights on the same images (its matching and AP interpolation,
    # run by fdpose eval as a cross-check) lands close by.
    assert abs(metrics["oks_map50"] - metrics["ultralytics"]["pose_map50"]) <= ULTRALYTICS_AGREEMENT


def test_serve_keeps_the_better_model_and_refuses_the_worse(learned, tmp_path):
    """Serve's rule (pipeline.serve.job.decide) on the figures its retraining job gets from one evaluation
    with the served model as the baseline."""
    from pipeline.config import EvalParams, overridden
    from pipeline.evaluate import evaluate
    from pipeline.serve.job import COMPARED, decide

    good, worse = learned.get(STOCK), learned.get(STOCK, epochs=1)
    for new, old, status in ((good, worse, "accepted"), (worse, good, "rejected")):
        metrics = evaluate(new.weights, learned.set.data, tmp_path / status,
                           overridden(EvalParams(), imgsz=TRAINING["imgsz"]), baseline=old.weights).metrics()
        numbers = [{key: figures[key] for key in COMPARED} for figures in (metrics, metrics["baseline"])]
        assert abs(numbers[0]["oks_map"] - numbers[1]["oks_map"]) >= 0.2  # a real difference to judge
        decision = decide(*numbers, metrics["split"], metrics["num_images"])
        assert decision["status"] == status, decision
        assert f"served {numbers[1]['oks_map']}" in decision["reason"]
