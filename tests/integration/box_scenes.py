"""A tiny generated YOLO-pose dataset for the tests that train: one bright box per image on a dark
background, five keypoints at its top centre and corners (shared by the package and eval tests)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import Skeleton

KEYPOINTS = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
EDGES = [(0, 1), (0, 2), (0, 3), (0, 4)]


def make_dataset(root: Path, count: int = 8, size: int = 64, val: int = 2,
                 sigmas: list[float] | None = None) -> Path:
    """``count`` square images of ``size`` pixels, the last ``val`` in the val split; returns data.yaml.
    ``sigmas``: the OKS sigmas (default: the skeleton's placeholders)."""
    rng = np.random.default_rng(0)
    skeleton = Skeleton(keypoint_names=KEYPOINTS, class_names=["person"], edges=EDGES, sigmas=sigmas)
    originals = root / "originals"
    originals.mkdir(parents=True)
    records = []
    for index in range(count):
        image = np.full((size, size, 3), 40, np.uint8)
        x0, y0 = (int(v) for v in rng.integers(4, size // 2, 2))
        w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), (200, 180, 60), -1)
        path = originals / f"img{index:03d}.png"
        cv2.imwrite(str(path), image)
        keypoints = np.array([[x0 + w / 2, y0, 2], [x0, y0 + h / 2, 2], [x0 + w, y0 + h / 2, 2],
                              [x0, y0 + h, 2], [x0 + w, y0 + h, 2]], float)
        instance = Instance(0, np.array([x0, y0, x0 + w, y0 + h], float), keypoints)
        records.append(ImageRecord(path=path, file_name=path.name, width=size, height=size,
                                   instances=[instance], split="train" if index < count - val else "val"))
    return write_yolo(Dataset(skeleton=skeleton, images=records), root / "data")
