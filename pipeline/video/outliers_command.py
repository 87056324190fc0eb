"""``fdpose outliers``: the frames of a tracked video where the model is most likely wrong, for correction.

Reads the folder ``fdpose predict VIDEO --track`` wrote (``tracks.csv``, ``images.json``), scores every
frame (:mod:`pipeline.video.outliers`), picks the top ``--count`` with ``--min-gap`` frames between picks
of one video, and writes to ``--out`` (replaced atomically): ``images/<video>_f<frame>.png``,
``outliers.csv`` (rank, video, frame, score, reasons) and ``tasks.json``, a Label Studio import file
whose tasks carry the model's keypoints of that frame as a prediction (pre-annotation) when
``--label-config`` names the project's labelling config (keypoints at least ``--kpt-conf`` confident;
the prediction's score is the frame's certainty, ``1 / (1 + score)``, so sorting by it ascending shows
the likeliest errors first). ``--to-label-studio URL --project P`` also creates the tasks on the server
(images uploaded) with those pre-annotations (:mod:`pipeline.video.send`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2

from pipeline.dataset import ImageRecord
from pipeline.errors import FdposeError
from pipeline.io import atomic_dir, read_json
from pipeline.labelstudio.config import parse_label_config
from pipeline.skeleton import Skeleton
from pipeline.video.frames import frame_name
from pipeline.video.outliers import FrameScore, Row, pick, read_track_table, score_frames
from pipeline.video.send import DEFAULT_URL_PREFIX, frame_record, send_frames, task_options, task_prediction
from pipeline.video.videoio import probe, read_frames

MODEL_VERSION = "fdpose-outliers"


def _videos(images: dict[str, Any], source: Path) -> tuple[dict[str, tuple[int, tuple[int, int]]], Path]:
    """Frame count and size per video, and the folder the video names are relative to."""
    counts: dict[str, tuple[int, tuple[int, int]]] = {}
    try:
        for image in images["images"]:
            count, _ = counts.get(image["file_name"], (0, None))
            counts[image["file_name"]] = (
                max(count, int(image["frame_index"]) + 1),
                (int(image["width"]), int(image["height"])),
            )
        base = Path(images["base"])
    except (KeyError, TypeError, ValueError) as error:
        raise FdposeError(f"not the images.json of fdpose predict --track ({error!r})", path=source) from None
    return counts, base


def certainty(choice: FrameScore) -> float:
    """A prediction score that sorts the likeliest errors first (ascending), in (0, 1]."""
    return 1 / (1 + max(choice.score, 0.0))


def _skeleton(images: dict[str, Any]) -> Skeleton:
    category = images["categories"][0]
    return Skeleton(
        keypoint_names=list(category["keypoints"]),
        class_names=[c["name"] for c in images["categories"]],
        edges=[(a - 1, b - 1) for a, b in category.get("skeleton", [])],
    )


@dataclass
class OutliersResult:
    out: Path
    picked: list[FrameScore]
    records: list[ImageRecord]  # the model's poses of each picked frame, as pre-annotations
    skeleton: Skeleton

    def summary(self) -> str:
        listed = ", ".join(f"{p.video}#{p.frame} ({p.score:.1f})" for p in self.picked[:10])
        return f"{len(self.picked)} outlier frames -> {self.out} (tasks.json): {listed}"


def outliers(
    tracked: str | Path,
    out: str | Path,
    *,
    count: int = 20,
    min_gap: int = 3,
    kpt_conf: float = 0.5,
    label_config: Path | None = None,
    url_prefix: str = DEFAULT_URL_PREFIX,
) -> OutliersResult:
    """Score, pick and write the outlier frames of a ``predict --track`` folder (see the module doc)."""
    tracked = Path(tracked)
    if count < 1:
        raise FdposeError(f"--count must be at least 1, got {count}", item="--count")
    rows, _ = read_track_table(tracked / "tracks.csv")
    images = read_json(tracked / "images.json", "predict --track images")
    videos, base = _videos(images, tracked / "images.json")
    config = None
    if label_config is not None:
        config = parse_label_config(Path(label_config).read_text(encoding="utf-8"), label_config)
    picked = pick(score_frames(rows, videos, kpt_conf), count, min_gap)
    infos = {video: probe(base / video) for video in {p.video for p in picked}}  # all readable first
    by_frame: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        by_frame.setdefault((row.video, row.frame), []).append(row)
    tasks: list[dict[str, Any]] = []
    records: list[ImageRecord] = []
    skeleton = _skeleton(images)
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for video, info in sorted(infos.items()):
            wanted = {p.frame: p for p in picked if p.video == video}
            for index, image in read_frames(info):
                if index in wanted:
                    name = frame_name(video, index)
                    cv2.imwrite(str(tmp / "images" / name), image)
        for rank, choice in enumerate(picked, start=1):
            name = frame_name(choice.video, choice.frame)
            task: dict[str, Any] = {
                "data": {"image": url_prefix + name},
                "meta": {
                    "video": choice.video,
                    "frame": choice.frame,
                    "rank": rank,
                    "score": round(choice.score, 3),
                    "why": choice.why(),
                },
            }
            poses = [(0, r.box, r.raw) for r in by_frame.get((choice.video, choice.frame), [])]
            records.append(frame_record(name, videos[choice.video][1], poses, kpt_conf))
            if config is not None:
                task["predictions"] = [
                    task_prediction(records[-1], skeleton, config, certainty(choice), MODEL_VERSION)
                ]
            tasks.append(task)
        with open(tmp / "outliers.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["rank", "image", "video", "frame", "score", "why"])
            writer.writerows(
                [rank, frame_name(p.video, p.frame), p.video, p.frame, round(p.score, 3), p.why()]
                for rank, p in enumerate(picked, start=1)
            )
        (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
    return OutliersResult(Path(out), picked, records, skeleton)


@click.command("outliers")
@click.argument("tracked", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--count", type=int, default=20, show_default=True, help="Frames to pick.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (replaced atomically): images/, outliers.csv, tasks.json.")
@click.option("--min-gap", type=click.IntRange(min=0), default=3, show_default=True,
              help="Frames between two picks of one video.")
@click.option("--kpt-conf", type=float, default=0.5, show_default=True,
              help="Keypoints at least this confident count as seen and are pre-annotated.")
@task_options("The Label Studio project's labelling config: tasks.json then carries pre-annotations.")
def outliers_command(tracked: Path, count: int, out: Path, min_gap: int, kpt_conf: float,
                     label_config: Path | None, url_prefix: str, to_label_studio: str | None,
                     project: int | None) -> None:
    """Rank tracked video frames by how likely the model is wrong there; write the top ones as tasks."""
    if (to_label_studio is None) != (project is None):
        raise FdposeError("--to-label-studio and --project go together", item="options")
    result = outliers(tracked, out, count=count, min_gap=min_gap, kpt_conf=kpt_conf,
                      label_config=label_config, url_prefix=url_prefix)
    click.echo(result.summary())
    if to_label_studio is not None:
        images = [out / "images" / frame_name(p.video, p.frame) for p in result.picked]
        click.echo(send_frames(to_label_studio, int(project), images, result.records, result.skeleton,
                               [certainty(p) for p in result.picked], MODEL_VERSION))
