"""Label Studio tasks in, pre-annotations out: one ``{result, score, model_version}`` per task.

Each task's image is downloaded from the project's Label Studio server, run through the shared
inference path, and written with the same region writer as ``fdpose predict --to-label-studio``
(:func:`pipeline.labelstudio.predictions.prediction_result`): a ``rectanglelabels`` region per instance,
its keypoints as ``keypointlabels`` with ``parentID``, percent coordinates of the image as shown.
Keypoints at least ``kpt_conf`` confident are labelled points; the others are marked with the
project's occlusion choice when it has one (see :mod:`pipeline.labelstudio.layout`), else left out.
The score is :func:`pipeline.uncertainty.task_score`.

A task's image reference is resolved against the URL of the server the backend is set up for: a path
(``/data/upload/...``, ``/data/local-files/?d=...``) or an absolute URL on the same scheme, host and
port. Anything else (another host, ``file:``, a bare file path) is refused: a request never makes the
backend read a local file or send the key elsewhere. The download
(:class:`pipeline.labelstudio.client.ImageFetcher`: the key, no proxy, no redirect, a time and size
limit) must decode as an image.

Tasks of a batch succeed or fail on their own (:func:`predict_tasks`): a task whose image cannot be
fetched or read gets an empty result, ``[]`` (Label Studio reads a list as the task's predictions:
none is stored, so "Retrieve predictions" asks for it again later, where an empty prediction would
mark it done with a score of 0), and its reason is returned for the log and ``/health``, while the
others get their predictions. Only a batch in which every task fails is answered with the first
task's error (a 4xx): there is nothing to show, and a single task's error reaches the user that way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np

from pipeline.dataset import ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.inference import input_size, run_image
from pipeline.labelstudio.client import FetchError, ImageFetcher
from pipeline.labelstudio.layout import ProjectLayout
from pipeline.labelstudio.predictions import prediction_result
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


def image_url(reference: object, base_url: str, task_id: object) -> str:
    """The URL of a task's image on ``base_url``; :class:`RequestError` for anything else."""
    if not isinstance(reference, str) or not reference.strip():
        raise RequestError(422, f"task {task_id}: no image reference in its data")
    reference = reference.strip()
    parts, base = urlsplit(reference), urlsplit(base_url)
    if parts.scheme or parts.netloc:
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise RequestError(422, f"task {task_id}: image {reference!r} is not on the Label Studio server "
                                    f"{base_url}; only that server's images are downloaded")
        return reference
    if not reference.startswith("/"):
        raise RequestError(422, f"task {task_id}: image {reference!r} is not a Label Studio URL "
                                "(local paths are never read)")
    return urljoin(base_url.rstrip("/") + "/", reference.lstrip("/"))


def fetch_image(images: ImageFetcher, reference: object, task_id: object) -> np.ndarray:
    """The task's image as a BGR array."""
    import cv2

    url = image_url(reference, images.base_url, task_id)
    try:
        data = images.get(url)
    except FetchError as error:
        raise RequestError(error.status, f"task {task_id}: {error.message}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise RequestError(422, f"task {task_id}: {url} is not a decodable image ({len(data)} bytes)")
    return image


def predict_task(task: Any, model: ServedModel, layout: ProjectLayout, images: ImageFetcher,
                 thresholds: Thresholds) -> dict[str, Any]:
    """The prediction for one task (a dict with ``id`` and ``data``)."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise RequestError(422, f"task {task.get('id') if isinstance(task, dict) else task!r}: "
                                "expected an object with 'data'")
    task_id = task.get("id")
    image = fetch_image(images, task["data"].get(layout.image_key), task_id)
    imgsz = input_size(model.runner, thresholds.imgsz, model.path)
    detections = run_image(model.runner, image, imgsz, thresholds.conf, thresholds.iou, thresholds.max_det)
    height, width = image.shape[:2]
    mark = bool(layout.skeleton.occlusion_choice)
    record = ImageRecord(path=Path(str(task_id)), file_name=str(task_id), width=int(width),
                         height=int(height), instances=_instances(detections, thresholds.kpt_conf, mark))
    return {"result": prediction_result(record, layout.skeleton, layout.config),
            "score": task_score(detections), "model_version": model.version}


@dataclass(frozen=True)
class TaskFailure:
    task: object  # the task's id, as sent
    status: int  # the HTTP status the task alone would have been answered with
    reason: str


def predict_tasks(tasks: list[Any], model: ServedModel, layout: ProjectLayout, images: ImageFetcher,
                  thresholds: Thresholds) -> tuple[list[Any], list[TaskFailure]]:
    """One prediction per task, in order (``[]`` for a task that failed), and the failures.
    Raises the first task's error when every task failed."""
    results, failures, first = [], [], None
    for task in tasks:
        try:
            results.append(predict_task(task, model, layout, images, thresholds))
            continue
        except RequestError as error:
            failure, raised = TaskFailure(_task_id(task), error.status, error.message), error
        except FdposeError as error:
            failure, raised = TaskFailure(_task_id(task), 422, str(error)), error
        except Exception as error:  # a bug on one image must not cost the whole batch
            logging.getLogger("fdpose.serve").exception("predict: task %s", _task_id(task))
            failure, raised = TaskFailure(_task_id(task), 500, f"{type(error).__name__}: {error}"), error
        first = first or raised
        failures.append(failure)
        results.append([])
    if tasks and len(failures) == len(tasks):
        raise first
    return results, failures


def _task_id(task: Any) -> object:
    return task.get("id") if isinstance(task, dict) else None
