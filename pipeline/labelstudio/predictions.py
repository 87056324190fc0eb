"""Predictions out to Label Studio: hub instances as ``result`` regions, and their upload.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import ImageRecord, Report
from pipeline.errors import FdposeError
from pipeline.labelstudio.client import api_call, project_label_config, sdk_client
from pipeline.labelstudio.config import LabelConfig, parse_label_config
from pipeline.labelstudio.images import parse_image_ref
from pipeline.skeleton import Skeleton


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
    client = sdk_client(url)
    report = report if report is not None else Report()
    config = parse_label_config(project_label_config(client, url, project_id),
                                f"{url} project {project_id} label config")
    if set(config.keypoint_names) != set(skeleton.keypoint_names):
        raise FdposeError(f"model keypoints {skeleton.keypoint_names} differ from the project's "
                          f"{config.keypoint_names}", path=url, item=f"project {project_id}")
    unknown = sorted({skeleton.class_names[i.class_id] for im in images for i in im.instances}
                     - set(config.class_names))
    if config.rectangle_control is not None and unknown:
        raise FdposeError(f"model classes {unknown} are not rectangle labels of the project "
                          f"({config.class_names})", path=url, item=f"project {project_id}")
    tasks_by_name: dict[str, list[int]] = {}
    for task in api_call(url, "listing tasks", lambda: list(client.tasks.list(project=project_id))):
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

    response = api_call(url, "importing predictions", client.projects.import_predictions, id=project_id,
                         request=[PredictionRequest(**r) for r in requests])
    created = getattr(response, "created", None)
    return int(created) if created is not None else len(requests)
