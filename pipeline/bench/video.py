"""``fdpose bench video``: tracking, smoothing and outlier ranking on the generated clip, and their cost.

The clip is :mod:`pipeline.video.clip` (figures crossing, one turning back, entering and leaving, four
corrupted frames), rendered into a temporary folder from ``--seed``; the model is the one given
(the demo-trained one, for the figures the README quotes). Printed:

- tracking: identity switches and fragmentations per true figure (target: at most one switch per
  crossing), coverage of the true figure-frames by a track;
- smoothing: mean keypoint error against the truth, the model's and smoothed (target: lower after),
  and the lag at the turn, raw and smoothed (:mod:`pipeline.video.quality`);
- outliers: how many corrupted frames rank in the top 2 x their number (target: all);
- speed: frames per second of decode + predict against decode + predict + track + smooth, the two
  passes alternated ``--repeats`` times in this one run, best of each (target: at most 10% slower),
  and the time spent inside tracking and smoothing alone (timed around them in the loop), which a
  busy shared machine blurs less than the difference of two end-to-end timings.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from pipeline.inference import run_image
from pipeline.model_io import load_runner
from pipeline.video.clip import demo_video, read_truth
from pipeline.video.outliers import Row, pick, score_frames
from pipeline.video.quality import smoothing_figures, tracking_figures
from pipeline.video.smooth import SmoothParams
from pipeline.video.track import PoseTracker, TrackedPose
from pipeline.video.videoio import probe, read_frames

MIN_GAP = 3  # frames: outlier picks' temporal diversity in the bench


@dataclass
class VideoBench:
    frames: int
    crossings: int
    switches: dict[int, int]
    fragmentations: dict[int, int]
    coverage: float
    raw_error_px: float
    smoothed_error_px: float
    error_reduction: float
    raw_lag_frames: float
    smoothed_lag_frames: float
    corrupted: list[int]
    top: list[int]
    corrupted_in_top: int
    predict_fps: float
    tracked_fps: float
    tracking_share: float  # seconds inside track + smooth per second of plain decode + predict

    @property
    def overhead(self) -> float:
        return self.predict_fps / self.tracked_fps - 1


def run_pass(
    runner: Any, clip: Path, imgsz: int, conf: float, tracker: str | None, smoothing: SmoothParams | None
) -> tuple[float, float, list[list[TrackedPose]]]:
    """Seconds for decode + predict (+ track + smooth when ``tracker``) over the clip, the seconds of
    those spent in tracking and smoothing alone, and the tracks."""
    info = probe(clip)
    track = PoseTracker(tracker, info.fps, runner.meta.skeleton.num_keypoints, smoothing) if tracker else None
    frames: list[list[TrackedPose]] = []
    in_tracker = 0.0
    start = time.perf_counter()
    for index, image in read_frames(info):
        found = run_image(runner, image, imgsz, conf, 0.7, 100)
        if track is not None:
            begin = time.perf_counter()
            frames.append(track.update(index, found, image))
            in_tracker += time.perf_counter() - begin
    return time.perf_counter() - start, in_tracker, frames


def bench_video(
    model: Path,
    seed: int,
    frames: int,
    imgsz: int | None,
    conf: float,
    tracker: str,
    smoothing: SmoothParams,
    repeats: int,
) -> VideoBench:
    runner = load_runner(model)
    imgsz = imgsz or runner.meta.imgsz
    with tempfile.TemporaryDirectory(prefix="fdpose-bench-video-") as tmp:
        demo_video(Path(tmp) / "clip", seed=seed, frames=frames)
        truth = read_truth(Path(tmp) / "clip")
        clip = Path(tmp) / "clip" / "clip.avi"
        run_pass(runner, clip, imgsz, conf, None, None)  # warm-up: first-call allocations
        plain, tracked, in_tracker, poses = [], [], [], []
        for _ in range(repeats):
            plain.append(run_pass(runner, clip, imgsz, conf, None, None)[0])
            seconds, inside, poses = run_pass(runner, clip, imgsz, conf, tracker, smoothing)
            tracked.append(seconds)
            in_tracker.append(inside)
    moves = tracking_figures(poses, truth)
    smooth = smoothing_figures(poses, truth, smoothing.kpt_conf)
    rows = [Row("clip", p.frame, p.track_id, p.box, p.raw, p.smoothed) for frame in poses for p in frame]
    corrupted = [c["frame"] for c in truth["corrupted"]]
    scores = score_frames(
        rows, {"clip": (len(truth["frames"]), (truth["width"], truth["height"]))}, smoothing.kpt_conf
    )
    top = [s.frame for s in pick(scores, 2 * len(corrupted), MIN_GAP)]
    return VideoBench(
        len(truth["frames"]),
        moves.crossings,
        moves.switches,
        moves.fragmentations,
        moves.coverage,
        smooth.raw_error,
        smooth.smoothed_error,
        smooth.reduction,
        smooth.raw_lag,
        smooth.smoothed_lag,
        corrupted,
        top,
        len(set(corrupted) & set(top)),
        frames / min(plain),
        frames / min(tracked),
        min(in_tracker) / min(plain),
    )


def report(result: VideoBench) -> list[str]:
    switches = sum(result.switches.values())
    return [
        f"tracking: {switches} identity switches for {result.crossings} crossings "
        f"(target <= 1 per crossing): {'met' if switches <= result.crossings else 'NOT met'}",
        "  per true figure: "
        + ", ".join(
            f"#{k} {v} switches {result.fragmentations[k]} fragmentations"
            for k, v in sorted(result.switches.items())
        ),
        f"  coverage of true figure-frames by a track: {result.coverage:.1%}",
        f"smoothing: keypoint error {result.raw_error_px:.2f} px raw -> {result.smoothed_error_px:.2f} px "
        f"smoothed ({result.error_reduction:.1%} lower); lag at the turn {result.raw_lag_frames:.1f} "
        f"frames raw, {result.smoothed_lag_frames:.1f} smoothed",
        f"outliers: {result.corrupted_in_top} of {len(result.corrupted)} corrupted frames {result.corrupted} "
        f"in the top {len(result.top)} {result.top} (target: all): "
        f"{'met' if result.corrupted_in_top == len(result.corrupted) else 'NOT met'}",
        f"speed: predict {result.predict_fps:.1f} fps, predict+track+smooth {result.tracked_fps:.1f} fps: "
        f"{result.overhead:+.1%} end to end (target <= 10%): "
        f"{'met' if result.overhead <= 0.10 else 'NOT met'}; "
        f"time inside track + smooth alone: +{result.tracking_share:.1%} of plain predict",
    ]


@click.command("video")
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A package, model.safetensors/.onnx or .pt (the demo-trained one for the README's figures).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Clip seed.")
@click.option("--frames", type=click.IntRange(min=30), default=90, show_default=True)
@click.option("--imgsz", type=int, default=None, help="Input size (default: the model's).")
@click.option("--conf", type=float, default=0.25, show_default=True)
@click.option("--tracker", default="bytetrack", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the figures here."
)
def command(
    model: Path,
    seed: int,
    frames: int,
    imgsz: int | None,
    conf: float,
    tracker: str,
    repeats: int,
    json_path: str | None,
) -> None:
    """Tracking, smoothing and outlier ranking on the demo clip vs its ground truth; speed."""
    result = bench_video(model, seed, frames, imgsz, conf, tracker, SmoothParams(), repeats)
    click.echo(f"video: demo clip seed {seed}, {result.frames} frames, model {model}")
    for line in report(result):
        click.echo(line)
    if json_path:
        Path(json_path).write_text(
            json.dumps({**asdict(result), "overhead": result.overhead}, indent=2) + "\n", encoding="utf-8"
        )
        click.echo(f"wrote {json_path}")
