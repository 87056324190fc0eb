"""``fdpose frames``: the frames of videos most worth labelling, diverse and spread over each video.

DeepLabCut's way, plus time: every ``step``-th frame of a video (at most ``--samples`` of them) is
shrunk to a 32 x 32 grey thumbnail; k-means (scikit-learn, seeded) groups the thumbnails, each
extended by its position in the video (so that clusters also spread over time), into ``--count``
clusters; from each cluster the frame nearest its centre is taken. Written to ``--out`` (replaced
atomically): ``images/<video>_f<frame>.png`` (the video's path with ``/`` as ``__``, the 0-based frame
index), ``frames.csv`` (image, video, frame) and ``tasks.json``, a Label Studio import file whose
``data.image`` is ``--url-prefix`` + the image name (default: a local-files storage rooted at
``images/``), with the model's predictions as pre-annotations when ``--model`` and ``--label-config``
are given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from pipeline.config import PARAMS_FILE, PredictParams, load_section, overridden
from pipeline.dataset import ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.io import atomic_dir
from pipeline.labelstudio.config import LabelConfig, parse_label_config
from pipeline.skeleton import Skeleton
from pipeline.uncertainty import task_score
from pipeline.video.send import DEFAULT_URL_PREFIX, frame_record, send_frames, task_options, task_prediction
from pipeline.video.videoio import VideoInfo, list_videos, probe, read_frames

THUMB = 32
TIME_WEIGHT = 0.5  # how much a frame's position in the video counts against its appearance


def frame_name(video: str, index: int) -> str:
    return f"{Path(video).with_suffix('').as_posix().replace('/', '__')}_f{index:06d}.png"


def thumbnails(path: Path, samples: int) -> tuple[list[int], np.ndarray]:
    """Frame indices and their flattened grey thumbnails in [0, 1], every ``step``-th frame."""
    info = probe(path)
    step = max(1, -(-info.frames // samples)) if info.frames > 0 else 1
    indices, thumbs = [], []
    for index, image in read_frames(info):
        if index % step == 0:
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            thumbs.append(cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel() / 255.0)
            indices.append(index)
    return indices, np.array(thumbs, np.float32)


def select(indices: list[int], thumbs: np.ndarray, count: int, seed: int) -> list[int]:
    """``count`` frame indices (sorted): k-means over appearance and time, the frame nearest each centre."""
    if len(indices) <= count:
        return list(indices)
    from sklearn.cluster import KMeans

    position = np.array(indices, np.float32) / max(indices[-1], 1)
    # Thumbnail distances grow with sqrt(pixels): scale time to count like TIME_WEIGHT of a full-range change.
    features = np.column_stack([thumbs, position * TIME_WEIGHT * np.sqrt(thumbs.shape[1])])
    kmeans = KMeans(n_clusters=count, n_init=4, random_state=seed).fit(features)
    chosen = set()
    for k in range(count):
        members = np.flatnonzero(kmeans.labels_ == k)
        distances = np.linalg.norm(features[members] - kmeans.cluster_centers_[k], axis=1)
        chosen.add(indices[int(members[np.argmin(distances)])])
    return sorted(chosen)


@dataclass
class FramesResult:
    out: Path
    picked: dict[str, list[int]]
    images: list[Path]  # the written frame images, in task order
    records: list[ImageRecord] | None  # the model's poses of each frame, when a model ran
    scores: list[float] | None  # and each frame's certainty (pipeline.uncertainty.task_score)

    def summary(self) -> str:
        total = sum(len(v) for v in self.picked.values())
        extra = " with the model's poses" if self.records is not None else ""
        return (
            f"{total} frames from {len(self.picked)} videos -> {self.out / 'images'}; Label Studio import "
            f"file {self.out / 'tasks.json'}{extra}"
        )


@dataclass
class FramePoses:
    """What pre-annotates picked frames: a detector (BGR image -> detections), the model's skeleton,
    the keypoint confidence that counts as labelled, and the project's config for ``tasks.json``."""

    detect: Callable[[np.ndarray], list[Instance]]
    skeleton: Skeleton
    kpt_conf: float
    label_config: LabelConfig | None = None
    model_version: str = "fdpose"


def _named_videos(videos: list[Path]) -> tuple[list[str], list[VideoInfo]]:
    names, infos = [], []
    for source in videos:
        base = Path(source) if Path(source).is_dir() else Path(source).parent
        for path in list_videos(source):
            names.append(path.relative_to(base).as_posix())
            infos.append(probe(path))  # every video readable before anything is written
    if len(set(names)) < len(names):
        raise FdposeError("two videos have the same name; pass their common folder instead", item="VIDEOS")
    return names, infos


