"""Label Studio tasks in, pre-annotations out: one ``{result, score, model_version}`` per task.

Each task's image is downloaded from the project's Label Studio server, run through the shared
inference path, and written with the same region writer as ``fdpose predict --to-label-studio``
(:func:`pipeline.formats.labelstudio.prediction_result`): a ``rectanglelabels`` region per instance,
its keypoints as ``keypointlabels`` with ``parentID``, percent coordinates of the image as shown.
Keypoints at least ``kpt_conf`` confident are labelled points; the others are marked with the
project's occlusion choice when it has one (see :mod:`pipeline.serve.labelconfig`), else left out.
The score is :func:`pipeline.uncertainty.task_score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import ImageRecord, Instance
from pipeline.formats.labelstudio import prediction_result
from pipeline.inference import input_size, run_image
from pipeline.serve.images import LabelStudioImages
from pipeline.serve.labelconfig import ProjectLayout
from pipeline.serve.models import ServedModel
from pipeline.serve.protocol import RequestError
from pipeline.uncertainty import task_score


@dataclass(frozen=True)
class Thresholds:
    conf: float
    iou: float
    max_det: int
    kpt_conf: float
    imgsz: int | None = None  # None: the model's own


def _instances(detections: list[Instance], kpt_conf: float, mark_occluded: bool) -> list[Instance]:
    """Labels from predictions: keypoints at least ``kpt_conf`` confident labelled (v=2), the others
    occluded (v=1) when the project marks occlusion, else absent (v=0)."""
    instances = []
    for det in detections:
        points = det.keypoints.copy()  # confidence 1.0 without a visibility channel
        points[:, 2] = np.where(points[:, 2] >= kpt_conf, 2, 1 if mark_occluded else 0)
        instances.append(Instance(det.class_id, det.bbox.copy(), points))
    return instances


def predict_task(task: Any, model: ServedModel, layout: ProjectLayout, images: LabelStudioImages,
                 thresholds: Thresholds) -> dict[str, Any]:
    """The prediction for one task (a dict with ``id`` and ``data``)."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise RequestError(422, f"task {task.get('id') if isinstance(task, dict) else task!r}: "
                                "expected an object with 'data'")
    task_id = task.get("id")
    image = images.fetch(task["data"].get(layout.image_key), task_id)
    imgsz = input_size(model.runner, thresholds.imgsz, model.path)
    detections = run_image(model.runner, image, imgsz, thresholds.conf, thresholds.iou, thresholds.max_det)
    height, width = image.shape[:2]
    mark = bool(layout.skeleton.occlusion_choice)
    record = ImageRecord(path=Path(str(task_id)), file_name=str(task_id), width=int(width),
                         height=int(height), instances=_instances(detections, thresholds.kpt_conf, mark))
    return {"result": prediction_result(record, layout.skeleton, layout.config),
            "score": task_score(detections), "model_version": model.version}
