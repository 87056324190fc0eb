"""Video frames to a Label Studio project: one task per frame image, the model's poses as pre-annotations.

The images go through Label Studio's file import (``/api/projects/<id>/import``, one task each, stored
as uploads); the predictions then go to the tasks showing them by :func:`upload_predictions` (matched
by file name, as ``fdpose predict --to-label-studio`` does), with the frame's score. A frame whose
name a task of the project already shows is not sent again: skipped and listed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.dataset import ImageRecord, Instance, Report
from pipeline.labelstudio.client import ImageFetcher, api_call, api_key, sdk_client
from pipeline.labelstudio.config import LabelConfig
from pipeline.labelstudio.images import parse_image_ref
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


def project_image_names(url: str, project: int) -> set[str]:
    """The image file names the project's tasks already show (upload prefixes stripped)."""
    client = sdk_client(url)
    names: set[str] = set()
    for task in api_call(url, "listing tasks", lambda: list(client.tasks.list(project=project))):
        for value in (task.data or {}).values():
            if isinstance(value, str):
                ref = parse_image_ref(value)
                names |= {n for n in (ref.name, ref.unprefixed_name) if n}
    return names


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
    upload them as predictions. An image whose name a task of the project already shows is skipped and
    listed (a frame sent twice would be two tasks, and its prediction could not tell them apart).
    Returns the summary line."""
    existing = project_image_names(url, project)
    keep = [i for i, path in enumerate(images) if path.name not in existing]
    for i in sorted(set(range(len(images))) - set(keep)):
        click.echo(
            f"label studio: skipped {images[i].name}: a task of project {project} already shows it", err=True
        )
    line = f"label studio: {len(keep)} tasks created in project {project}"
    if not keep:
        return line + f" ({len(images)} already there)"
    fetcher = ImageFetcher(url, api_key(url), timeout_s=120, trust_env=True)
    try:
        fetcher.post_files(
            f"/api/projects/{project}/import",
            [(images[i].name, images[i].read_bytes()) for i in keep],
            f"importing {len(keep)} frames into project {project}",
        )
    finally:
        fetcher.close()
    if records is not None and skeleton is not None:
        report = Report()
        uploaded = upload_predictions(
            url,
            project,
            [records[i] for i in keep],
            model_version=model_version,
            skeleton=skeleton,
            scores=[scores[i] for i in keep] if scores else None,
            report=report,
        )
        for item in report.items:
            click.echo(f"label studio: {item.action} {item.file}: {item.item}: {item.reason}", err=True)
        line += f", {uploaded} pre-annotations"
    skipped = len(images) - len(keep)
    return line + (f"; skipped {skipped} already in the project" if skipped else "")


DEFAULT_URL_PREFIX = "/data/local-files/?d=images/"


def task_options(label_config_help: str) -> Callable[[Callable], Callable]:
    """The options that turn picked frames into Label Studio tasks, shared by ``frames`` and
    ``outliers``: ``--label-config`` (pre-annotations in tasks.json), ``--url-prefix``,
    ``--to-label-studio``, ``--project``."""
    options = [
        click.option("--label-config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     default=None, help=label_config_help),
        click.option("--url-prefix", default=DEFAULT_URL_PREFIX, show_default=True,
                     help="tasks.json data.image = this + the image name."),
        click.option("--to-label-studio", "to_label_studio", metavar="URL", default=None,
                     help="Also create the tasks on this server (images uploaded), with the poses as "
                          "pre-annotations (key: LABEL_STUDIO_API_KEY)."),
        click.option("--project", type=int, default=None,
                     help="Label Studio project id for --to-label-studio."),
    ]

    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return apply
