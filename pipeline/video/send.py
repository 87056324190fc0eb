"""Video frames to a Label Studio project: one task per frame image, the model's poses as pre-annotations.

The images go through Label Studio's file import (``/api/projects/<id>/import``, one task each, stored
as uploads); the predictions then go to the tasks showing them by :func:`upload_predictions` (matched
by file name, as ``fdpose predict --to-label-studio`` does), with the frame's score. Frames whose
name already shows in the project more than once are skipped by the uploader and listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.dataset import ImageRecord, Instance, Report
from pipeline.labelstudio.client import ImageFetcher, api_key
from pipeline.labelstudio.config import LabelConfig
from pipeline.labelstudio.predictions import prediction_result, upload_predictions
from pipeline.skeleton import Skeleton


def frame_record(
    name: str, size: tuple[int, int], poses: list[tuple[int, np.ndarray, np.ndarray]], kpt_conf: float
) -> ImageRecord:
    """A frame's poses (class id, box, (K, 3) keypoints with confidence) as an image record: keypoints
    at least ``kpt_conf`` confident become labelled points (v=2), the others are left out."""
    instances = []
    for class_id, box, keypoints in poses:
        points = np.array(keypoints, float)
        points[:, 2] = np.where(points[:, 2] >= kpt_conf, 2, 0)
        instances.append(Instance(class_id, np.array(box, float), points))
    return ImageRecord(Path(name), name, size[0], size[1], instances)


def task_prediction(
    record: ImageRecord, skeleton: Skeleton, config: LabelConfig, score: float, model_version: str
) -> dict[str, Any]:
    """A prediction as a Label Studio import file carries it inside a task."""
    return {
        "model_version": model_version,
        "score": round(float(score), 6),
        "result": prediction_result(record, skeleton, config),
    }


def send_frames(
    url: str,
    project: int,
    images: list[Path],
    records: list[ImageRecord] | None = None,
    skeleton: Skeleton | None = None,
    scores: list[float] | None = None,
    model_version: str = "fdpose",
) -> str:
    """Create a task per image in ``project``; with ``records`` (one per image, in order) and ``skeleton``,
    upload them as predictions. Returns the summary line."""
    fetcher = ImageFetcher(url, api_key(url), timeout_s=120, trust_env=True)
    try:
        answer = fetcher.post_files(
            f"/api/projects/{project}/import",
            [(path.name, path.read_bytes()) for path in images],
            f"importing {len(images)} frames into project {project}",
        )
    finally:
        fetcher.close()
    created = int(answer.get("task_count", len(images))) if isinstance(answer, dict) else len(images)
    line = f"label studio: {created} tasks created in project {project}"
    if records is not None and skeleton is not None:
        report = Report()
        uploaded = upload_predictions(
            url,
            project,
            records,
            model_version=model_version,
            skeleton=skeleton,
            scores=scores,
            report=report,
        )
        for item in report.items:
            click.echo(f"label studio: {item.action} {item.file}: {item.item}: {item.reason}", err=True)
        line += f", {uploaded} pre-annotations"
    return line
