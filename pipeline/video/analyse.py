"""``fdpose predict VIDEO --track``: poses on whole videos, linked into tracks and smoothed per track.

For each video (a file, or every video in a folder): every frame through the one inference path
(:func:`pipeline.inference.run_image`), the detections linked by an ultralytics tracker and the keypoints
smoothed per track (:mod:`pipeline.video.track`). Written to ``--out`` (replaced atomically):

- ``tracks.csv`` (and ``tracks.parquet``, written with polars): one row per frame and track: video, frame,
  time, track id, class, score, box, then per keypoint the smoothed ``x``/``y``, the model's confidence
  ``conf`` (kept as is) and the model's own ``raw_x``/``raw_y``;
- ``predictions.json``: COCO results (smoothed keypoints) with a ``track_id``; ``images.json``: the COCO
  images (one per frame: ``file_name`` the video, ``frame_index``) and categories;
- ``drawn/<video>.mp4`` (the video's name without its suffix): the video with skeletons, boxes and
  track ids;
- ``summary.json``: per video frames, tracks, detections and anything skipped or cut short.

A single video that cannot be read is an error; in a folder it is skipped and listed (as predict
skips unreadable images). The header of each video is checked before anything is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.formats.coco_results import coco_result
from pipeline.inference import ModelMeta, Runner, run_image
from pipeline.io import atomic_dir
from pipeline.video.smooth import SmoothParams
from pipeline.video.track import PoseTracker, TrackedPose
from pipeline.video.videoio import VideoInfo, VideoWriter, list_videos, probe, read_frames

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
]


@dataclass
class TrackSettings:
    """What a tracked prediction runs with (the detection settings come from ``package.predict``)."""

    imgsz: int
    conf: float
    iou: float
    max_det: int
    kpt_conf: float
    tracker: str = "bytetrack"
    smoothing: SmoothParams | None = field(default_factory=SmoothParams)


def track_colour(track_id: int) -> tuple[int, int, int]:
    return PALETTE[track_id % len(PALETTE)]


def draw_tracks(image: np.ndarray, poses: list[TrackedPose], meta: ModelMeta, kpt_conf: float) -> np.ndarray:
    """Skeletons (smoothed keypoints at least ``kpt_conf`` confident), boxes and ``#id`` labels."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for pose in poses:
        colour = track_colour(pose.track_id)
        x0, y0, x1, y1 = (int(round(v)) for v in pose.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 1)
        cv2.putText(
            canvas,
            f"#{pose.track_id}",
            (x0, max(y0 - 3, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            colour,
            1,
            cv2.LINE_AA,
        )
        visible = pose.smoothed[:, 2] >= kpt_conf
        points = [(int(round(x)), int(round(y))) for x, y in pose.smoothed[:, :2]]
        for a, b in meta.skeleton.edges:
            if visible[a] and visible[b]:
                cv2.line(canvas, points[a], points[b], colour, thickness, cv2.LINE_AA)
        for index, point in enumerate(points):
            if visible[index]:
                cv2.circle(canvas, point, thickness + 1, colour, -1, cv2.LINE_AA)
    return canvas


def table_columns(meta: ModelMeta) -> list[str]:
    columns = ["video", "frame", "time_s", "track_id", "class_id", "score", "x0", "y0", "x1", "y1"]
    for name in meta.skeleton.keypoint_names:
        columns += [f"{name}_x", f"{name}_y", f"{name}_conf", f"{name}_raw_x", f"{name}_raw_y"]
    return columns


def table_row(video: str, fps: float, pose: TrackedPose) -> list[Any]:
    row: list[Any] = [
        video,
        pose.frame,
        round(pose.frame / fps, 4),
        pose.track_id,
        pose.class_id,
        round(pose.score, 5),
        *(round(float(v), 2) for v in pose.box),
    ]
    for (x, y, conf), (raw_x, raw_y, _) in zip(pose.smoothed, pose.raw, strict=False):
        row += [
            round(float(x), 2),
            round(float(y), 2),
            round(float(conf), 5),
            round(float(raw_x), 2),
            round(float(raw_y), 2),
        ]
    return row


@dataclass
class VideoSummary:
    video: str
    frames: int
    fps: float
    tracks: int
    detections: int
    stated_frames: int

    def warning(self) -> str | None:
        """A video that stopped decoding before the frame count its header states."""
        if self.stated_frames > self.frames:
            return (
                f"{self.video}: decoded {self.frames} of the {self.stated_frames} frames its header states "
                "(damaged or truncated); the rest is not analysed"
            )
        return None


def track_video(
    runner: Runner,
    info: VideoInfo,
    name: str,
    settings: TrackSettings,
    drawn: Path | None,
    image_ids: list[dict[str, Any]],
    results: list[dict[str, Any]],
    rows: list[list[Any]],
    progress: Any = None,
) -> VideoSummary:
    """Run, track and smooth one video, appending its COCO images/results and table rows."""
    meta = runner.meta
    tracker = PoseTracker(settings.tracker, info.fps, meta.skeleton.num_keypoints, settings.smoothing)
    writer = VideoWriter(drawn, info.fps, info.width, info.height) if drawn is not None else None
    track_ids: set[int] = set()
    frames = detections = 0
    try:
        for index, image in read_frames(info):
            found = run_image(runner, image, settings.imgsz, settings.conf, settings.iou, settings.max_det)
            poses = tracker.update(index, found, image)
            image_id = len(image_ids) + 1
            image_ids.append(
                {
                    "id": image_id,
                    "file_name": name,
                    "frame_index": index,
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                }
            )
            for pose in poses:
                results.append(track_result(pose, image_id))
                rows.append(table_row(name, info.fps, pose))
                track_ids.add(pose.track_id)
            if writer is not None:
                writer.write(draw_tracks(image, poses, meta, settings.kpt_conf))
            frames, detections = frames + 1, detections + len(found)
            if progress is not None:
                progress.update(1)
    finally:
        if writer is not None:
            writer.close()
    return VideoSummary(name, frames, info.fps, len(track_ids), detections, info.frames)


def track_result(pose: TrackedPose, image_id: int) -> dict[str, Any]:
    """A tracked pose (smoothed keypoints) as a COCO result with its ``track_id``, by the one writer."""
    instance = Instance(pose.class_id, pose.box, pose.smoothed, score=pose.score)
    return {**coco_result(instance, image_id), "track_id": pose.track_id}


@dataclass
class TrackResult:
    out: Path
    videos: list[VideoSummary]
    skipped: list[str]
    warnings: list[str]

    def summary(self) -> str:
        frames = sum(v.frames for v in self.videos)
        tracks = sum(v.tracks for v in self.videos)
        line = (
            f"{len(self.videos)} videos, {frames} frames, {tracks} tracks, "
            f"{sum(v.detections for v in self.videos)} detections -> {self.out}"
        )
        if self.skipped:
            line += f"; skipped {len(self.skipped)} unreadable: {'; '.join(self.skipped)}"
        return "\n".join([*self.warnings, line])


@dataclass
class Sources:
    """The readable videos of a source (probed), the unreadable ones skipped, and the folder names are
    relative to."""

    source: Path
    infos: list[VideoInfo]
    skipped: list[str]
    base: Path


def check_sources(source: str | Path) -> Sources:
    """Probe every video before a model is loaded or anything written: one bad video alone is an error,
    in a folder it is skipped and listed."""
    source = Path(source)
    single = not source.is_dir()
    infos, skipped = [], []
    for path in list_videos(source):
        try:
            infos.append(probe(path))
        except FdposeError as error:
            if single:
                raise
            skipped.append(str(error))
    if not infos:
        raise FdposeError(f"no readable video ({'; '.join(skipped)})", path=source)
    return Sources(source, infos, skipped, source if source.is_dir() else source.parent)


def write_table(path_csv: Path, columns: list[str], rows: list[list[Any]]) -> None:
    """The track table as CSV, and as Parquet beside it (polars, which ultralytics already brings)."""
    import csv

    import polars

    with open(path_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    frame = polars.DataFrame(rows, schema=columns, orient="row")
    frame.write_parquet(path_csv.with_suffix(".parquet"))


def predict_tracks(
    runner: Runner,
    sources: Sources,
    out: str | Path,
    settings: TrackSettings,
    model: str | Path,
    categories: list[dict[str, Any]],
) -> TrackResult:
    """Tracked, smoothed poses on the videos of :func:`check_sources`, written to ``out`` (see the module
    doc); ``categories`` are the COCO categories ``images.json`` carries."""
    from tqdm import tqdm

    source, infos, skipped, base = sources.source, sources.infos, sources.skipped, sources.base
    images: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    summaries = []
    with (
        atomic_dir(out) as tmp,
        tqdm(
            total=sum(max(i.frames, 1) for i in infos), unit="frame", desc="predict --track", leave=False
        ) as progress,
    ):
        names = [info.path.relative_to(base).as_posix() for info in infos]
        stems = [Path(name).with_suffix("").as_posix() for name in names]
        for info, name, stem in zip(infos, names, stems, strict=True):
            # drawn/<video without its suffix>.mp4; the whole name when a.avi and a.mp4 both exist
            drawn = tmp / "drawn" / (f"{stem}.mp4" if stems.count(stem) == 1 else f"{name}.mp4")
            drawn.parent.mkdir(parents=True, exist_ok=True)
            summaries.append(
                track_video(runner, info, name, settings, drawn, images, results, rows, progress)
            )
        write_table(tmp / "tracks.csv", table_columns(runner.meta), rows)
        dump = {
            "predictions.json": results,
            "images.json": {
                "images": images,
                "categories": categories,
                "source": str(source),
                "base": str(base.resolve()),
                "model": str(model),
            },
            "summary.json": {
                "videos": [vars(s) for s in summaries],
                "skipped": skipped,
                "settings": {
                    **{k: v for k, v in vars(settings).items() if k != "smoothing"},
                    "smoothing": vars(settings.smoothing) if settings.smoothing else None,
                },
            },
        }
        for file_name, obj in dump.items():
            (tmp / file_name).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
    warnings = [w for w in (s.warning() for s in summaries) if w]
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return TrackResult(Path(out), summaries, skipped, warnings)
