"""Ranking video frames by how likely the model is wrong there (after ``fdpose predict --track``).

Per track and frame, from the track table (raw and smoothed keypoints, confidence, box):

- ``confidence``: one minus the mean keypoint confidence;
- ``jump``: how far the raw keypoints are from the straight line between the track's previous and next
  frames (what its motion explains), mean over keypoints confident in all three, per box height;
- ``residual``: distance between raw and smoothed keypoints, mean over confident ones, per box height.

Each is turned into a robust z-score over its video (distance from the median in units of 1.4826 x
the median absolute deviation), a row scores its largest z, a frame its worst row. Track breaks add
to a frame: a track ending before the video does, or starting after it began, away from the image
border, or a gap inside a track, counts :data:`BREAK_Z` at each frame the figure was missing from
(a blurred frame often has no detection at all, so it has no row to score). The top frames
are then picked greedily, best first, skipping frames within ``min_gap`` frames of one already picked
in the same video (a wrong frame also disturbs its neighbours' jump scores).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import FdposeError

BREAK_Z = 6.0  # a track break weighs as much as a keypoint anomaly 6 robust deviations out
BORDER_FRACTION = 0.02  # a box this close to the image border may leave the frame legitimately
FEATURES = ("confidence", "jump", "residual")


@dataclass
class Row:
    """One track in one frame, as the track table has it."""

    video: str
    frame: int
    track_id: int
    box: np.ndarray  # (4,)
    raw: np.ndarray  # (K, 3) x, y, conf
    smoothed: np.ndarray  # (K, 3)


@dataclass
class FrameScore:
    video: str
    frame: int
    score: float = 0.0
    reasons: dict[str, float] = field(default_factory=dict)  # feature -> its z (or breaks -> count)

    def why(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))


def read_track_table(path: Path) -> tuple[list[Row], list[str]]:
    """The rows of ``tracks.csv`` and its keypoint names; a malformed table is one error."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            names = [c[: -len("_raw_x")] for c in header if c.endswith("_raw_x")]
            at = {c: i for i, c in enumerate(header)}
            rows = []
            for line, values in enumerate(reader, start=2):
                try:
                    number = [
                        float(values[at[f"{n}_{s}"]]) for n in names for s in ("raw_x", "raw_y", "conf")
                    ]
                    smooth = [float(values[at[f"{n}_{s}"]]) for n in names for s in ("x", "y", "conf")]
                    rows.append(
                        Row(
                            values[at["video"]],
                            int(values[at["frame"]]),
                            int(values[at["track_id"]]),
                            np.array([float(values[at[c]]) for c in ("x0", "y0", "x1", "y1")]),
                            np.array(number).reshape(-1, 3),
                            np.array(smooth).reshape(-1, 3),
                        )
                    )
                except (KeyError, IndexError, ValueError) as error:
                    raise FdposeError(f"malformed row ({error!r})", path=path, item=f"line {line}") from None
    except (OSError, StopIteration, UnicodeDecodeError) as error:
        raise FdposeError(f"cannot read the track table ({error!r})", path=path) from None
    if not names:
        raise FdposeError("not a track table of fdpose predict --track (no *_raw_x columns)", path=path)
    return rows, names


def robust_z(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    median = np.median(finite)
    spread = 1.4826 * np.median(np.abs(finite - median))
    spread = max(spread, 1e-3 * max(abs(median), 1e-6), 1e-6)
    return np.where(np.isfinite(values), (values - median) / spread, 0.0)


def _features(track: list[Row], kpt_conf: float) -> np.ndarray:
    """(rows, 3) confidence / jump / residual of one track's rows, sorted by frame; NaN where undefined."""
    out = np.full((len(track), 3), np.nan)
    for i, row in enumerate(track):
        scale = max(row.box[3] - row.box[1], 1.0)
        conf = row.raw[:, 2]
        out[i, 0] = 1 - float(conf.mean())
        sure = conf >= kpt_conf
        if sure.any():
            out[i, 2] = (
                float(np.linalg.norm(row.raw[sure, :2] - row.smoothed[sure, :2], axis=1).mean()) / scale
            )
        if 0 < i < len(track) - 1:
            before, after = track[i - 1], track[i + 1]
            span = after.frame - before.frame
            if span <= 4:
                both = sure & (before.raw[:, 2] >= kpt_conf) & (after.raw[:, 2] >= kpt_conf)
                if both.any():
                    w = (row.frame - before.frame) / span
                    line = (1 - w) * before.raw[both, :2] + w * after.raw[both, :2]
                    out[i, 1] = float(np.linalg.norm(row.raw[both, :2] - line, axis=1).mean()) / scale
    return out


def _near_border(row: Row, size: tuple[int, int]) -> bool:
    width, height = size
    margin = BORDER_FRACTION * max(width, height)
    x0, y0, x1, y1 = row.box
    return x0 <= margin or y0 <= margin or x1 >= width - margin or y1 >= height - margin


def _breaks(track: list[Row], frames: int, size: tuple[int, int]) -> list[int]:
    """Frames at which a track broke: lost (the frame after its last), missing inside it, or started late."""
    events = []
    first, last = track[0], track[-1]
    if first.frame > 0 and not _near_border(first, size):
        events.append(first.frame)
    if last.frame < frames - 1 and not _near_border(last, size):
        events.append(last.frame + 1)
    for before, after in zip(track, track[1:], strict=False):
        events += range(before.frame + 1, after.frame)  # the frames it was missing from
    return events


def score_frames(
    rows: list[Row], videos: dict[str, tuple[int, tuple[int, int]]], kpt_conf: float
) -> list[FrameScore]:
    """Every frame's score; ``videos`` maps a video to its frame count and (width, height)."""
    scores = {(v, f): FrameScore(v, f) for v, (count, _) in videos.items() for f in range(count)}
    by_video: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_video[row.video][row.track_id].append(row)
    for video, tracks in by_video.items():
        if video not in videos:
            raise FdposeError("the track table names a video the predictions do not list", item=video)
        count, size = videos[video]
        ordered = [sorted(t, key=lambda r: r.frame) for t in tracks.values()]
        features = [_features(t, kpt_conf) for t in ordered]
        z = np.column_stack([robust_z(np.concatenate([f[:, j] for f in features])) for j in range(3)])
        offset = 0
        for track, feats in zip(ordered, features, strict=False):
            for i, row in enumerate(track):
                frame = scores[(video, row.frame)]
                for j, name in enumerate(FEATURES):
                    value = float(z[offset + i, j])
                    if value > frame.reasons.get(name, 0.0):
                        frame.reasons[name] = value
            offset += len(feats)
            for at in _breaks(track, count, size):
                if (video, at) in scores:
                    scores[(video, at)].reasons["breaks"] = scores[(video, at)].reasons.get("breaks", 0) + 1
    for frame in scores.values():
        anomaly = max((frame.reasons.get(n, 0.0) for n in FEATURES), default=0.0)
        frame.score = max(anomaly, 0.0) + BREAK_Z * frame.reasons.get("breaks", 0)
    return sorted(scores.values(), key=lambda s: (-s.score, s.video, s.frame))


def pick(scores: list[FrameScore], count: int, min_gap: int) -> list[FrameScore]:
    """The ``count`` best frames, none within ``min_gap`` frames of a better one of the same video."""
    chosen: list[FrameScore] = []
    for candidate in scores:
        if len(chosen) == count:
            break
        if all(c.video != candidate.video or abs(c.frame - candidate.frame) > min_gap for c in chosen):
            chosen.append(candidate)
    return chosen
