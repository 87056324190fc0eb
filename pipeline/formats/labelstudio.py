"""The Label Studio edge of the hub: JSON exports (a file or a live server) in, predictions out.

Reading (:func:`read_labelstudio_export`, :func:`read_labelstudio_live`)
-------------------------------------------------------------------------
* **Instances.** ``keypointlabels`` regions join the ``rectanglelabels`` region their ``parentID``
  names. A keypoint without a parent (or whose parent is missing) joins the one rectangle that
  contains it (rotated rectangles tested as polygons); inside several or none it is skipped and
  reported. In an annotation with no rectangle at all, the keypoints form one instance of the first
  class whose box is their extent plus :data:`KEYPOINT_BOX_MARGIN` of that extent on each side (at
  least :data:`MIN_BOX_MARGIN` of the image's longer side), clipped to the image.
* **Keypoint order.** ``model_index`` on the ``<Label>`` tags of the label config (a file for an
  export, the project's for a live read); a config without ``model_index`` gives its labels' document
  order (with a warning). Else the skeleton file's order. With neither, names are ordered as they
  first appear in the export and a warning says so (it reaches ``report.json``). Config and skeleton
  together must agree on names and order. Class names are the ``RectangleLabels`` labels (config
  order; else the skeleton's ``classes``; else first appearance).
* **Coordinates** are percentages of ``original_width``/``original_height``, applied to the image
  file's own size, so a re-scaled copy of the image still lines up.
* **Orientation.** Hub pixels are those of the image as displayed after its EXIF orientation (what
  browsers, hence Label Studio, show). Three frames are told apart by the size a result records:
  (1) the EXIF-oriented size (or a proportional one): coordinates are used as they are. Label
  Studio (checked in 1.23) turns the canvas (``image_rotation``) without touching coordinates, so this holds
  for any ``image_rotation``; (2) the oriented size with width and height swapped while
  ``image_rotation`` is 90 or 270: older Label Studio rotated the regions with the view, so points
  are rotated back (clockwise angles, as Label Studio's canvas uses); (3) the raw, pre-EXIF size of a
  file whose EXIF orientation swaps the axes (5-8): the labeller's browser ignored EXIF, so points
  are mapped through the EXIF transform (reported as repaired). Any other size with another aspect
  ratio skips the task: the labels belong to a different image. Rectangles carry ``rotation``
  (degrees clockwise about their top-left corner, in pixels); their corners are mapped, and the
  hub box is the corners' axis-aligned extent.
* **Visibility** 2 for a labelled point; 1 when a per-region ``<Choices>`` on the point carries the
  skeleton's ``occlusion_choice``; 0 when the point is absent.
* **Annotations.** Cancelled ones are skipped and counted, as are tasks with no (usable) annotation
  or an empty result. ``annotation="latest"`` keeps the most recently updated annotation of a task,
  ``"ground-truth"`` the latest one marked ground truth, ``"all"`` every one (an image record per
  annotation, file names suffixed ``__ann<id>`` when a task has several), ``"predictions"`` the
  task's most recent model prediction instead of human annotations.
* **Bad input** (reported, the rest converts): unknown labels, NaN coordinates, keypoints outside
  the image (clipped; an :class:`FdposeError` with ``strict``), unresolvable images (see
  :mod:`pipeline.formats.ls_images`), duplicate images. Invalid JSON or a label config without
  keypoints is an :class:`FdposeError`.

Writing (:func:`upload_predictions`)
------------------------------------
``upload_predictions(url, project_id, images, *, model_version, skeleton, scores=None, report=None)``
uploads one Label Studio prediction (pre-annotation) per image through label-studio-sdk: a
``rectanglelabels`` region per instance and a ``keypointlabels`` region per labelled keypoint with
``parentID`` set to its rectangle, keypoints in ``model_index`` order, occluded points (v=1) marked
with the occlusion choice when the project has a per-region ``<Choices>`` offering it, and
``model_version``. Tasks are matched by image file name (with or without Label Studio's upload
prefix); images matching no task or several are reported and skipped. Returns the number of
predictions created. The API key comes from ``LABEL_STUDIO_API_KEY`` only. The regions themselves
come from :func:`instance_regions`, which also writes the demo data's export (``fdpose demo-data``).
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.dataset import Dataset, ImageRecord, Instance, Report
from pipeline.errors import FdposeError, printable
from pipeline.formats.ls_images import FolderImages, UnresolvedImage, parse_image_ref
from pipeline.images import image_info, image_size, orient_points
from pipeline.io import parse_json, read_json
from pipeline.skeleton import Skeleton

ANNOTATION_MODES = ("latest", "ground-truth", "all", "predictions")
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
EXPORT_TIMEOUT_S = 300.0
KEYPOINT_BOX_MARGIN = 0.1  # of the keypoints' extent, each side, for instances without a rectangle
MIN_BOX_MARGIN = 0.01  # of the image's longer side, so a single keypoint still gets a box
# Percentages are floats: a point a hair outside the image is rounding, not a labelling error.
OUTSIDE_TOLERANCE_PX = 1e-3
BOX_OUTSIDE_TOLERANCE_PX = 0.5
ASPECT_TOLERANCE = 0.01

_RECTANGLE_TYPES = ("rectanglelabels", "rectangle")
_KEYPOINT_TYPES = ("keypointlabels", "keypoint")


# --- label config ------------------------------------------------------------------------------


@dataclass
class LabelConfig:
    """What the reader and the uploader need from a project's label config."""

    keypoint_names: list[str]  # in model order
    class_names: list[str]
    image_name: str | None = None  # the <Image name=...> regions point at
    image_key: str | None = None  # the task data field holding the image reference
    keypoint_control: str | None = None
    rectangle_control: str | None = None
    choices_control: str | None = None  # a per-region <Choices>
    choice_values: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # label alias -> label value
    keypoint_indices: dict[str, int] = field(default_factory=dict)  # keypoint label -> model_index, if given
    warnings: list[str] = field(default_factory=list)


