"""A ground-truth-driven pose detector for the tracking and smoothing unit tests (never for quality figures
of a model): the clip's true keypoints with Gaussian noise; a blurred frame loses its detections'
confidence; a figure drawn wrongly (mirrored) is read with its left and right keypoints swapped, as a
model that trusts the colours would."""

from __future__ import annotations

import numpy as np

from pipeline.dataset import Instance
from pipeline.skeleton import COCO_PERSON_KEYPOINTS, infer_flip

FLIP = infer_flip(list(COCO_PERSON_KEYPOINTS)).permutation


def stub_detections(truth: dict, noise_px: float = 1.5, seed: int = 0) -> list[list[Instance]]:
    rng = np.random.default_rng(seed)
    corrupted = {c["frame"]: c["kind"] for c in truth["corrupted"]}
    width = truth["width"]
    frames = []
    for record in truth["frames"]:
        kind = corrupted.get(record["frame"])
        detections = []
        figures = record["figures"]
        if kind == "wrong":  # the figure nearest the centre is the mirrored one
            centre = [abs((f["box"][0] + f["box"][2]) / 2 - width / 2) for f in figures]
            mirrored = int(np.argmin(centre))
        for number, figure in enumerate(figures):
            kps = np.array(figure["keypoints"], float).reshape(-1, 3)
            points = kps[:, :2] + rng.normal(0, noise_px, (len(kps), 2))
            conf = np.where(
                kps[:, 2] == 2,
                rng.uniform(0.8, 0.99, len(kps)),
                np.where(kps[:, 2] == 1, rng.uniform(0.3, 0.7, len(kps)), rng.uniform(0, 0.1, len(kps))),
            )
            score = float(rng.uniform(0.8, 0.95))
            if kind == "blur":
                conf = conf * 0.3
                score *= 0.4
            if kind == "wrong" and number == mirrored:
                points, conf = points[FLIP], conf[FLIP]
            detections.append(
                Instance(0, np.array(figure["box"], float), np.column_stack([points, conf]), score=score)
            )
        frames.append(detections)
    return frames
