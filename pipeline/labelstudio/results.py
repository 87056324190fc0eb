"""A task of a Label Studio export, as far as the reader needs it: which annotations (or predictions)
count under the annotation mode, and their ``result`` lists grouped into regions.

Everything left out is listed in the :class:`pipeline.dataset.Report` the caller passes (rules in
:mod:`pipeline.labelstudio.reader`, "Annotations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.dataset import Report
from pipeline.errors import FdposeError, printable

ANNOTATION_MODES = ("latest", "ground-truth", "all", "predictions")
RECTANGLE_TYPES = ("rectanglelabels", "rectangle")
KEYPOINT_TYPES = ("keypointlabels", "keypoint")


@dataclass
class Region:
    """One region of a result: its geometry (``value``), labels, parent and per-region choices."""

    id: str
    kind: str  # "rectangle" or "keypoint"
    value: dict[str, Any]
    labels: list[str]
    parent_id: str | None
    original_size: tuple[float, float] | None
    image_rotation: float
    choices: set[str] = field(default_factory=set)


def number(value: Any, default: float = math.nan) -> float:
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


def check_mode(annotation: str) -> str:
    """``annotation`` when it is one of :data:`ANNOTATION_MODES`, else :class:`FdposeError`."""
    if annotation not in ANNOTATION_MODES:
        raise FdposeError(f"annotation must be one of {', '.join(ANNOTATION_MODES)}, got {annotation!r}")
    return annotation


def _latest_prediction(task: dict[str, Any], where: str, source: str,
                       report: Report) -> list[tuple[str, list[Any]]]:
    listed = task.get("predictions") or []
    predictions = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    if not predictions:
        reason = ("export lists prediction ids only (Label Studio's quick export); read the "
                  "project live, or export a snapshot with full predictions") if listed else \
            "empty task (no prediction)"
        report.skip(source, where, reason)
        return []
    latest = max(predictions, key=_timestamp)
    return [(f"prediction {printable(latest.get('id'))}", latest.get("result") or [])]


def select_results(task: dict[str, Any], where: str, mode: str, source: str,
                   report: Report) -> tuple[list[tuple[str, list[Any]]], int]:
    """The ``(label, result)`` pairs of a task that count under the annotation ``mode``, and how many
    older annotations the latest one superseded."""
    if mode == "predictions":
        return _latest_prediction(task, where, source, report), 0
    annotations = task.get("annotations")
    if annotations is None:
        annotations = task.get("completions") or []  # exports of Label Studio < 1.0
    if not isinstance(annotations, list):
        report.skip(source, where, f"annotations is not a list ({type(annotations).__name__})")
        return [], 0
    annotations = [a for a in annotations if isinstance(a, dict)]
    usable = []
    for item in annotations:
        if item.get("was_cancelled"):
            report.skip(source, f"{where} annotation {printable(item.get('id'))}", "cancelled annotation")
        else:
            usable.append(item)
    if mode == "ground-truth":
        if usable and not any(a.get("ground_truth") for a in usable):
            report.skip(source, where, "no ground-truth annotation")
            return [], 0
        usable = [a for a in usable if a.get("ground_truth")]
    if not usable:
        if not annotations:
            report.skip(source, where, "empty task (no annotation)")
        return [], 0
    superseded = 0
    if mode == "all":
        chosen = sorted(usable, key=lambda a: (str(a.get("id")),))
    else:
        chosen = [max(usable, key=_timestamp)]
        superseded = len(usable) - 1
    selected = []
    for item in chosen:
        label = f"annotation {printable(item.get('id'))}"
        if not item.get("result"):
            report.skip(source, f"{where} {label}", "empty annotation (no regions)")
            continue
        selected.append((label, item["result"]))
    return selected, superseded


def _region(item: dict[str, Any], kind: str, region_id: str, value: dict[str, Any]) -> Region:
    size = None
    if item.get("original_width") is not None and item.get("original_height") is not None:
        size = (number(item["original_width"]), number(item["original_height"]))
        size = size if all(math.isfinite(v) for v in size) else None
    rotation = number(item.get("image_rotation"), 0.0)
    return Region(
        id=region_id,
        kind="rectangle" if kind in RECTANGLE_TYPES else "keypoint",
        value=value,
        labels=_texts(value.get(kind)) if kind.endswith("labels") else [],
        parent_id=printable(item["parentID"]) if item.get("parentID") else None,
        original_size=size,
        image_rotation=rotation if math.isfinite(rotation) else 0.0,
    )


def group_regions(result: Any, where: str, source: str, report: Report,
                  ignored_types: dict[str, int]) -> list[Region]:
    """Group a result list by region id: geometry, labels and per-region choices merged. Result types
    the reader does not use are counted in ``ignored_types``."""
    if not isinstance(result, list):
        report.skip(source, where, "result is not a list")
        return []
    regions: dict[str, Region] = {}
    extras: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for item in result:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("type", "")).lower()
        value = item.get("value") if isinstance(item.get("value"), dict) else {}
        region_id = printable(item.get("id", ""))  # as in report lines; parentIDs alike
        if kind in RECTANGLE_TYPES or kind in KEYPOINT_TYPES:
            if region_id in regions:
                report.skip(source, f"{where} region {region_id}", "duplicate region id")
                continue
            regions[region_id] = _region(item, kind, region_id, value)
        elif kind in ("choices", "labels"):
            extras.setdefault(region_id, []).append((kind, value))
        else:
            ignored_types[kind or "?"] = ignored_types.get(kind or "?", 0) + 1
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
