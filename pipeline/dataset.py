"""The in-memory hub every reader fills and every writer starts from.

Coordinates are pixels of the image as stored on disk (after EXIF orientation); normalisation
happens only at the YOLO edge. Keypoints are ``(K, 3)`` float64 arrays ``x, y, v`` with visibility
0 (not labelled; then ``x = y = 0``), 1 (labelled, occluded) or 2 (labelled, visible). Boxes are
``x0, y0, x1, y1`` in pixels. A model's prediction is an :class:`Instance` too, with a ``score``; its
keypoints' third column is then the model's keypoint confidence in [0, 1] (1.0 for a model without one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.skeleton import Skeleton

SPLITS = ("train", "val", "test")


@dataclass
class Instance:
    """One object: class, box and keypoints; labelled (``score`` None) or predicted (with a ``score``)."""

    class_id: int
    bbox: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (K, 3) x, y, v in pixels (v: keypoint confidence for a prediction)
    source: str = ""  # where it came from (annotation id, region id), for reports
    score: float | None = None  # a prediction's confidence; None for a label

    def __post_init__(self) -> None:
        self.bbox = np.asarray(self.bbox, dtype=np.float64).reshape(4)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 3)

    @classmethod
    def from_arrays(cls, class_id: int, bbox: np.ndarray, keypoints: np.ndarray,
                    source: str = "") -> Instance:
        """An instance from a ``(4,)`` and a ``(K, 3)`` float64 array the caller has already validated;
        skips ``__post_init__``'s conversions, which dominate when a reader builds 100,000 of them."""
        instance = cls.__new__(cls)
        instance.class_id, instance.bbox, instance.keypoints = class_id, bbox, keypoints
        instance.source, instance.score = source, None
        return instance

    @property
    def num_labelled(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


@dataclass
class ImageRecord:
    """One image: where it is, its true size, its instances and its split."""

    path: Path  # the image file on disk
    file_name: str  # relative POSIX name used in outputs; unique within a dataset
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    split: str | None = None
    image_id: Any = None


@dataclass
class ReportItem:
    """One skipped, repaired or noteworthy item, with its reason."""

    action: str  # "skipped", "repaired", "warning"
    file: str
    item: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "file": self.file, "item": self.item, "reason": self.reason}


@dataclass
class Report:
    """Everything a reader or writer skipped or changed: counted and listed, never silent."""

    items: list[ReportItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # What the reader read, in its own unit (COCO annotations, YOLO label lines, Label Studio tasks),
    # and how many of those were skipped: {"unit", "read", "skipped"} (and "converted" for tasks).
    tally: dict[str, Any] = field(default_factory=dict)

    def count_read(self, unit: str, read: int) -> None:
        self.tally = {"unit": unit, "read": int(read), "skipped": 0}

    def skip(self, file: object, item: object, reason: str, *, units: int = 0) -> None:
        """Record a skipped item; ``units`` of the reader's unit (see :attr:`tally`) go with it."""
        self.items.append(ReportItem("skipped", str(file), str(item), reason))
        if units:
            self.count_skipped(units)

    def count_skipped(self, units: int) -> None:
        if self.tally:
            self.tally["skipped"] += int(units)

    def skip_instances(self, file: object, item: object, reason: str, instances: int) -> None:
        """Record a skipped instance or image (with ``instances`` instances) after reading: counted in
        the tally when its unit is one per instance; for Label Studio tasks an image is a task."""
        if self.tally.get("unit") == "tasks":
            self.tally["converted"] -= 1
            self.skip(file, item, reason, units=1)
        else:
            self.skip(file, item, reason, units=instances)

    def repair(self, file: object, item: object, reason: str) -> None:
        self.items.append(ReportItem("repaired", str(file), str(item), reason))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{i.action}: {i.reason.split(' (')[0]}" for i in self.items))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "counts": dict(sorted(self.counts().items())),
            "items": [i.to_dict() for i in self.items],
            "warnings": list(self.warnings),
        }
        if self.tally:
            out["tally"] = dict(self.tally)
        return out


@dataclass
class Dataset:
    """A skeleton, the images with their instances, and the report of what was skipped or repaired."""

    skeleton: Skeleton
    images: list[ImageRecord] = field(default_factory=list)
    report: Report = field(default_factory=Report)

    def splits(self) -> dict[str, list[ImageRecord]]:
        out: dict[str, list[ImageRecord]] = {}
        for image in self.images:
            out.setdefault(image.split or "train", []).append(image)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for reports: images and instances per split, keypoints per visibility."""
        per_split = {}
        for split, images in sorted(self.splits().items()):
            per_split[split] = {
                "images": len(images),
                "instances": sum(len(im.instances) for im in images),
            }
        flags = [inst.keypoints[:, 2] for im in self.images for inst in im.instances]
        values = np.rint(np.concatenate(flags)).astype(np.int64) if flags else np.zeros(0, dtype=np.int64)
        visibility = Counter(dict(enumerate(np.bincount(np.clip(values, 0, 2), minlength=3).tolist())))
        return {
            "images": len(self.images),
            "instances": sum(len(im.instances) for im in self.images),
            "splits": per_split,
            "keypoints_by_visibility": {str(v): visibility.get(v, 0) for v in (0, 1, 2)},
            "kpt_shape": self.skeleton.kpt_shape,
        }
