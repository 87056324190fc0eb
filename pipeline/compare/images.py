"""Evaluation noise: the part of a paired difference that is the luck of which val images were drawn.

The seeds' t interval (:mod:`pipeline.stats`) measures how much the difference moves from training
run to training run, on one fixed val split. How much it would move on another split of the same
size is a separate question: a paired bootstrap over the images answers it. Each resample draws the
split's images with replacement (from a generator seeded with ``seed``; the same draws for every seed
and both models), builds the COCO ground truth and both models' predictions on the drawn images (an
image drawn twice appears twice, under new ids) and scores both with the eval stage's COCO keypoint
protocol (faster-coco-eval's COCOeval with the dataset's OKS sigmas, as :mod:`pipeline.metrics` runs
it; only OKS mAP, the verdict's metric, and only the top 20 detections per image, all that COCO's
keypoint protocol reads, to keep a thousand evaluations affordable). Per seed the resampled
differences give that run pair's test-set uncertainty; averaged over the seeds at each resample,
that of the mean difference the verdict is about. A larger val split makes it smaller.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.metrics import KEYPOINT_MAX_DETS
from pipeline.stats import mean_std


@dataclass
class ImageNoise:
    """The image bootstrap of one metric's paired differences."""

    metric: str
    images: int  # in the val split
    resamples: int
    seed: int
    per_seed: dict[int, dict[str, float]]  # seed -> difference on the split, bootstrap sd, 95% interval
    mean_sd: float  # bootstrap sd of the mean difference over seeds
    mean_low: float  # its 95% percentile interval
    mean_high: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_seed": {str(k): v for k, v in self.per_seed.items()}}

    def note(self) -> str:
        return (f"Evaluation noise ({self.metric}, paired bootstrap over the {self.images} val images, "
                f"{self.resamples} resamples, seed {self.seed}): the mean difference would move by sd "
                f"{self.mean_sd:.4f} on another val split of this size (95% of resamples within "
                f"[{self.mean_low:+.4f}, {self.mean_high:+.4f}]); per seed in the runs table.")


def resample(gt: dict, predictions: list[dict], image_ids: list[int]) -> tuple[dict, list[dict]]:
    """The ground truth and predictions of the images ``image_ids`` (repeats allowed), renumbered so
    that every drawn image is an image of its own."""
    annotations, detections = defaultdict(list), defaultdict(list)
    for ann in gt["annotations"]:
        annotations[ann["image_id"]].append(ann)
    for det in predictions:
        detections[det["image_id"]].append(det)
    images = {image["id"]: image for image in gt["images"]}
    new_gt = {key: value for key, value in gt.items() if key not in ("images", "annotations")}
    new_gt["images"], new_gt["annotations"] = [], []
    new_predictions: list[dict] = []
    for new_id, old_id in enumerate(image_ids, start=1):
        new_gt["images"].append({**images[old_id], "id": new_id})
        for ann in annotations[old_id]:
            new_gt["annotations"].append({**ann, "id": len(new_gt["annotations"]) + 1, "image_id": new_id})
        new_predictions += [{**det, "image_id": new_id} for det in detections[old_id]]
    return new_gt, new_predictions


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """COCOeval prints its tables through this."""


def oks_map(gt: dict, predictions: list[dict], sigmas: list[float]) -> float:
    """OKS mAP@[.50:.95] of ``predictions`` on ``gt`` by the COCO keypoint protocol (the eval stage's
    ``oks_map``); 0.0 without a detection. Annotates the dicts it is given (COCO does)."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not predictions:
        return 0.0
    coco_gt = COCO(gt)
    coco_gt.print_function = _quiet
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(predictions), "keypoints", kpt_oks_sigmas=sigmas,
                                print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return max(float(evaluator.stats[0]), 0.0)


def top_detections(predictions: list[dict], keep: int = KEYPOINT_MAX_DETS) -> list[dict]:
    """Each image's ``keep`` highest-scoring detections: all COCO's keypoint protocol reads."""
    by_image = defaultdict(list)
    for det in predictions:
        by_image[det["image_id"]].append(det)
    return [det for dets in by_image.values() for det in sorted(dets, key=lambda d: -d["score"])[:keep]]


def image_bootstrap(gt: dict, pairs: dict[int, tuple[list[dict], list[dict]]], sigmas: list[float],
                    resamples: int = 200, seed: int = 0) -> ImageNoise:
    """Bootstrap over the images of ``gt`` of the OKS mAP difference A - B for every seed in ``pairs``
    (seed -> (predictions of A, predictions of B), COCO results on ``gt``)."""
    pairs = {s: (top_detections(a), top_detections(b)) for s, (a, b) in pairs.items()}
    ids = [image["id"] for image in gt["images"]]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(resamples, len(ids)))
    differences = np.zeros((resamples, len(pairs)))
    for r, draw in enumerate(draws):
        chosen = [ids[i] for i in draw]
        for column, (a, b) in enumerate(pairs.values()):
            gt_r, a_r = resample(gt, a, chosen)
            _, b_r = resample(gt, b, chosen)
            differences[r, column] = oks_map(gt_r, a_r, sigmas) - oks_map(copy.deepcopy(gt_r), b_r, sigmas)
    per_seed = {}
    for column, (seed_, (a, b)) in enumerate(pairs.items()):
        low, high = np.quantile(differences[:, column], [0.025, 0.975])
        observed = oks_map(copy.deepcopy(gt), copy.deepcopy(a), sigmas) \
            - oks_map(copy.deepcopy(gt), copy.deepcopy(b), sigmas)
        per_seed[seed_] = {"difference": observed, "sd": float(mean_std(differences[:, column])[1]),
                           "ci_low": float(low), "ci_high": float(high)}
    means = differences.mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return ImageNoise("oks_map", len(ids), resamples, seed, per_seed, float(np.std(means, ddof=1)),
                      float(low), float(high))


def run_predictions(eval_dir: Path) -> tuple[dict, list[dict]]:
    """The ground truth and predictions an eval stage wrote into ``eval_dir``."""
    gt = json.loads((eval_dir / "ground_truth.json").read_text(encoding="utf-8"))
    return gt, json.loads((eval_dir / "predictions.json").read_text(encoding="utf-8"))
