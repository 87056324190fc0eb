"""Repeated Label Studio annotations for ``fdpose sigmas``: every annotation of a task (an export file,
or a project read live) is one annotator's labelling of the task's image."""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.labelstudio.reader import read_labelstudio_export, read_labelstudio_live
from pipeline.skeleton import Skeleton


def labelstudio_groups(*, input_path: Path | None, images: Path | None, url: str | None, project: int | None,
                       label_config: Path | None, skeleton: Skeleton | None
                       ) -> tuple[Skeleton, list[list[list[Instance]]], str]:
    """The layout, and per task the instances of each of its annotations (tasks with one annotation
    give no pair), and a description of the source."""
    if url is not None:
        if project is None:
            raise FdposeError("--url needs --project ID", item="fdpose sigmas")
        download = Path(tempfile.mkdtemp(prefix="fdpose-sigmas-"))
        try:
            dataset = read_labelstudio_live(url, project, download, skeleton=skeleton, annotation="all")
        finally:
            shutil.rmtree(download, ignore_errors=True)
        described = f"{url.rstrip('/')}/projects/{project}"
    else:
        if input_path is None or images is None:
            raise FdposeError("--from label-studio needs --input EXPORT.json and --images DIR, or --url URL "
                              "--project ID", item="fdpose sigmas")
        dataset = read_labelstudio_export(input_path, images, label_config=label_config, skeleton=skeleton,
                                          annotation="all")
        described = str(input_path)
    by_task: dict[str, list[list[Instance]]] = defaultdict(list)
    for image in dataset.images:  # image_id "TASK:ANNOTATION" when a task has several annotations
        by_task[str(image.image_id).split(":")[0]].append(image.instances)
    return dataset.skeleton, [groups for groups in by_task.values() if len(groups) > 1], described
