"""Linking pose detections into tracks across frames, and smoothing each track's keypoints.

The linking is ultralytics' own trackers (ByteTrack by default, BoT-SORT, OC-SORT, ...: their
``TRACKER_MAP`` and tracker YAMLs), fed with our detections instead of a ``Results`` object, so the
model can be any form :mod:`pipeline.inference` runs (PyTorch, ONNX, OpenVINO). The trackers link boxes;
each output row carries the index of the detection it took, which gives back that detection's
keypoints. Keypoints are then smoothed per track (:mod:`pipeline.video.smooth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.video.smooth import SmoothParams, TrackSmoother

TRACKERS = ("bytetrack", "botsort", "ocsort")


@dataclass
class TrackedPose:
    """One track in one frame: the detection it took and its smoothed keypoints."""

    frame: int
    track_id: int
    class_id: int
    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1 (the detection's)
    raw: np.ndarray  # (K, 3) the model's keypoints
    smoothed: np.ndarray  # (K, 3) after smoothing; confidence unchanged


class Boxes:
    """The part of ultralytics' ``Boxes`` its trackers read: ``xywh``, ``conf``, ``cls``, boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls

    @classmethod
    def of(cls, detections: list[Instance]) -> Boxes:
        if not detections:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
        return cls(
            np.array([d.bbox for d in detections], np.float32),
            np.array([d.score for d in detections], np.float32),
            np.array([d.class_id for d in detections], np.float32),
        )

    @property
    def xywh(self) -> np.ndarray:
        xywh = self.xyxy.copy()
        xywh[:, :2] = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        xywh[:, 2:] = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return xywh

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> Boxes:
        return Boxes(self.xyxy[index], self.conf[index], self.cls[index])


def make_tracker(tracker: str) -> Any:
    """An ultralytics tracker from a name in :data:`TRACKERS` or a tracker YAML file.

    ReID is switched off: it would need a second model (downloaded) or ultralytics' own predictor."""
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    path = Path(tracker)
    if tracker in TRACKERS:
        path = Path(check_yaml(f"{tracker}.yaml"))
    elif not path.is_file():
        raise FdposeError(
            f"unknown tracker (choose {', '.join(TRACKERS)} or a tracker YAML file)", path=tracker
        )
    try:
        cfg = IterableSimpleNamespace(**YAML.load(path))
        cfg.with_reid = False
        return TRACKER_MAP[cfg.tracker_type](args=cfg)
    except (KeyError, AttributeError, TypeError) as error:
        raise FdposeError(f"not a usable tracker configuration ({error!r})", path=path) from None


class PoseTracker:
    """Frame by frame: detections in, tracked and smoothed poses out (one video, one instance)."""

    def __init__(self, tracker: str, fps: float, num_keypoints: int, smoothing: SmoothParams | None):
        self.tracker = make_tracker(tracker)
        self.fps = fps
        self.num_keypoints = num_keypoints
        self.smoothing = smoothing
        self.smoothers: dict[int, TrackSmoother] = {}

    def update(
        self, frame: int, detections: list[Instance], image: np.ndarray | None = None
    ) -> list[TrackedPose]:
        """The tracks seen in ``frame`` (0-based, consecutive calls), in track id order."""
        rows = self.tracker.update(Boxes.of(detections), image)
        poses = []
        for row in sorted(np.asarray(rows).reshape(-1, 8).tolist(), key=lambda r: r[4]):
            track_id, det = int(row[4]), detections[int(row[7])]
            smoothed = det.keypoints.copy()
            if self.smoothing is not None:
                smoother = self.smoothers.get(track_id)
                if smoother is None:
                    smoother = self.smoothers[track_id] = TrackSmoother(
                        self.num_keypoints, self.fps, self.smoothing
                    )
                smoothed = smoother(det.keypoints, frame / self.fps)
            poses.append(
                TrackedPose(
                    frame, track_id, det.class_id, det.score, det.bbox.copy(), det.keypoints.copy(), smoothed
                )
            )
        return poses
