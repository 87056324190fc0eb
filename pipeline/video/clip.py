"""``fdpose demo-video``: a short clip of the demo's stick figures with per-frame ground truth.

Three figures (:mod:`pipeline.figures`, the demo's drawing) move along known smooth trajectories over a
fixed background: figure 1 walks left to right, figure 2 right to left in front of it (they cross and
figure 2 hides figure 1), figure 3 enters from the right, turns back sharply at a known frame and
leaves the way it came. A few frames are corrupted on purpose: heavy blur over the whole frame, or a
figure drawn wrongly (upside down in its own box). Those are the frames a user would want back in
Label Studio; the ground truth keeps the figure as it should be and says which frames are corrupted.

Written to ``--out``: ``clip.avi`` (Motion-JPEG, every frame independent), ``truth.json`` (per frame the
figures' boxes and COCO keypoints with visibility, the corrupted frames, the crossings and turns) and
``params.json``. Deterministic from the seed: each frame's grain comes from its own generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from pipeline.errors import FdposeError
from pipeline.figures import background, draw_figure, extent, labelled_figure, sample_pose
from pipeline.io import atomic_dir

CLIP_VERSION = 1  # bump when the drawing changes
FOURCC = "MJPG"
# Frame fractions (of the clip's length) at which the corruptions happen, and their kind.
CORRUPTIONS = ((0.17, "blur"), (0.37, "wrong"), (0.63, "blur"), (0.86, "wrong"))
TURN_AT = 0.5  # figure 3 turns back at this fraction of the clip


@dataclass
class Actor:
    """One figure of the clip: its pose in body units, size, depth order and trajectory."""

    identity: int  # 1-based, as in the ground truth
    local: np.ndarray  # (17, 2) pose in body units, pelvis at the origin
    head_radius: float
    height: float  # figure height in pixels
    path: Any  # t in [0, 1] -> pelvis position (x, y) in pixels

    def points(self, t: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Pixel keypoints, unclipped box and the unit length at clip time ``t``."""
        low, high = extent(self.local, self.head_radius)
        unit = self.height / (high - low)[1]
        pelvis = np.asarray(self.path(t), float)
        points = self.local * unit + pelvis
        return points, np.concatenate([low * unit + pelvis, high * unit + pelvis]), unit


def _actors(seed: int, width: int, height: int) -> list[Actor]:
    rng = np.random.default_rng([seed, 0, 1])
    poses = [sample_pose(rng) for _ in range(3)]
    tall = 0.52 * height
    ground = 0.62 * height  # pelvis height of a walking figure

    def walk_right(t: float) -> tuple[float, float]:
        return 0.12 * width + 0.76 * width * t, ground + 4 * np.sin(2 * np.pi * 2 * t)

    def walk_left(t: float) -> tuple[float, float]:
        return 0.88 * width - 0.76 * width * t, ground + 6 + 4 * np.sin(2 * np.pi * 2 * t + 1)

    def enter_turn_leave(t: float) -> tuple[float, float]:
        # From beyond the right edge to 0.75 W at TURN_AT, then back out: a sharp reversal.
        reach = 1.0 - abs(t - TURN_AT) / TURN_AT
        return 1.2 * width - 0.45 * width * reach, 0.55 * height + 3 * np.cos(2 * np.pi * t)

    return [
        Actor(1, *poses[0], tall, walk_right),
        Actor(2, *poses[1], tall * 1.05, walk_left),
        Actor(3, *poses[2], tall * 0.9, enter_turn_leave),
    ]


def _figure_mask(
    points: np.ndarray, unit: float, head_radius: float, shape: tuple[int, int], colours: np.random.Generator
) -> np.ndarray:
    """Where a figure's drawing covers the frame (drawn once more on black)."""
    blank = np.zeros((*shape, 3), np.uint8)
    draw_figure(blank, colours, points, unit, head_radius)
    return blank.max(axis=2) > 0