def frames(
    videos: list[Path],
    out: str | Path,
    *,
    count: int,
    samples: int = 1000,
    seed: int = 0,
    url_prefix: str = DEFAULT_URL_PREFIX,
    poses: FramePoses | None = None,
) -> FramesResult:
    """Pick ``count`` frames per video and write them (see the module doc); with ``poses``, the model's
    poses of each frame are kept (and put in ``tasks.json`` when a label config is given)."""
    if count < 1:
        raise FdposeError(f"--count must be at least 1, got {count}", item="--count")
    names, infos = _named_videos(videos)
    picked: dict[str, list[int]] = {}
    tasks, rows, written = [], [], []
    records: list[ImageRecord] | None = [] if poses is not None else None
    scores: list[float] = []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for info, name in zip(infos, names, strict=True):
            indices, thumbs = thumbnails(info.path, samples)
            picked[name] = select(indices, thumbs, count, seed)
            wanted = set(picked[name])
            for index, image in read_frames(info):
                if index not in wanted:
                    continue
                file_name = frame_name(name, index)
                if not cv2.imwrite(str(tmp / "images" / file_name), image):
                    raise FdposeError("could not write the frame image", path=tmp / "images" / file_name)
                task: dict[str, Any] = {
                    "data": {"image": url_prefix + file_name},
                    "meta": {"video": name, "frame": index},
                }
                if poses is not None and records is not None:
                    found = poses.detect(image)
                    records.append(
                        frame_record(
                            file_name,
                            (image.shape[1], image.shape[0]),
                            [(d.class_id, d.bbox, d.keypoints) for d in found],
                            poses.kpt_conf,
                        )
                    )
                    scores.append(task_score(found))
                    if poses.label_config is not None:
                        task["predictions"] = [
                            task_prediction(
                                records[-1],
                                poses.skeleton,
                                poses.label_config,
                                scores[-1],
                                poses.model_version,
                            )
                        ]
                tasks.append(task)
                rows.append([file_name, name, index])
                written.append(Path(out) / "images" / file_name)
        with open(tmp / "frames.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["image", "video", "frame"], *rows])
        (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
    return FramesResult(Path(out), picked, written, records, scores if poses is not None else None)


def model_poses(model: Path, settings: PredictParams, label_config: Path | None) -> FramePoses:
    """A :class:`FramePoses` running ``model`` with ``settings`` (the params' ``package.predict``)."""
    from pipeline.inference import run_image
    from pipeline.model_io import load_runner, model_version

    runner = load_runner(model)
    imgsz = runner.fixed_imgsz or runner.meta.imgsz
    config = None
    if label_config is not None:
        config = parse_label_config(Path(label_config).read_text(encoding="utf-8"), label_config)

    def detect(image: np.ndarray) -> list[Instance]:
        return run_image(runner, image, imgsz, settings.conf, settings.iou, settings.max_det)

    return FramePoses(
        detect, runner.meta.skeleton, settings.kpt_conf, config, model_version(model, runner.kind)
    )


@click.command("frames")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--count", type=int, default=20, show_default=True, help="Frames to pick per video.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (replaced atomically): images/, frames.csv, tasks.json.")
@click.option("--samples", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Most frames per video considered (evenly spaced).")
@click.option("--seed", type=int, default=0, show_default=True, help="k-means seed.")
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="Pre-annotate the frames with this model (package, .onnx, .pt).")
@click.option("--kpt-conf", type=float, default=None,
              help="With --model: keypoints at least this confident are pre-annotated "
                   "(params: package.predict.kpt_conf).")
@task_options("With --model: the project's labelling config, so tasks.json carries the pre-annotations.")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (package.predict).")
def frames_command(
    videos: tuple[Path, ...],
    count: int,
    out: Path,
    samples: int,
    seed: int,
    url_prefix: str,
    model: Path | None,
    kpt_conf: float | None,
    label_config: Path | None,
    to_label_studio: str | None,
    project: int | None,
    params_path: Path,
) -> None:
    """Pick diverse video frames worth labelling (k-means), with a Label Studio import file."""
    if (to_label_studio is None) != (project is None):
        raise FdposeError("--to-label-studio and --project go together", item="options")
    _named_videos(list(videos))  # unusable videos fail before a model loads
    poses = None
    if model is not None:
        settings = overridden(load_section("package", params_path).predict, kpt_conf=kpt_conf)
        poses = model_poses(model, settings, label_config)
    result = frames(
        list(videos), out, count=count, samples=samples, seed=seed, url_prefix=url_prefix, poses=poses
    )
    click.echo(result.summary())
    if to_label_studio is not None:
        click.echo(
            send_frames(
                to_label_studio,
                int(project),
                result.images,
                result.records,
                poses.skeleton if poses else None,
                result.scores,
                poses.model_version if poses else "fdpose",
            )
        )
