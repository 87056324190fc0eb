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

from pipeline.errors import FdposeError, printable
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


def _class_in_range(class_id: object, num_classes: int) -> bool:
    return isinstance(class_id, (int, np.integer)) and not isinstance(class_id, bool) \
        and 0 <= class_id < num_classes


def instance_problem(instance: Instance, width: int, height: int, num_classes: int,
                     num_keypoints: int) -> str | None:
    """Why ``instance`` breaks the hub's invariant in an image ``width`` x ``height``, or None.

    Every writer may rely on it: class in range, ``(K, 3)`` keypoints, finite numbers, visibility in
    {0, 1, 2}, and a box that keeps a positive size once clipped to the image."""
    if not _class_in_range(instance.class_id, num_classes):
        return f"class id {printable(instance.class_id)[:40]} out of range ({num_classes} classes)"
    if instance.keypoints.shape != (num_keypoints, 3):
        return f"keypoints of shape {instance.keypoints.shape}, expected ({num_keypoints}, 3)"
    box = instance.bbox
    if box.shape != (4,) or not np.isfinite(box).all():
        return "box not finite"
    points = instance.keypoints
    if not np.isfinite(points).all():
        return "keypoint not finite"
    if not np.isin(points[:, 2], (0.0, 1.0, 2.0)).all():
        return "keypoint visibility not 0, 1 or 2"
    x0, x1 = np.clip(box[[0, 2]], 0, width)
    y0, y1 = np.clip(box[[1, 3]], 0, height)
    if not (x1 > x0 and y1 > y0):
        return "box of zero size inside the image (after clipping)"
    return None


def _valid_mask(pairs: list[tuple[ImageRecord, Instance]]) -> np.ndarray:
    """Which (image, instance) pairs pass :func:`instance_problem`'s numeric checks, for all at once
    (a per-instance check would cost seconds on 100,000 instances); the caller checks shapes and classes."""
    if not pairs:
        return np.zeros(0, dtype=bool)
    boxes = np.stack([instance.bbox for _, instance in pairs])
    points = np.stack([instance.keypoints for _, instance in pairs])
    sizes = np.array([(image.width, image.height) for image, _ in pairs], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(points).all(axis=(1, 2))
        ok &= np.isin(points[:, :, 2], (0.0, 1.0, 2.0)).all(axis=1)
        x = np.clip(boxes[:, [0, 2]], 0, sizes[:, :1])
        y = np.clip(boxes[:, [1, 3]], 0, sizes[:, 1:])
        ok &= (x[:, 1] > x[:, 0]) & (y[:, 1] > y[:, 0])
    return ok


def enforce_invariant(dataset: Dataset, source: object, *, strict: bool) -> None:
    """Hold every image and instance to the hub's invariant (:func:`instance_problem`) where a reader
    hands over: a reader's miss is then one error naming ``source`` and the item under ``strict``, else
    a skip counted in the report (the instance goes; its image stays), never a writer's traceback."""
    num_classes, num_keypoints = len(dataset.skeleton.class_names), dataset.skeleton.num_keypoints
    kept_images, pairs = [], []
    for image in dataset.images:
        if 0 < image.width < 2**31 and 0 < image.height < 2**31:
            kept_images.append(image)
            pairs.extend((image, instance) for instance in image.instances)
            continue
        reason = f"image size {image.width}x{image.height} not positive"
        if strict:
            raise FdposeError(reason, path=source, item=image.file_name)
        dataset.report.skip_instances(source, image.file_name, reason, len(image.instances))
    dataset.images = kept_images
    # Shapes and classes are cheap to check one by one; the numbers are checked all at once.
    shaped = [(image, instance) for image, instance in pairs
              if instance.keypoints.shape == (num_keypoints, 3) and instance.bbox.shape == (4,)
              and _class_in_range(instance.class_id, num_classes)]
    valid = {id(instance) for (_, instance), ok in zip(shaped, _valid_mask(shaped), strict=True) if ok}
    if len(valid) == len(pairs):
        return
    # Label Studio counts tasks: a task whose instance goes still converts (as in --drop-unlabelled).
    units = 0 if dataset.report.tally.get("unit") == "tasks" else 1
    for image in {id(image): image for image, instance in pairs if id(instance) not in valid}.values():
        kept = []
        for instance in image.instances:
            reason = None if id(instance) in valid else instance_problem(
                instance, image.width, image.height, num_classes, num_keypoints)
            if reason is None:
                kept.append(instance)
            elif strict:
                raise FdposeError(reason, path=source, item=instance.source or image.file_name)
            else:
                dataset.report.skip(source, instance.source or image.file_name, reason, units=units)
        image.instances = kept
