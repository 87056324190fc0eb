"""Tracking and smoothing measured against a generated clip's ground truth (:mod:`pipeline.video.clip`).

Per frame, tracks are matched to true figures by keypoints (Hungarian on the mean distance between the
model's keypoints and the figure's labelled ones, per figure height; a match needs at most
:data:`MAX_DISTANCE`): boxes are a poor guide, the model's are wider than the labels'. Then, in
CLEAR-MOT's terms: an *identity switch* is a true figure matched to a different track than the last
time it was matched; a *fragmentation* is a true figure's matched run interrupted (matched, then not,
then matched again). *Coverage* is the fraction of true figure-frames matched to a track. Keypoint
error is the mean pixel distance to the true position, over the true-visible keypoints the model gave
at least ``kpt_conf`` confidence, outside the corrupted frames, for the model's keypoints and the
smoothed ones on the same set. The *lag at a turn* is the delay (in frames, to a tenth) that best aligns
a track's mean keypoint x with the truth's around the turn frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.video.track import TrackedPose

MAX_DISTANCE = 0.25  # mean keypoint distance per figure height


def distance(pose: TrackedPose, figure: dict) -> float:
    """Mean distance of the model's keypoints to the figure's labelled ones, per figure height."""
    true = np.asarray(figure["keypoints"], float).reshape(-1, 3)
    labelled = true[:, 2] > 0
    if not labelled.any():
        return np.inf
    height = max(figure["box"][3] - figure["box"][1], 1.0)
    return float(np.linalg.norm(pose.raw[labelled, :2] - true[labelled, :2], axis=1).mean()) / height


def match_frame(poses: list[TrackedPose], figures: list[dict]) -> dict[int, TrackedPose]:
    """True figure id -> the track pose matched to it in one frame."""
    if not poses or not figures:
        return {}
    cost = np.array([[min(distance(p, f), 1e6) for p in poses] for f in figures])
    rows, cols = linear_sum_assignment(cost)
    return {figures[r]["id"]: poses[c] for r, c in zip(rows, cols, strict=True) if cost[r, c] <= MAX_DISTANCE}


@dataclass
class TrackingFigures:
    switches: dict[int, int] = field(default_factory=dict)  # per true figure
    fragmentations: dict[int, int] = field(default_factory=dict)
    covered: int = 0
    figure_frames: int = 0
    crossings: int = 0

    @property
    def coverage(self) -> float:
        return self.covered / self.figure_frames if self.figure_frames else 0.0


def tracking_figures(frames: list[list[TrackedPose]], truth: dict) -> TrackingFigures:
    result = TrackingFigures(crossings=len(truth["crossings"]))
    last: dict[int, int] = {}  # true id -> track id last matched
    state: dict[int, str] = {}  # true id -> "on" / "off" (after having been on)
    for poses, record in zip(frames, truth["frames"], strict=False):
        matches = match_frame(poses, record["figures"])
        for figure in record["figures"]:
            identity = figure["id"]
            result.figure_frames += 1
            result.switches.setdefault(identity, 0)
            result.fragmentations.setdefault(identity, 0)
            pose = matches.get(identity)
            if pose is None:
                if state.get(identity) == "on":
                    state[identity] = "off"
                continue
            result.covered += 1
            if identity in last and last[identity] != pose.track_id:
                result.switches[identity] += 1
            if state.get(identity) == "off":
                result.fragmentations[identity] += 1
            last[identity], state[identity] = pose.track_id, "on"
    return result


@dataclass
class SmoothingFigures:
    raw_error: float
    smoothed_error: float
    keypoints: int  # keypoint-frames measured
    raw_lag: float  # frames
    smoothed_lag: float

    @property
    def reduction(self) -> float:
        return 1 - self.smoothed_error / self.raw_error if self.raw_error else 0.0


def smoothing_figures(frames: list[list[TrackedPose]], truth: dict, kpt_conf: float) -> SmoothingFigures:
    corrupted = {c["frame"] for c in truth["corrupted"]}
    raw, smooth = [], []
    for poses, record in zip(frames, truth["frames"], strict=False):
        if record["frame"] in corrupted:
            continue
        matches = match_frame(poses, record["figures"])
        for figure in record["figures"]:
            pose = matches.get(figure["id"])
            if pose is None:
                continue
            true = np.asarray(figure["keypoints"], float).reshape(-1, 3)
            keep = (true[:, 2] == 2) & (pose.raw[:, 2] >= kpt_conf)
            raw += list(np.linalg.norm(pose.raw[keep, :2] - true[keep, :2], axis=1))
            smooth += list(np.linalg.norm(pose.smoothed[keep, :2] - true[keep, :2], axis=1))
    turn = truth["turns"][0]
    return SmoothingFigures(
        float(np.mean(raw)) if raw else float("nan"),
        float(np.mean(smooth)) if smooth else float("nan"),
        len(raw),
        turn_lag(frames, truth, turn, "raw"),
        turn_lag(frames, truth, turn, "smoothed"),
    )


def _mean_x(keypoints: np.ndarray, mask: np.ndarray) -> float:
    return float(keypoints[mask, 0].mean()) if mask.any() else float("nan")


def turn_lag(
    frames: list[list[TrackedPose]],
    truth: dict,
    turn: dict,
    which: str,
    half_window: int = 8,
    max_lag: float = 6.0,
) -> float:
    """Delay (frames) that best aligns the track's mean x with the true mean x within ``half_window``
    frames of the turn (over keypoints truly visible in every frame of the window)."""
    lo, hi = turn["frame"] - half_window, turn["frame"] + half_window
    true_x, track_x = [], []
    for poses, record in zip(frames[lo : hi + 1], truth["frames"][lo : hi + 1], strict=False):
        figure = next((f for f in record["figures"] if f["id"] == turn["id"]), None)
        pose = match_frame(poses, record["figures"]).get(turn["id"])
        if figure is None or pose is None:
            true_x.append(np.nan)
            track_x.append(np.nan)
            continue
        true = np.asarray(figure["keypoints"], float).reshape(-1, 3)
        mask = true[:, 2] == 2
        true_x.append(_mean_x(true, mask))
        track_x.append(_mean_x(getattr(pose, which), mask))
    t = np.arange(len(true_x), dtype=float)
    true_x, track_x = np.array(true_x), np.array(track_x)
    ok = ~np.isnan(true_x) & ~np.isnan(track_x)
    if ok.sum() < half_window:
        return float("nan")
    best, best_error = 0.0, np.inf
    for lag in np.arange(0.0, max_lag + 1e-9, 0.1):
        shifted = np.interp(t - lag, t[ok], true_x[ok])  # the truth, delayed by `lag` frames
        window = ok & (t - lag >= 0)
        error = float(np.mean(np.abs(track_x[window] - shifted[window])))
        if error < best_error - 1e-9:
            best, best_error = float(lag), error
    return round(best, 1)
