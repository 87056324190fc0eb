"""One annotation's regions -> hub instances: labels checked, percentages mapped to hub pixels through
the image's frame, keypoints joined to their rectangle, boxes clipped (rules in
:mod:`pipeline.labelstudio.reader`: "Instances", "Coordinates", "Orientation", "Visibility")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.dataset import Instance, Report
from pipeline.errors import FdposeError
from pipeline.images import image_info
from pipeline.labelstudio.geometry import Frame, inside, rectangle_corners, same_aspect
from pipeline.labelstudio.results import Region, number
from pipeline.skeleton import Skeleton

KEYPOINT_BOX_MARGIN = 0.1  # of the keypoints' extent, each side, for instances without a rectangle
MIN_BOX_MARGIN = 0.01  # of the image's longer side, so a single keypoint still gets a box
# Percentages are floats: a point a hair outside the image is rounding, not a labelling error.
OUTSIDE_TOLERANCE_PX = 1e-3
BOX_OUTSIDE_TOLERANCE_PX = 0.5

Placed = tuple[Region, int, np.ndarray]  # a region, its class or keypoint index, its pixels


class InstanceBuilder:
    """Builds the instances of one export's annotations, listing what it skips or repairs in ``report``."""

    def __init__(self, source: str, report: Report, aliases: dict[str, str], strict: bool):
        self.source = source
        self.report = report
        self.aliases = aliases
        self.strict = strict
        self.unknown_choices: set[str] = set()  # per-region choices seen without an occlusion_choice
        self._noted: set[tuple[str, str]] = set()

    def _label(self, region: Region, where: str) -> str | None:
        labels = [self.aliases.get(label, label) for label in region.labels]
        if len(labels) != 1:
            reason = "region without a label" if not labels else f"region with several labels {labels}"
            self.report.skip(self.source, f"{where} region {region.id}", reason)
            return None
        return labels[0]

    def _numbers(self, region: Region, keys: Sequence[str], where: str) -> list[float] | None:
        values = []
        for key in keys:
            values.append(number(region.value.get(key, 0.0 if key == "rotation" else None)))
        if not all(math.isfinite(v) for v in values):
            bad = {k: region.value.get(k) for k, v in zip(keys, values, strict=True) if not math.isfinite(v)}
            message = f"missing, NaN or infinite coordinate {bad}"
            if self.strict:
                raise FdposeError(message, path=self.source, item=f"{where} region {region.id}")
            self.report.skip(self.source, f"{where} region {region.id}", message)
            return None
        return values

    def _frame(self, region: Region, path: Path, width: int, height: int, where: str) -> Frame | None:
        oriented = Frame(width, height, "oriented", width, height)
        if region.original_size is None:
            return oriented
        exported = region.original_size
        rotation = int(round(region.image_rotation)) % 360
        proportional = exported != (height, width) and same_aspect(exported, (width, height))
        if exported == (width, height) or proportional:
            if exported != (width, height):
                self._note_once(where, f"export says {exported[0]:g}x{exported[1]:g} but the image is "
                                       f"{width}x{height}; percentages applied to the image's size")
            return oriented
        if rotation in (90, 270) and width != height and same_aspect(exported, (height, width)):
            # Label Studio before the canvas rotation rewrote coordinates into the rotated view.
            return Frame(height, width, "view-rotated", width, height, rotation=rotation)
        orientation = image_info(path).orientation
        if orientation in (5, 6, 7, 8) and same_aspect(exported, (height, width)):
            self._note_once(where, f"labelled on the image without its EXIF orientation {orientation}; "
                                   "points mapped through it")
            return Frame(height, width, "raw-exif", width, height, orientation=orientation)
        self.report.skip(self.source, where, f"export says the image is {exported[0]:g}x{exported[1]:g} but "
                                             f"{path.name} is {width}x{height} (another image?)")
        return None

    def _note_once(self, where: str, message: str) -> None:
        if message and (where, message) not in self._noted:
            self._noted.add((where, message))
            self.report.repair(self.source, where, message)

    def _clip_point(self, x: float, y: float, width: int, height: int, where: str) -> tuple[float, float]:
        outside = max(-x, x - width, -y, y - height)
        if outside > OUTSIDE_TOLERANCE_PX:
            message = f"keypoint ({x:.2f}, {y:.2f}) outside the {width}x{height} image"
            if self.strict:
                raise FdposeError(message, path=self.source, item=where)
            self.report.repair(self.source, where, f"{message} (clipped)")
        return min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))

    def instances(self, regions: list[Region], path: Path, width: int, height: int,
                   skeleton: Skeleton, where: str) -> list[Instance] | None:
        """The instances of one annotation's regions; None when its frame rules the task out."""
        placed = self._place(regions, path, width, height, skeleton, where)
        if placed is None:
            return None
        rectangles, points = placed
        members, free = self._assign(rectangles, points, where)
        return self._build(rectangles, members, free, width, height, skeleton, where)

    def _place(self, regions: list[Region], path: Path, width: int, height: int, skeleton: Skeleton,
               where: str) -> tuple[list[Placed], list[Placed]] | None:
        """Rectangles (their corners) and keypoints (their point) in hub pixels, with their class or
        keypoint index; unknown labels and bad numbers skipped."""
        rectangles: list[Placed] = []
        points: list[Placed] = []
        for region in regions:
            label = self._label(region, where)
            if label is None:
                continue
            frame = self._frame(region, path, width, height, where)
            if frame is None:
                return None
            item = f"{where} region {region.id}"
            if region.kind == "rectangle":
                if label not in skeleton.class_names:
                    self.report.skip(self.source, item, f"unknown rectangle label {label!r}")
                    continue
                numbers = self._numbers(region, ("x", "y", "width", "height", "rotation"), where)
                if numbers is None:
                    continue
                u, v = frame.to_pixels(np.array([numbers[0]]), np.array([numbers[1]]))
                corners = rectangle_corners(0.0, 0.0, numbers[2] / 100 * frame.source_w,
                                             numbers[3] / 100 * frame.source_h, numbers[4])
                # Corners are built in the source frame (where the rotation angle lives), then mapped.
                su = numbers[0] / 100 * frame.source_w + corners[:, 0]
                sv = numbers[1] / 100 * frame.source_h + corners[:, 1]
                x, y = frame.map(su, sv)
                rectangles.append((region, skeleton.class_names.index(label), np.stack([x, y], axis=1)))
            else:
                if label not in skeleton.keypoint_names:
                    self.report.skip(self.source, item, f"unknown keypoint label {label!r}")
                    continue
                numbers = self._numbers(region, ("x", "y"), where)
                if numbers is None:
                    continue
                x, y = frame.to_pixels(np.array([numbers[0]]), np.array([numbers[1]]))
                x, y = self._clip_point(float(x[0]), float(y[0]), width, height, item)
                points.append((region, skeleton.keypoint_names.index(label), np.array([x, y])))
        return rectangles, points

    def _assign(self, rectangles: list[Placed], points: list[Placed], where: str
                ) -> tuple[list[list[Placed]], list[Placed]]:
        """Each keypoint's rectangle: its parent, else the one rectangle containing it; the keypoints
        of an annotation without rectangles are returned as ``free``."""
        by_id = {region.id: i for i, (region, _, _) in enumerate(rectangles)}
        members: list[list[Placed]] = [[] for _ in rectangles]
        free: list[Placed] = []
        for point in points:
            region, _, xy = point
            item = f"{where} region {region.id}"
            if region.parent_id is not None and region.parent_id in by_id:
                members[by_id[region.parent_id]].append(point)
                continue
            if region.parent_id is not None:
                self.report.repair(self.source, item, f"parent {region.parent_id} not found; "
                                                      "assigned by containment")
            if not rectangles:
                free.append(point)
                continue
            containing = [i for i, (_, _, corners) in enumerate(rectangles) if inside(corners, xy)]
            if len(containing) == 1:
                members[containing[0]].append(point)
            elif containing:
                self.report.skip(self.source, item, f"keypoint without parent inside {len(containing)} "
                                                    "rectangles (ambiguous)")
            else:
                self.report.skip(self.source, item, "keypoint without parent outside every rectangle")
        return members, free

    def _build(self, rectangles: list[Placed], members: list[list[Placed]], free: list[Placed], width: int,
               height: int, skeleton: Skeleton, where: str) -> list[Instance]:
        """An instance per rectangle (box clipped to the image) and one for the free keypoints."""
        k = skeleton.num_keypoints
        instances = []
        for (region, class_id, corners), group in zip(rectangles, members, strict=True):
            item = f"{where} region {region.id}"
            box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
            clipped = np.clip(box, 0, [width, height, width, height])
            if np.abs(clipped - box).max() > BOX_OUTSIDE_TOLERANCE_PX:
                self.report.repair(self.source, item, "box outside the image (clipped)")
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self.report.skip(self.source, item, "empty box")
                continue
            instances.append(Instance(class_id, clipped, self._keypoints(group, k, skeleton, where),
                                      source=f"{where} region {region.id}"))
        if free:
            xy = np.stack([p for _, _, p in free])
            low, high = xy.min(axis=0), xy.max(axis=0)
            margin = np.maximum(KEYPOINT_BOX_MARGIN * (high - low), MIN_BOX_MARGIN * max(width, height))
            box = np.concatenate([np.maximum(low - margin, 0), np.minimum(high + margin, [width, height])])
            instances.append(Instance(0, box, self._keypoints(free, k, skeleton, where),
                                      source=f"{where} keypoints without rectangle"))
        return instances

    def _keypoints(self, group: list[Placed], k: int, skeleton: Skeleton,
                   where: str) -> np.ndarray:
        keypoints = np.zeros((k, 3))
        occluded = skeleton.occlusion_choice
        for region, index, xy in group:
            if keypoints[index, 2] > 0:
                self.report.skip(self.source, f"{where} region {region.id}",
                                 f"duplicate keypoint {skeleton.keypoint_names[index]!r} in one instance")
                continue
            if occluded is None:
                self.unknown_choices.update(region.choices)
            keypoints[index] = (xy[0], xy[1], 1 if occluded is not None and occluded in region.choices else 2)
        return keypoints