def render_frame(
    seed: int,
    index: int,
    frames: int,
    width: int,
    height: int,
    base: np.ndarray,
    actors: list[Actor],
    corrupted: dict[int, str],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frame ``index``: pixels (BGR) and the ground truth of the figures in it (drawn in identity order,
    so a later figure hides an earlier one)."""
    t = index / max(1, frames - 1)
    canvas = base.copy()
    drawn: list[tuple[Actor, np.ndarray, np.ndarray, np.ndarray]] = []
    wrong = corrupted.get(index) == "wrong"
    for actor in actors:
        points, box, unit = actor.points(t)
        colours = [np.random.default_rng([seed, 2, actor.identity]) for _ in range(2)]  # same each frame
        shown = points
        if wrong and actor is min(actors, key=lambda a: abs(a.path(t)[0] - width / 2)):
            # Upside down within its own box: a figure no labelled image shows.
            shown = points.copy()
            shown[:, 1] = box[1] + box[3] - points[:, 1]
        draw_figure(canvas, colours[0], shown, unit, actor.head_radius)
        mask = _figure_mask(shown, unit, actor.head_radius, (height, width), colours[1])
        drawn.append((actor, points, box, mask))
    truth = []
    for number, (actor, points, box, _) in enumerate(drawn):
        figure = labelled_figure(points, box, [mask for *_, mask in drawn[number + 1 :]], width, height)
        if figure is not None:
            truth.append(
                {
                    "id": actor.identity,
                    "box": [round(float(v), 3) for v in figure.box],
                    "keypoints": [round(float(v), 3) for v in figure.keypoints.ravel()],
                }
            )
    grain = np.random.default_rng([seed, 3, index]).normal(0, 2.0, canvas.shape)
    canvas = np.clip(canvas + grain, 0, 255).astype(np.uint8)
    if corrupted.get(index) == "blur":
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=max(width, height) / 40)
    return canvas, truth


def _events(actors: list[Actor], frames: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frames where two figures' pelvis x order flips (crossings) and where figure 3 turns."""
    xs = np.array([[actor.path(i / max(1, frames - 1))[0] for actor in actors] for i in range(frames)])
    crossings = []
    for a in range(len(actors)):
        for b in range(a + 1, len(actors)):
            side = np.where(xs[:, a] >= xs[:, b], 1, -1)  # level counts as "not yet crossed"
            for i in np.flatnonzero(side[1:] != side[:-1]):
                crossings.append({"frame": int(i + 1), "ids": [actors[a].identity, actors[b].identity]})
    turns = [{"frame": int(round(TURN_AT * (frames - 1))), "id": 3, "axis": "x"}]
    return sorted(crossings, key=lambda c: c["frame"]), turns


def corrupted_frames(frames: int) -> dict[int, str]:
    """Frame index -> ``blur`` or ``wrong`` for a clip of ``frames`` frames."""
    return {int(round(fraction * (frames - 1))): kind for fraction, kind in CORRUPTIONS}


@dataclass
class ClipResult:
    out: Path
    frames: int
    figure_frames: int
    corrupted: int

    def summary(self) -> str:
        return (
            f"wrote {self.out / 'clip.avi'}: {self.frames} frames, {self.figure_frames} figure-frames, "
            f"{self.corrupted} corrupted; ground truth in {self.out / 'truth.json'}"
        )


def demo_video(
    out: str | Path,
    *,
    seed: int = 0,
    frames: int = 90,
    width: int = 256,
    height: int = 192,
    fps: float = 15.0,
) -> ClipResult:
    """Render the clip into ``out`` (replaced atomically): ``clip.avi``, ``truth.json``, ``params.json``."""
    if not 30 <= frames <= 10000:
        raise FdposeError(f"--frames must be between 30 and 10000, got {frames}", item="--frames")
    if not (64 <= width <= 2048 and 64 <= height <= 2048):
        raise FdposeError(
            f"--width/--height must be between 64 and 2048, got {width}x{height}", item="--size"
        )
    actors = _actors(seed, width, height)
    base = background(np.random.default_rng([seed, 0, 0]), width, height)
    corrupted = corrupted_frames(frames)
    crossings, turns = _events(actors, frames)
    records, figure_frames = [], 0
    out = Path(out)
    with atomic_dir(out) as tmp:
        writer = cv2.VideoWriter(str(tmp / "clip.avi"), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
        if not writer.isOpened():
            raise FdposeError(f"OpenCV cannot write {FOURCC} video here", path=out)
        try:
            for index in range(frames):
                pixels, truth = render_frame(seed, index, frames, width, height, base, actors, corrupted)
                writer.write(pixels)
                records.append({"frame": index, "figures": truth})
                figure_frames += len(truth)
        finally:
            writer.release()
        truth_json = {
            "fps": fps,
            "width": width,
            "height": height,
            "frames": records,
            "corrupted": [{"frame": i, "kind": k} for i, k in sorted(corrupted.items())],
            "crossings": crossings,
            "turns": turns,
        }
        (tmp / "truth.json").write_text(json.dumps(truth_json) + "\n", encoding="utf-8")
        params = {
            "clip_version": CLIP_VERSION,
            "seed": seed,
            "frames": frames,
            "width": width,
            "height": height,
            "fps": fps,
        }
        (tmp / "params.json").write_text(
            json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return ClipResult(out, frames, figure_frames, len(corrupted))


def read_truth(path: str | Path) -> dict[str, Any]:
    """``truth.json`` of a generated clip (the file or its folder)."""
    from pipeline.io import read_json

    path = Path(path)
    if path.is_dir():
        path = path / "truth.json"
    truth = read_json(path, "clip ground truth")
    if not isinstance(truth, dict) or "frames" not in truth:
        raise FdposeError("not a demo-video ground truth (no 'frames')", path=path)
    return truth


@click.command("demo-video")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/raw/demo-video"),
    show_default=True,
    help="Folder to write (replaced atomically).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=int, default=90, show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--height", type=int, default=192, show_default=True)
@click.option("--fps", type=float, default=15.0, show_default=True)
def demo_video_command(out: Path, seed: int, frames: int, width: int, height: int, fps: float) -> None:
    """Render a demo clip: figures crossing, turning, entering and leaving; corrupted frames; ground truth."""
    click.echo(demo_video(out, seed=seed, frames=frames, width=width, height=height, fps=fps).summary())
