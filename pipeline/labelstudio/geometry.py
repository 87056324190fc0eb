"""Label Studio region geometry in hub pixels: the frame a result's percentages refer to, rotated
rectangles, and point-in-rectangle tests (the rules are in :mod:`pipeline.labelstudio.reader`,
"Orientation")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.images import orient_points

ASPECT_TOLERANCE = 0.01


@dataclass
class Frame:
    """How a result's percentages map to hub pixels for one image."""

    source_w: float  # the size of the frame the percentages refer to, in this file's pixels
    source_h: float
    mode: str  # "oriented", "view-rotated" or "raw-exif"
    width: int  # the hub (EXIF-oriented) size
    height: int
    rotation: int = 0
    orientation: int = 1

    def to_pixels(self, x_pct: np.ndarray, y_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.map(np.asarray(x_pct) / 100.0 * self.source_w, np.asarray(y_pct) / 100.0 * self.source_h)

    def map(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source-frame pixels -> hub pixels."""
        if self.mode == "view-rotated":
            # The view was the image turned clockwise by `rotation`; turn the points back.
            if self.rotation == 90:
                return v, self.height - u
            return self.width - v, u  # 270
        if self.mode == "raw-exif":
            xy = orient_points(np.stack([u, v], axis=-1), self.orientation, self.source_w, self.source_h)
            return xy[..., 0], xy[..., 1]
        return u, v


def same_aspect(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether sizes ``a`` and ``b`` have the same aspect ratio, within :data:`ASPECT_TOLERANCE`."""
    return abs(a[0] * b[1] - a[1] * b[0]) <= ASPECT_TOLERANCE * max(a[0] * b[1], a[1] * b[0])


def rectangle_corners(u: float, v: float, w: float, h: float, degrees: float) -> np.ndarray:
    """Corners of a rectangle with top-left (u, v), size (w, h), turned ``degrees`` clockwise about
    its top-left corner (Label Studio's convention; y grows downwards), in pixels."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    along = np.array([w * cos, w * sin])
    down = np.array([-h * sin, h * cos])
    origin = np.array([u, v])
    return np.stack([origin, origin + along, origin + along + down, origin + down])


def inside(polygon: np.ndarray, point: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Whether ``point`` lies in the convex ``polygon`` (corners in order, either winding)."""
    signs = []
    for i in range(len(polygon)):
        a, b = polygon[i], polygon[(i + 1) % len(polygon)]
        cross = (b[0] - a[0]) * (point[1] - a[1]) - (b[1] - a[1]) * (point[0] - a[0])
        length = math.hypot(b[0] - a[0], b[1] - a[1]) or 1.0
        signs.append(cross / length)
    return all(s >= -tolerance for s in signs) or all(s <= tolerance for s in signs)
