"""Predictions as COCO results, the file pycocotools' ``loadRes`` reads: one writer and one rounding.

``fdpose eval`` (``predictions.json`` beside ``ground_truth.json``) and ``fdpose predict`` write their
predictions through :func:`coco_result`, so the same model on the same image gives the same lines in both.
A result is ``image_id``, ``category_id`` (``class_id + 1``, as :func:`pipeline.formats.coco.dataset_to_coco`
numbers categories), ``bbox`` as ``x, y, w, h`` pixels, ``score`` and ``keypoints`` as ``x, y,
confidence`` triples.
"""

from __future__ import annotations

from typing import Any

from pipeline.dataset import Instance
from pipeline.skeleton import Skeleton

# A thousandth of a pixel is far below any keypoint error that matters and keeps the files free of float
# noise, so they are stable across runs; scores and confidences keep six decimals (COCO ranks by score).
PIXEL_DECIMALS = 3
SCORE_DECIMALS = 6


def coco_result(instance: Instance, image_id: int) -> dict[str, Any]:
    """One predicted instance (with a ``score``) as a COCO result on image ``image_id``."""
    if instance.score is None:
        raise ValueError("a COCO result is a prediction: the instance has no score")
    x0, y0, x1, y1 = (float(v) for v in instance.bbox)
    keypoints = [round(float(v), PIXEL_DECIMALS if i % 3 < 2 else SCORE_DECIMALS)
                 for i, v in enumerate(instance.keypoints.reshape(-1))]
    return {
        "image_id": int(image_id),
        "category_id": int(instance.class_id) + 1,
        "bbox": [round(v, PIXEL_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)],
        "score": round(float(instance.score), SCORE_DECIMALS),
        "keypoints": keypoints,
    }


def coco_categories(skeleton: Skeleton) -> list[dict[str, Any]]:
    """COCO keypoint categories of a model's classes (1-based ids and skeleton, as COCO writes them)."""
    return [{"id": i + 1, "name": name, "keypoints": list(skeleton.keypoint_names),
             "skeleton": [[a + 1, b + 1] for a, b in skeleton.edges]}
            for i, name in enumerate(skeleton.class_names)]
