"""``fdpose outliers``: the frames of a tracked video where the model is most likely wrong, for correction.

Reads the folder ``fdpose predict VIDEO --track`` wrote (``tracks.csv``, ``images.json``), scores every
frame (:mod:`pipeline.video.outliers`), picks the top ``--count`` with ``--min-gap`` frames between picks
of one video, and writes to ``--out`` (replaced atomically): ``images/<video>_f<frame>.png``,
``outliers.csv`` (rank, video, frame, score, reasons) and ``tasks.json``, a Label Studio import file
whose tasks carry the model's keypoints of that frame as a prediction (pre-annotation) when
``--label-config`` names the project's labelling config (keypoints at least ``--kpt-conf`` confident;
the prediction's score is the frame's certainty, ``1 / (1 + score)``, so sorting by it ascending shows
the likeliest errors first).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from pipeline.dataset import ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.labelstudio import parse_label_config, prediction_result
from pipeline.io import atomic_dir, read_json
from pipeline.skeleton import Skeleton
from pipeline.video.frames import frame_name
from pipeline.video.outliers import FrameScore, Row, pick, read_track_table, score_frames
from pipeline.video.videoio import probe, read_frames


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


def _skeleton(images: dict[str, Any]) -> Skeleton:
    category = images["categories"][0]
    return Skeleton(
        keypoint_names=list(category["keypoints"]),
        class_names=[c["name"] for c in images["categories"]],
        edges=[(a - 1, b - 1) for a, b in category.get("skeleton", [])],
    )


def _prediction(
    rows: list[Row],
    skeleton: Skeleton,
    config: Any,
    size: tuple[int, int],
    name: str,
    kpt_conf: float,
    score: float,
) -> dict[str, Any]:
    instances = []
    for row in rows:
        keypoints = row.raw.copy()
        keypoints[:, 2] = np.where(keypoints[:, 2] >= kpt_conf, 2, 0)
        instances.append(Instance(0, row.box.copy(), keypoints))
    record = ImageRecord(Path(name), name, size[0], size[1], instances)
    return {
        "model_version": "fdpose-track",
        "score": round(1 / (1 + score), 6),
        "result": prediction_result(record, skeleton, config),
    }


@dataclass
class OutliersResult:
    out: Path
    picked: list[FrameScore]

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
    url_prefix: str = "/data/local-files/?d=images/",
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
            if config is not None:
                task["predictions"] = [
                    _prediction(
                        by_frame.get((choice.video, choice.frame), []),
                        _skeleton(images),
                        config,
                        videos[choice.video][1],
                        name,
                        kpt_conf,
                        choice.score,
                    )
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
    return OutliersResult(Path(out), picked)


@click.command("outliers")
@click.argument("tracked", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--count", type=int, default=20, show_default=True, help="Frames to pick.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write (replaced atomically): images/, outliers.csv, tasks.json.",
)
@click.option(
    "--min-gap",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Frames between two picks of one video.",
)
@click.option(
    "--kpt-conf",
    type=float,
    default=0.5,
    show_default=True,
    help="Keypoints at least this confident count as seen and are pre-annotated.",
)
@click.option(
    "--label-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The Label Studio project's labelling config: tasks.json then carries pre-annotations.",
)
@click.option(
    "--url-prefix",
    default="/data/local-files/?d=images/",
    show_default=True,
    help="tasks.json data.image = this + the image name.",
)
def outliers_command(
    tracked: Path,
    count: int,
    out: Path,
    min_gap: int,
    kpt_conf: float,
    label_config: Path | None,
    url_prefix: str,
) -> None:
    """Rank tracked video frames by how likely the model is wrong there; write the top ones as tasks."""
    click.echo(
        outliers(
            tracked,
            out,
            count=count,
            min_gap=min_gap,
            kpt_conf=kpt_conf,
            label_config=label_config,
            url_prefix=url_prefix,
        ).summary()
    )