def _ordered_labels(control: ElementTree.Element, source: object
                    ) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Labels of a control in ``model_index`` order (else document order), their aliases, and each
    label's ``model_index`` (empty when the labels have none)."""
    labels = [child for child in control if child.tag.lower() == "label" and child.get("value") is not None]
    values = [label.get("value") for label in labels]
    aliases = {label.get("alias"): label.get("value") for label in labels if label.get("alias")}
    indices = [label.get("model_index") for label in labels]
    given = [i for i in indices if i is not None]
    if not given:
        return values, aliases, {}
    if len(given) != len(labels):
        missing = [v for v, i in zip(values, indices, strict=True) if i is None]
        raise FdposeError(f"model_index missing on labels {missing}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>")
    try:
        numbers = [int(i) for i in given]
    except ValueError:
        raise FdposeError(f"model_index must be integers, got {given}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>") from None
    if len(set(numbers)) != len(numbers):
        raise FdposeError(f"duplicate model_index in {dict(zip(values, numbers, strict=True))}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>")
    order = sorted(range(len(values)), key=lambda i: numbers[i])
    return [values[i] for i in order], aliases, dict(zip(values, numbers, strict=True))


def parse_label_config(text: str, source: object = "label config") -> LabelConfig:
    """Parse a Label Studio label config (XML)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise FdposeError(f"invalid label config XML ({error})", path=source) from None
    keypoint_names: list[str] = []
    class_names: list[str] = []
    config = LabelConfig(keypoint_names, class_names)
    keypoint_order_from_index = True
    for element in root.iter():
        tag = element.tag.lower()
        if tag == "image" and config.image_name is None:
            config.image_name = element.get("name")
            value = element.get("value", "")
            config.image_key = value[1:] if value.startswith("$") else None
        elif tag == "keypointlabels":
            names, aliases, indices = _ordered_labels(element, source)
            keypoint_order_from_index &= bool(indices)
            config.keypoint_indices.update(indices)
            keypoint_names.extend(n for n in names if n not in keypoint_names)
            config.aliases.update(aliases)
            config.keypoint_control = config.keypoint_control or element.get("name")
        elif tag == "rectanglelabels":
            names, aliases, _ = _ordered_labels(element, source)
            class_names.extend(n for n in names if n not in class_names)
            config.aliases.update(aliases)
            config.rectangle_control = config.rectangle_control or element.get("name")
        elif tag == "choices" and element.get("perRegion", element.get("perregion", "")).lower() == "true":
            if config.choices_control is None:
                config.choices_control = element.get("name")
                config.choice_values = [c.get("value") for c in element
                                        if c.tag.lower() == "choice" and c.get("value") is not None]
    if not keypoint_names:
        raise FdposeError("label config has no <KeyPointLabels> with <Label>s", path=source)
    if not keypoint_order_from_index:
        config.warnings.append(f"{source}: no model_index on the keypoint labels; keypoint order taken "
                               f"from the config's label order {keypoint_names}")
    return config


# --- geometry ----------------------------------------------------------------------------------


@dataclass
class _Frame:
    """How a result's percentages map to hub pixels for one image (see the module docstring)."""

    source_w: float  # the size of the frame the percentages refer to, in this file's pixels
    source_h: float
    mode: str  # "oriented", "view-rotated" or "raw-exif"
    width: int  # the hub (EXIF-oriented) size
    height: int
    rotation: int = 0
    orientation: int = 1

    def to_pixels(self, x_pct: np.ndarray, y_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.map(np.asarray(x_pct) / 100.0 * self.source_w, np.asarray(y_pct) / 100.0 * self.source_h)

    def map(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source-frame pixels -> hub pixels."""
        if self.mode == "view-rotated":
            # The view was the image turned clockwise by `rotation`; turn the points back.
            if self.rotation == 90:
                return v, self.height - u
            return self.width - v, u  # 270
        if self.mode == "raw-exif":
            xy = orient_points(np.stack([u, v], axis=-1), self.orientation, self.source_w, self.source_h)
            return xy[..., 0], xy[..., 1]
        return u, v


def _same_aspect(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= ASPECT_TOLERANCE * max(a[0] * b[1], a[1] * b[0])


def _rectangle_corners(u: float, v: float, w: float, h: float, degrees: float) -> np.ndarray:
    """Corners of a rectangle with top-left (u, v), size (w, h), turned ``degrees`` clockwise about
    its top-left corner (Label Studio's convention; y grows downwards), in pixels."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    along = np.array([w * cos, w * sin])
    down = np.array([-h * sin, h * cos])
    origin = np.array([u, v])
    return np.stack([origin, origin + along, origin + along + down, origin + down])


def _inside(polygon: np.ndarray, point: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Whether ``point`` lies in the convex ``polygon`` (corners in order, either winding)."""
    signs = []
    for i in range(len(polygon)):
        a, b = polygon[i], polygon[(i + 1) % len(polygon)]
        cross = (b[0] - a[0]) * (point[1] - a[1]) - (b[1] - a[1]) * (point[0] - a[0])
        length = math.hypot(b[0] - a[0], b[1] - a[1]) or 1.0
        signs.append(cross / length)
    return all(s >= -tolerance for s in signs) or all(s <= tolerance for s in signs)


# --- export parsing ----------------------------------------------------------------------------


@dataclass
class _Region:
    id: str
    kind: str  # "rectangle" or "keypoint"
    value: dict[str, Any]
    labels: list[str]
    parent_id: str | None
    original_size: tuple[float, float] | None
    image_rotation: float
    choices: set[str] = field(default_factory=set)


_Placed = tuple[_Region, int, np.ndarray]  # a region, its class or keypoint index, its pixels


def _number(value: Any, default: float = math.nan) -> float:
    """``value`` as a float; ``default`` for what is not a number (text, lists, ints too big)."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _texts(value: Any) -> list[str]:
    """A list of labels or choices as strings; anything but a list holds none."""
    return [str(v) for v in value] if isinstance(value, list) else []


def _timestamp(annotation: dict[str, Any]) -> tuple[float, Any]:
    """Sort key: last update (else creation) time, then id."""
    stamp = annotation.get("updated_at") or annotation.get("created_at") or ""
    try:
        seconds = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):  # not a time, or one outside the platform's range
        seconds = float("-inf")
    ident = annotation.get("id")
    return seconds, ident if isinstance(ident, (int, float)) else -1


class _Reader:
    """One pass over an export's tasks, filling a report as it goes."""

    def __init__(self, tasks: list[Any], source: str, images: Any, config: LabelConfig | None,
                 skeleton: Skeleton | None, annotation: str, strict: bool, progress: bool = False):
        if annotation not in ANNOTATION_MODES:
            raise FdposeError(f"annotation must be one of {', '.join(ANNOTATION_MODES)}, got {annotation!r}")
        self.tasks = tasks
        self.source = source
        self.images = images
        self.config = config
        self.skeleton = skeleton
        self.mode = annotation
        self.strict = strict
        self.progress = progress
        self.report = Report()
        self.aliases = dict(config.aliases) if config else {}
        self._unknown_choices: set[str] = set()
        self._ignored_types: dict[str, int] = {}

    # -- selection --------------------------------------------------------------------------------

    def _select(self, task: dict[str, Any], where: str) -> list[tuple[str, list[Any]]]:
        """The ``(label, result)`` pairs of a task that count under the annotation mode."""
        if self.mode == "predictions":
            listed = task.get("predictions") or []
            predictions = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
            if not predictions:
                reason = ("export lists prediction ids only (Label Studio's quick export); read the "
                          "project live, or export a snapshot with full predictions") if listed else \
                    "empty task (no prediction)"
                self.report.skip(self.source, where, reason)
                return []
            latest = max(predictions, key=_timestamp)
            return [(f"prediction {printable(latest.get('id'))}", latest.get("result") or [])]
        annotations = task.get("annotations")
        if annotations is None:
            annotations = task.get("completions") or []  # exports of Label Studio < 1.0
        if not isinstance(annotations, list):
            self.report.skip(self.source, where, f"annotations is not a list ({type(annotations).__name__})")
            return []
        annotations = [a for a in annotations if isinstance(a, dict)]
        usable = []
        for item in annotations:
            if item.get("was_cancelled"):
                self.report.skip(self.source, f"{where} annotation {printable(item.get('id'))}",
                                 "cancelled annotation")
            else:
                usable.append(item)
        if self.mode == "ground-truth":
            if usable and not any(a.get("ground_truth") for a in usable):
                self.report.skip(self.source, where, "no ground-truth annotation")
                return []
            usable = [a for a in usable if a.get("ground_truth")]
        if not usable:
            if not annotations:
                self.report.skip(self.source, where, "empty task (no annotation)")
            return []
        if self.mode == "all":
            chosen = sorted(usable, key=lambda a: (str(a.get("id")),))
        else:
            chosen = [max(usable, key=_timestamp)]
            if len(usable) > 1:
                self._superseded += len(usable) - 1
        selected = []
        for item in chosen:
            label = f"annotation {printable(item.get('id'))}"
            if not item.get("result"):
                self.report.skip(self.source, f"{where} {label}", "empty annotation (no regions)")
                continue
            selected.append((label, item["result"]))
        return selected

    # -- regions ----------------------------------------------------------------------------------

    def _regions(self, result: Any, where: str) -> list[_Region]:
        """Group a result list by region id: geometry, labels and per-region choices merged."""
        if not isinstance(result, list):
            self.report.skip(self.source, where, "result is not a list")
            return []
        regions: dict[str, _Region] = {}
        extras: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for item in result:
            if not isinstance(item, dict):
                continue
            kind = str(item.get("type", "")).lower()
            value = item.get("value") if isinstance(item.get("value"), dict) else {}
            region_id = printable(item.get("id", ""))  # as in report lines; parentIDs alike
            if kind in _RECTANGLE_TYPES or kind in _KEYPOINT_TYPES:
                if region_id in regions:
                    self.report.skip(self.source, f"{where} region {region_id}", "duplicate region id")
                    continue
                size = None
                if item.get("original_width") is not None and item.get("original_height") is not None:
                    size = (_number(item["original_width"]), _number(item["original_height"]))
                    size = size if all(math.isfinite(v) for v in size) else None
                rotation = _number(item.get("image_rotation"), 0.0)
                regions[region_id] = _Region(
                    id=region_id,
                    kind="rectangle" if kind in _RECTANGLE_TYPES else "keypoint",
                    value=value,
                    labels=_texts(value.get(kind)) if kind.endswith("labels") else [],
                    parent_id=printable(item["parentID"]) if item.get("parentID") else None,
                    original_size=size,
                    image_rotation=rotation if math.isfinite(rotation) else 0.0,
                )
            elif kind in ("choices", "labels"):
                extras.setdefault(region_id, []).append((kind, value))
            else:
                self._ignored_types[kind or "?"] = self._ignored_types.get(kind or "?", 0) + 1
        for region_id, items in extras.items():
            region = regions.get(region_id)
            if region is None:
                continue  # a whole-image choice or labels without geometry: not ours
            for kind, value in items:
                if kind == "choices":
                    region.choices.update(_texts(value.get("choices")))
                elif not region.labels:
                    region.labels = _texts(value.get("labels"))
        return list(regions.values())

    def _label(self, region: _Region, where: str) -> str | None:
        labels = [self.aliases.get(label, label) for label in region.labels]
        if len(labels) != 1:
            reason = "region without a label" if not labels else f"region with several labels {labels}"
            self.report.skip(self.source, f"{where} region {region.id}", reason)
            return None
        return labels[0]

    def _numbers(self, region: _Region, keys: Sequence[str], where: str) -> list[float] | None:
        values = []
        for key in keys:
            values.append(_number(region.value.get(key, 0.0 if key == "rotation" else None)))
        if not all(math.isfinite(v) for v in values):
            bad = {k: region.value.get(k) for k, v in zip(keys, values, strict=True) if not math.isfinite(v)}
            message = f"missing, NaN or infinite coordinate {bad}"
            if self.strict:
                raise FdposeError(message, path=self.source, item=f"{where} region {region.id}")
            self.report.skip(self.source, f"{where} region {region.id}", message)
            return None
        return values

    # -- first pass: names ------------------------------------------------------------------------

    def _names_in_order(self) -> tuple[list[str], list[str]]:
        """Keypoint and rectangle labels in order of first appearance (counted annotations only)."""
        keypoints: dict[str, None] = {}
        classes: dict[str, None] = {}
        probe = Report()
        real_report, self.report = self.report, probe
        try:
            for index, task in enumerate(self.tasks):
                if not isinstance(task, dict):
                    continue
                for label, result in self._select(task, f"task {printable(task.get('id', index))}"):
                    for region in self._regions(result, label):
                        for name in region.labels:
                            name = self.aliases.get(name, name)
                            (keypoints if region.kind == "keypoint" else classes).setdefault(name, None)
        finally:
            self.report = real_report
        return list(keypoints), list(classes)

    def _layout(self) -> Skeleton:
        """The skeleton: keypoint order and class names (module docstring, "Keypoint order")."""
        seen_keypoints, seen_classes = ([], [])
        if self.config is None or self.skeleton is None:
            seen_keypoints, seen_classes = self._names_in_order()
        skeleton = self.skeleton
        config = self.config
        if config is not None:
            self.report.warnings.extend(config.warnings)
            if skeleton is not None:
                if set(skeleton.keypoint_names) != set(config.keypoint_names):
                    raise FdposeError(
                        f"skeleton keypoints {skeleton.keypoint_names} differ from the label config's "
                        f"{config.keypoint_names}", path=self.source)
                if skeleton.keypoint_names != config.keypoint_names:
                    raise FdposeError(
                        f"skeleton keypoint order {skeleton.keypoint_names} disagrees with the label "
                        f"config's model_index order {config.keypoint_names}", path=self.source)
                classes = config.class_names or skeleton.class_names
                if (config.class_names and skeleton.class_names != ["object"]
                        and skeleton.class_names != config.class_names):
                    raise FdposeError(f"skeleton classes {skeleton.class_names} differ from the label "
                                      f"config's rectangle labels {config.class_names}", path=self.source)
                return replace(skeleton, class_names=list(classes))
            return Skeleton(keypoint_names=list(config.keypoint_names),
                            class_names=list(config.class_names) or ["object"])
        if skeleton is not None:
            if skeleton.class_names == ["object"] and seen_classes and seen_classes != ["object"]:
                return replace(skeleton, class_names=seen_classes)
            return skeleton
        if not seen_keypoints:
            raise FdposeError("no keypoint labels in the export (and no label config or skeleton to "
                              "name them)", path=self.source)
        self.report.warn(f"{self.source}: no label config or skeleton: keypoint order taken from first "
                         f"appearance {seen_keypoints}; pass a label config (model_index) or a skeleton "
                         "to fix it")
        return Skeleton(keypoint_names=seen_keypoints, class_names=seen_classes or ["object"])

    # -- second pass: images ----------------------------------------------------------------------

    def _image_key(self, data: dict[str, Any]) -> str | None:
        if self.config is not None and self.config.image_key:
            return self.config.image_key
        if isinstance(data.get("image"), str):
            return "image"
        strings = [key for key, value in data.items() if isinstance(value, str)]
        return strings[0] if len(strings) == 1 else None

    def _frame(self, region: _Region, path: Path, width: int, height: int, where: str) -> _Frame | None:
        oriented = _Frame(width, height, "oriented", width, height)
        if region.original_size is None:
            return oriented
        exported = region.original_size
        rotation = int(round(region.image_rotation)) % 360
        proportional = exported != (height, width) and _same_aspect(exported, (width, height))
        if exported == (width, height) or proportional:
            if exported != (width, height):
                self._note_once(where, f"export says {exported[0]:g}x{exported[1]:g} but the image is "
                                       f"{width}x{height}; percentages applied to the image's size")
            return oriented
        if rotation in (90, 270) and width != height and _same_aspect(exported, (height, width)):
            # Label Studio before the canvas rotation rewrote coordinates into the rotated view.
            return _Frame(height, width, "view-rotated", width, height, rotation=rotation)
        orientation = image_info(path).orientation
        if orientation in (5, 6, 7, 8) and _same_aspect(exported, (height, width)):
            self._note_once(where, f"labelled on the image without its EXIF orientation {orientation}; "
                                   "points mapped through it")
            return _Frame(height, width, "raw-exif", width, height, orientation=orientation)
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

    def _instances(self, regions: list[_Region], path: Path, width: int, height: int,
                   skeleton: Skeleton, where: str) -> list[Instance] | None:
        """The instances of one annotation's regions; None when its frame rules the task out."""
        placed = self._place(regions, path, width, height, skeleton, where)
        if placed is None:
            return None
        rectangles, points = placed
        members, free = self._assign(rectangles, points, where)
        return self._build(rectangles, members, free, width, height, skeleton, where)

    def _place(self, regions: list[_Region], path: Path, width: int, height: int, skeleton: Skeleton,
               where: str) -> tuple[list[_Placed], list[_Placed]] | None:
        """Rectangles (their corners) and keypoints (their point) in hub pixels, with their class or
        keypoint index; unknown labels and bad numbers skipped."""
        rectangles: list[_Placed] = []
        points: list[_Placed] = []
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
                corners = _rectangle_corners(0.0, 0.0, numbers[2] / 100 * frame.source_w,
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

    def _assign(self, rectangles: list[_Placed], points: list[_Placed], where: str
                ) -> tuple[list[list[_Placed]], list[_Placed]]:
        """Each keypoint's rectangle: its parent, else the one rectangle containing it; the keypoints
        of an annotation without rectangles are returned as ``free``."""
        by_id = {region.id: i for i, (region, _, _) in enumerate(rectangles)}
        members: list[list[_Placed]] = [[] for _ in rectangles]
        free: list[_Placed] = []
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
            containing = [i for i, (_, _, corners) in enumerate(rectangles) if _inside(corners, xy)]
            if len(containing) == 1:
                members[containing[0]].append(point)
            elif containing:
                self.report.skip(self.source, item, f"keypoint without parent inside {len(containing)} "
                                                    "rectangles (ambiguous)")
            else:
                self.report.skip(self.source, item, "keypoint without parent outside every rectangle")
        return members, free

    def _build(self, rectangles: list[_Placed], members: list[list[_Placed]], free: list[_Placed], width: int,
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

    def _keypoints(self, group: list[_Placed], k: int, skeleton: Skeleton,
                   where: str) -> np.ndarray:
        keypoints = np.zeros((k, 3))
        occluded = skeleton.occlusion_choice
        for region, index, xy in group:
            if keypoints[index, 2] > 0:
                self.report.skip(self.source, f"{where} region {region.id}",
                                 f"duplicate keypoint {skeleton.keypoint_names[index]!r} in one instance")
                continue
            if occluded is None:
                self._unknown_choices.update(region.choices)
            keypoints[index] = (xy[0], xy[1], 1 if occluded is not None and occluded in region.choices else 2)
        return keypoints

    def _task_images(self, index: int, task: Any, skeleton: Skeleton, used: dict[str, str]
                     ) -> list[ImageRecord]:
        """The image records of one task (one per selected annotation); none when it is skipped."""
        if not isinstance(task, dict):
            self.report.skip(self.source, f"task #{index}", "not a Label Studio task (not an object)")
            return []
        where = f"task {printable(task.get('id', f'#{index}'))}"
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        selected = self._select(task, where)
        if not selected:
            return []
        key = self._image_key(data)
        reference = data.get(key) if key else None
        if not isinstance(reference, str) or not reference.strip():
            self.report.skip(self.source, where, "no image reference in the task data")
            return []
        try:
            path, name = self.images.resolve(parse_image_ref(reference))
            width, height = image_size(path)
        except UnresolvedImage as error:
            self.report.skip(self.source, where, str(error))
            return []
        except FdposeError as error:
            self.report.skip(self.source, where, f"unreadable image ({error})")
            return []
        except ValueError as error:  # e.g. a URL with a malformed host
            self.report.skip(self.source, where, f"invalid image reference {reference!r} ({error})")
            return []
        several = len(selected) > 1
        images = []
        for label, result in selected:
            file_name = name
            if several:
                stem, suffix = posixpath.splitext(name)
                file_name = f"{stem}__ann{label.split()[-1]}{suffix}"
            item = f"{where} {label}"
            if file_name in used:
                self.report.skip(self.source, item, f"image {file_name} already used by {used[file_name]}")
                continue
            instances = self._instances(self._regions(result, item), path, width, height, skeleton, item)
            if instances is None:
                continue
            used[file_name] = item
            task_id = task.get("id", index)
            image_id = f"{task_id}:{label.split()[-1]}" if several else task_id
            images.append(ImageRecord(path=path, file_name=file_name, width=width, height=height,
                                      instances=instances, image_id=image_id))
        return images

    def read(self) -> Dataset:
        self._superseded = 0
        skeleton = self._layout()
        # The first pass (names) went through the same selection: count only this pass.
        self._superseded = 0
        self._ignored_types.clear()
        self._noted: set[tuple[str, str]] = set()
        self.report.count_read("tasks", len(self.tasks))
        self.report.tally["converted"] = 0
        images: list[ImageRecord] = []
        used: dict[str, str] = {}
        # Live reads download an image per task: the bar shows it (convert --quiet turns it off).
        for index, task in enumerate(tqdm(self.tasks, desc="label studio tasks", unit="task",
                                          disable=not self.progress)):
            found = self._task_images(index, task, skeleton, used)
            if found:
                images += found
                self.report.tally["converted"] += 1
            else:
                self.report.count_skipped(1)
        if self._superseded:
            self.report.warn(f"{self.source}: {self._superseded} older annotation(s) superseded by the most "
                             f"recent one of their task (annotation={self.mode})")
        if self._unknown_choices:
            self.report.warn(f"{self.source}: per-region choices {sorted(self._unknown_choices)} on "
                             "keypoints ignored: the skeleton names no occlusion_choice")
        for kind, count in sorted(self._ignored_types.items()):
            self.report.warn(f"{self.source}: ignored {count} result(s) of type {kind!r}")
        return Dataset(skeleton=skeleton, images=images, report=self.report)


def _check_tasks(tasks: Any, source: object) -> list[Any]:
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]  # a single task
    if not isinstance(tasks, list):
        raise FdposeError("expected a Label Studio JSON export (a list of tasks)", path=source)
    if not tasks:
        raise FdposeError("the export holds no tasks", path=source)
    return tasks


def read_labelstudio_export(export_json: Path, images_root: Path, *, label_config: Path | None = None,
                            skeleton: Skeleton | None = None, annotation: str = "latest",
                            strict: bool = False, progress: bool = False) -> Dataset:
    """Read a Label Studio JSON export with its images under ``images_root`` into the hub.

    ``label_config`` is the project's label config XML (for ``model_index``); ``skeleton`` a
    :class:`Skeleton` (for order, classes and ``occlusion_choice``). See the module docstring for
    every rule. Raises :class:`FdposeError` for an unusable input (unreadable or invalid JSON,
    invalid config, a config and skeleton that disagree). ``progress`` shows a bar over the tasks."""
    export_json = Path(export_json)
    tasks = read_json(export_json, "export file")
    config = None
    if label_config is not None:
        label_config = Path(label_config)
        try:
            config_text = label_config.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise FdposeError(f"unreadable label config ({error})", path=label_config) from None
        config = parse_label_config(config_text, label_config)
    tasks = _check_tasks(tasks, export_json)
    return _Reader(tasks, str(export_json), FolderImages(Path(images_root)), config, skeleton,
                   annotation, strict, progress).read()


# --- live server -------------------------------------------------------------------------------


def _client(url: str) -> Any:
    """A label-studio-sdk client for ``url``; the key only ever comes from the environment."""
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        raise FdposeError(f"set {API_KEY_ENV} to a Label Studio API key (access token)", path=url)
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url.rstrip("/"), api_key=api_key)


def _api_call(url: str, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` through the SDK, turning HTTP and connection errors into one clear
    line (which never holds the key)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return call(*args, **kwargs)
    except ApiError as error:
        detail = error.body if isinstance(error.body, str) else json.dumps(error.body)
        raise FdposeError(f"{what} failed (HTTP {error.status_code}: {detail[:200]})", path=url) from None
    except httpx.HTTPError as error:
        raise FdposeError(f"{what} failed ({type(error).__name__}: {error})", path=url) from None


def _export_snapshot(client: Any, url: str, project_id: int) -> bytes:
    """The project's JSON export: every task, every annotation (cancelled and ground truth too) and
    full predictions. An export snapshot, because the quick export lists predictions by id only."""
    import time

    what = f"exporting project {project_id}"
    exports = client.projects.exports
    snapshot = _api_call(
        url, what, exports.create, id=project_id, title="fdpose convert",
        serialization_options={"predictions": {"only_id": False}, "drafts": {"only_id": True}},
        annotation_filter_options={"usual": True, "ground_truth": True, "skipped": True},
        task_filter_options={"only_with_annotations": False})
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while str(snapshot.status) != "completed":
        if str(snapshot.status) == "failed":
            raise FdposeError(f"{what} failed on the server (export {snapshot.id})", path=url)
        if time.monotonic() > deadline:
            raise FdposeError(f"{what}: export {snapshot.id} not ready after {EXPORT_TIMEOUT_S:.0f} s",
                              path=url)
        time.sleep(0.5)
        snapshot = _api_call(url, what, exports.get, id=project_id, export_pk=snapshot.id)
    chunks = _api_call(url, what, lambda: list(exports.download(id=project_id, export_pk=snapshot.id,
                                                                export_type="JSON")))
    _api_call(url, what, exports.delete, id=project_id, export_pk=snapshot.id)
    return b"".join(chunks)


def read_labelstudio_live(url: str, project_id: int, out_images_dir: Path, *,
                          skeleton: Skeleton | None = None, annotation: str = "latest",
                          strict: bool = False, progress: bool = False) -> Dataset:
    """Pull a project's JSON export and label config from a Label Studio server and read it like a
    file export; images served by the server are downloaded (with the key, with timeouts) into
    ``out_images_dir``. The key comes from ``LABEL_STUDIO_API_KEY`` only and is never written."""
    from pipeline.formats.ls_images import ServerImages

    client = _client(url)
    source = f"{url.rstrip('/')}/projects/{project_id}"
    project = _api_call(url, f"reading project {project_id}", client.projects.get, id=project_id)
    config = parse_label_config(project.label_config or "", f"{source} label config")
    tasks = _check_tasks(parse_json(_export_snapshot(client, url, project_id), source), source)
    # The SDK's own headers: a personal access token is exchanged for an access token there.
    images = ServerImages(url, client._client_wrapper.get_headers, Path(out_images_dir))
    try:
        return _Reader(tasks, source, images, config, skeleton, annotation, strict, progress).read()
    finally:
        images.close()


# --- predictions out ---------------------------------------------------------------------------


def _task_names(reference: str) -> set[str]:
    ref = parse_image_ref(reference)
    return {n for n in (ref.name, ref.unprefixed_name) if n}


@dataclass(frozen=True)
class RegionStyle:
    """How :func:`instance_regions` writes regions for one project: its control names and conventions."""

    to_name: str  # the <Image name=...>
    keypoint_control: str
    rectangle_control: str | None  # None: keypoints only, without a parent rectangle
    choices_control: str | None = None  # a per-region <Choices> marking occluded points (v=1) ...
    occlusion_choice: str | None = None  # ... with this value
    point_width: float = 0.5  # the keypoint's drawn size, percent
    digits: int | None = None  # percentages rounded to this many decimals (None: as computed)
    origin: str | None = None  # each region's ``origin`` ("manual" for a human's), when set


def instance_regions(style: RegionStyle, size: tuple[int, int], class_name: str, bbox: Sequence[float],
                     keypoints: np.ndarray, keypoint_names: Sequence[str], box_id: str,
                     point_id: Callable[[int], str], order: Sequence[int] | None = None
                     ) -> list[dict[str, Any]]:
    """One instance as Label Studio ``result`` regions: a ``rectanglelabels`` region (unless the
    style has no rectangle control), a ``keypointlabels`` region per labelled keypoint (in ``order``,
    ``parentID`` its rectangle) named ``point_id(index)``, and for each occluded one the occlusion
    choice under the same id (Label Studio's convention). Coordinates are percent of ``size``."""
    width, height = size

    def pct(value: float, total: int) -> float:
        number = float(value) / total * 100.0
        return number if style.digits is None else round(number, style.digits)

    def region(kind: str, control: str, region_id: str, value: dict[str, Any]) -> dict[str, Any]:
        item = {"original_width": width, "original_height": height, "image_rotation": 0, "value": value,
                "id": region_id, "from_name": control, "to_name": style.to_name, "type": kind}
        if style.origin is not None:
            item["origin"] = style.origin
        return item

    result = []
    if style.rectangle_control is not None:
        x0, y0, x1, y1 = (float(v) for v in bbox)
        box = {"x": pct(x0, width), "y": pct(y0, height), "width": pct(x1 - x0, width),
               "height": pct(y1 - y0, height), "rotation": 0, "rectanglelabels": [class_name]}
        result.append(region("rectanglelabels", style.rectangle_control, box_id, box))
    for index in range(len(keypoints)) if order is None else order:
        x, y, v = (float(c) for c in keypoints[index])
        if v <= 0:
            continue  # absent: Label Studio has no region for a point nobody placed
        region_id = point_id(index)
        position = {"x": pct(x, width), "y": pct(y, height), "width": style.point_width}
        point = region("keypointlabels", style.keypoint_control, region_id,
                       {**position, "keypointlabels": [keypoint_names[index]]})
        if style.rectangle_control is not None:
            point["parentID"] = box_id
        result.append(point)
        if v == 1 and style.choices_control is not None and style.occlusion_choice is not None:
            result.append(region("choices", style.choices_control, region_id,
                                 {**position, "choices": [style.occlusion_choice]}))
    return result


def prediction_result(image: ImageRecord, skeleton: Skeleton, config: LabelConfig) -> list[dict[str, Any]]:
    """The Label Studio ``result`` list for one image's instances (see the module docstring)."""
    if config.keypoint_control is None or config.image_name is None:
        raise FdposeError("label config needs an <Image> and a <KeyPointLabels>")
    occlusion = skeleton.occlusion_choice
    mark_occluded = bool(occlusion and config.choices_control and occlusion in config.choice_values)
    style = RegionStyle(config.image_name, config.keypoint_control, config.rectangle_control,
                        config.choices_control if mark_occluded else None,
                        occlusion if mark_occluded else None)
    # Emit keypoints in model_index order (the config's), naming them by the skeleton.
    order = [skeleton.keypoint_names.index(name) for name in config.keypoint_names]
    result: list[dict[str, Any]] = []
    for n, instance in enumerate(image.instances):
        class_name = skeleton.class_names[instance.class_id]
        result += instance_regions(style, (image.width, image.height), class_name, instance.bbox,
                                   instance.keypoints, skeleton.keypoint_names, f"fdp{n}",
                                   lambda index, n=n: f"fdp{n}k{index}", order)
    return result


def upload_predictions(url: str, project_id: int, images: Sequence[ImageRecord], *, model_version: str,
                       skeleton: Skeleton, scores: Sequence[float | None] | None = None,
                       report: Report | None = None) -> int:
    """Upload one prediction per image to the project's task showing that image; return how many
    were created. ``scores`` (optional, one per image) becomes the prediction's score. Images matching
    no task, or several, are skipped and listed in ``report`` (when given)."""
    client = _client(url)
    report = report if report is not None else Report()
    project = _api_call(url, f"reading project {project_id}", client.projects.get, id=project_id)
    config = parse_label_config(project.label_config or "", f"{url} project {project_id} label config")
    if set(config.keypoint_names) != set(skeleton.keypoint_names):
        raise FdposeError(f"model keypoints {skeleton.keypoint_names} differ from the project's "
                          f"{config.keypoint_names}", path=url, item=f"project {project_id}")
    unknown = sorted({skeleton.class_names[i.class_id] for im in images for i in im.instances}
                     - set(config.class_names))
    if config.rectangle_control is not None and unknown:
        raise FdposeError(f"model classes {unknown} are not rectangle labels of the project "
                          f"({config.class_names})", path=url, item=f"project {project_id}")
    tasks_by_name: dict[str, list[int]] = {}
    for task in _api_call(url, "listing tasks", lambda: list(client.tasks.list(project=project_id))):
        data = task.data or {}
        key = config.image_key or "image"
        if isinstance(data.get(key), str):
            for name in _task_names(data[key]):
                tasks_by_name.setdefault(name, []).append(task.id)
    requests = []
    for n, image in enumerate(images):
        name = Path(image.file_name).name
        matches = sorted(set(tasks_by_name.get(name, [])))
        if len(matches) != 1:
            reason = "no task shows this image" if not matches else f"several tasks show it {matches}"
            report.skip(url, image.file_name, reason)
            continue
        request: dict[str, Any] = {"task": matches[0], "model_version": model_version,
                                   "result": prediction_result(image, skeleton, config)}
        score = scores[n] if scores is not None else None
        if score is not None:
            request["score"] = float(score)
        requests.append(request)
    if not requests:
        return 0
    from label_studio_sdk import PredictionRequest

    response = _api_call(url, "importing predictions", client.projects.import_predictions, id=project_id,
                         request=[PredictionRequest(**r) for r in requests])
    created = getattr(response, "created", None)
    return int(created) if created is not None else len(requests)
