"""Per-track keypoint smoothing with the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

Why One Euro rather than a Kalman smoother: it is causal (the same filter works frame by frame in a
stream, as ``fdpose serve`` would need), it needs no motion model (a wrist's motion is not constant
velocity), and its cutoff adapts to speed: it smooths hard when a keypoint is still (jitter) and
lets it through when it moves fast (little lag at a turn). Its two parameters read directly: the
cutoff at rest (Hz) and how fast the cutoff rises with speed. The filter itself is the authors'
``OneEuroFilter`` package, one filter per keypoint coordinate and track, fed with the frame's time,
so a frame the track missed is a longer step, not a wrong one.

A keypoint below ``kpt_conf`` is not fed to its filter (an uncertain position would drag it) and is
passed through unchanged; its confidence is always kept. A keypoint unseen for longer than ``reset_s``
restarts its filter instead of gliding from a stale position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from OneEuroFilter import OneEuroFilter


@dataclass(frozen=True)
class SmoothParams:
    """One Euro settings; positions are in pixels (``beta`` is per pixel/second of speed)."""

    min_cutoff: float = 3.0  # Hz: cutoff at rest; lower removes more jitter, adds lag
    beta: float = 0.05  # cutoff increase per pixel/s of speed; higher follows fast moves sooner
    d_cutoff: float = 1.0  # Hz: cutoff of the speed estimate
    kpt_conf: float = 0.5  # keypoints at least this confident are smoothed (others pass through)
    reset_s: float = 1.0  # a keypoint unseen this long restarts its filter


class TrackSmoother:
    """The filters of one track: ``(K, 3)`` keypoints (x, y, confidence) in, smoothed ``(K, 3)`` out."""

    def __init__(self, num_keypoints: int, fps: float, params: SmoothParams):
        self.fps = fps
        self.params = params
        self.filters: list[tuple[OneEuroFilter, OneEuroFilter] | None] = [None] * num_keypoints
        self.last_seen = np.full(num_keypoints, -np.inf)

    def _new(self) -> tuple[OneEuroFilter, OneEuroFilter]:
        p = self.params
        return tuple(OneEuroFilter(self.fps, p.min_cutoff, p.beta, p.d_cutoff) for _ in range(2))

    def __call__(self, keypoints: np.ndarray, time_s: float) -> np.ndarray:
        out = keypoints.copy()
        for k, (x, y, conf) in enumerate(keypoints):
            if conf < self.params.kpt_conf:
                continue
            if self.filters[k] is None or time_s - self.last_seen[k] > self.params.reset_s:
                self.filters[k] = self._new()
            fx, fy = self.filters[k]
            out[k, 0], out[k, 1] = fx(float(x), time_s), fy(float(y), time_s)
            self.last_seen[k] = time_s
        return out
