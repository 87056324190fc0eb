"""Stick figures with the 17 COCO person keypoints: their poses, placement in an image, and drawing.

A figure faces the camera, so the person's left limbs are on the image's right; they are drawn in
blue tones, the right limbs in red/orange tones, the torso and head in neutral tones; eyes and ears
carry their side's colour, the nose is a dark dot. Occluders are filled shapes drawn over body parts;
backgrounds are gradients, low-frequency noise or shapes, with grain. Keypoints are in continuous
pixel coordinates (pixel ``i`` spans ``[i, i+1)``); every random choice comes from the caller's
generator, so a scene is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.skeleton import COCO_PERSON_EDGES, COCO_PERSON_KEYPOINTS

K = {name: index for index, name in enumerate(COCO_PERSON_KEYPOINTS)}
# Body parts an occluder may hide in the default demo (the keypoints it is drawn over).
OCCLUDABLE = [
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"), ("left_wrist",), ("right_wrist",), ("left_ankle",), ("right_ankle",),
    ("left_hip", "left_knee"), ("right_hip", "right_knee"),
]
# Base tones (BGR) of the person's left limbs, right limbs, and torso and head.
TONES = {"left": (235, 120, 30), "right": (40, 70, 235), "centre": (90, 215, 235)}


# --- one figure ----------------------------------------------------------------------------------

def _unit(degrees: float) -> np.ndarray:
    """Direction in image coordinates (y down): 0 degrees points right, 90 down."""
    radians = math.radians(degrees)
    return np.array([math.cos(radians), math.sin(radians)])


def sample_pose(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """17 keypoints of a front-facing figure in body units (pelvis at the origin) and the head radius.

    Facing the camera, the person's left side is on the image's right (+x)."""
    points = np.zeros((17, 2))
    lean = rng.normal(0.0, 7.0)
    up = _unit(-90 + lean)
    side = _unit(lean)  # towards the person's left (image right)
    neck = up * 2.6
    hip_half, shoulder_half = 0.45 * rng.uniform(0.9, 1.15), 0.85 * rng.uniform(0.9, 1.15)
    points[K["left_hip"]], points[K["right_hip"]] = side * hip_half, -side * hip_half
    points[K["left_shoulder"]] = neck + side * shoulder_half
    points[K["right_shoulder"]] = neck - side * shoulder_half
    head = neck + up * 1.15
    head_radius = 0.72  # a large head keeps the five face points apart at small scales
    yaw = rng.uniform(-0.12, 0.12)  # a slight head turn moves the face sideways
    points[K["nose"]] = head + up * -0.22 + side * yaw
    points[K["left_eye"]] = head + up * 0.14 + side * (0.32 + yaw)
    points[K["right_eye"]] = head + up * 0.14 - side * (0.32 - yaw)
    points[K["left_ear"]] = head + side * (head_radius + 0.02) * (1 - yaw)
    points[K["right_ear"]] = head - side * (head_radius + 0.02) * (1 + yaw)
    for prefix, outward in (("left", -1), ("right", 1)):
        # Arm angles measured from hanging straight down, swung outwards (to the person's side).
        raise_angle = rng.uniform(15, 110)
        upper = 90 + lean + outward * raise_angle
        lower = upper + outward * rng.uniform(-20, 60) * (1 if raise_angle < 90 else -0.5)
        shoulder = points[K[f"{prefix}_shoulder"]]
        elbow = shoulder + _unit(upper) * rng.uniform(1.35, 1.6)
        points[K[f"{prefix}_elbow"]] = elbow
        points[K[f"{prefix}_wrist"]] = elbow + _unit(lower) * rng.uniform(1.2, 1.45)
        thigh = 90 + lean + outward * rng.uniform(2, 30)
        shin = thigh + outward * rng.uniform(-25, 15)
        hip = points[K[f"{prefix}_hip"]]
        knee = hip + _unit(thigh) * rng.uniform(1.9, 2.2)
        points[K[f"{prefix}_knee"]] = knee
        points[K[f"{prefix}_ankle"]] = knee + _unit(shin) * rng.uniform(1.8, 2.1)
    return points, head_radius


def jitter(rng: np.random.Generator, bgr: tuple[int, int, int], spread: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in bgr)


def body_side(name: str) -> str:
    """``left``, ``right`` or ``centre``: the side of the body a keypoint name belongs to."""
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


@dataclass
class Figure:
    """A drawn figure: keypoints in continuous pixel coordinates (pixel ``i`` spans ``[i, i+1)``),
    visibility (2 visible, 1 occluded, 0 outside the frame) and its box."""

    keypoints: np.ndarray  # (17, 3)
    box: np.ndarray  # x0, y0, x1, y1, clipped to the image


def extent(local: np.ndarray, head_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest corner of a pose in body units, the head circle included."""
    head = (local[K["left_ear"]] + local[K["right_ear"]]) / 2
    return (np.minimum(local.min(axis=0), head - head_radius),
            np.maximum(local.max(axis=0), head + head_radius))


def place(rng: np.random.Generator, local: np.ndarray, head_radius: float, width: int, height: int,
          count: int, taken: list[np.ndarray]) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Scale and position a pose: pixel keypoints, the unit length, and the full (unclipped) extent.
    Tries to avoid overlapping the figures already placed."""
    low, high = extent(local, head_radius)
    size_units = high - low
    smallest, largest = {1: (0.65, 0.95), 2: (0.55, 0.85), 3: (0.5, 0.7)}[count]
    for _ in range(20):
        figure_height = rng.uniform(smallest, largest) * height
        unit = figure_height / size_units[1]
        size = size_units * unit
        # Mostly inside the frame; now and then pushed partly out (absent keypoints).
        margin = size * (0.3 if rng.random() < 0.15 else 0.0)
        x0 = rng.uniform(-margin[0], max(-margin[0], width - size[0] + margin[0]))
        y0 = rng.uniform(-margin[1], max(-margin[1], height - size[1] + margin[1]))
        box = np.array([x0, y0, x0 + size[0], y0 + size[1]])
        if all(overlap(box, other) < 0.15 for other in taken):
            return (local - low) * unit + [x0, y0], unit, box
    return None


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


_SHIFT = 4  # cv2 fixed-point bits: draw at sub-pixel positions


def _px(point: np.ndarray) -> tuple[int, int]:
    """Continuous coordinates -> cv2's fixed-point pixel-index coordinates."""
    return tuple(int(round((c - 0.5) * (1 << _SHIFT))) for c in point)


def draw_figure(canvas: np.ndarray, rng: np.random.Generator, points: np.ndarray, unit: float,
                head_radius: float) -> None:
    """Draw limbs with a dark outline, side-coloured; head with side-coloured eyes and ears."""
    colours = {"left": jitter(rng, TONES["left"]), "right": jitter(rng, TONES["right"]),
               "centre": jitter(rng, TONES["centre"], 20)}
    thickness = max(2, round(0.3 * unit))
    outline = (20, 20, 20)
    limbs = [(a, b) for a, b in COCO_PERSON_EDGES if max(a, b) >= 5]  # the face is drawn below
    for width, use_outline in ((thickness + 2, True), (thickness, False)):
        for a, b in limbs:
            sides = {body_side(COCO_PERSON_KEYPOINTS[a]), body_side(COCO_PERSON_KEYPOINTS[b])}
            colour = outline if use_outline else colours[sides.pop() if len(sides) == 1 else "centre"]
            cv2.line(canvas, _px(points[a]), _px(points[b]), colour, width, cv2.LINE_AA, _SHIFT)
    neck = (points[K["left_shoulder"]] + points[K["right_shoulder"]]) / 2
    head = (points[K["left_ear"]] + points[K["right_ear"]]) / 2
    cv2.line(canvas, _px(neck), _px(head), outline, thickness + 2, cv2.LINE_AA, _SHIFT)
    cv2.line(canvas, _px(neck), _px(head), colours["centre"], thickness, cv2.LINE_AA, _SHIFT)
    radius = int(round(head_radius * unit * (1 << _SHIFT)))
    cv2.circle(canvas, _px(head), radius, jitter(rng, (150, 190, 225), 20), -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(canvas, _px(head), radius, outline, max(1, thickness // 2), cv2.LINE_AA, _SHIFT)
    dot = max(1, round(0.13 * unit))
    for name in ("left_ear", "right_ear"):
        colour = colours[body_side(name)]
        cv2.circle(canvas, _px(points[K[name]]), (dot + 1) << _SHIFT, colour, -1, cv2.LINE_AA, _SHIFT)
    for name in ("left_eye", "right_eye"):
        cv2.circle(canvas, _px(points[K[name]]), dot << _SHIFT, colours[body_side(name)], -1, cv2.LINE_AA,
                   _SHIFT)
    cv2.circle(canvas, _px(points[K["nose"]]), dot << _SHIFT, (30, 30, 60), -1, cv2.LINE_AA, _SHIFT)
    # A dot on every body joint: a junction of two lines is harder to pin down than a dot.
    for name in ("left_wrist", "right_wrist", "left_ankle", "right_ankle", "left_elbow", "right_elbow",
                 "left_knee", "right_knee", "left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        cv2.circle(canvas, _px(points[K[name]]), (thickness // 2 + 1) << _SHIFT, colours[body_side(name)],
                   -1, cv2.LINE_AA, _SHIFT)


def draw_occluder(canvas: np.ndarray, rng: np.random.Generator, points: np.ndarray, unit: float,
                  part: tuple[str, ...]) -> np.ndarray:
    """A filled shape over the named keypoints; returns its mask (True where it covers)."""
    covered = np.stack([points[K[name]] for name in part])
    centre = covered.mean(axis=0)
    half = (covered.max(axis=0) - covered.min(axis=0)) / 2 + unit * rng.uniform(0.45, 0.8, 2)
    mask = np.zeros(canvas.shape[:2], np.uint8)
    colour = tuple(int(c) for c in rng.integers(40, 220, 3))
    if rng.random() < 0.5:
        corners = np.array([centre - half, centre + half])
        cv2.rectangle(mask, _px(corners[0]), _px(corners[1]), 255, -1, cv2.LINE_8, _SHIFT)
    else:
        axes = tuple(int(round(h * 1.15 * (1 << _SHIFT))) for h in half)
        cv2.ellipse(mask, _px(centre), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_8,
                    _SHIFT)
    canvas[mask > 0] = colour
    return mask > 0


# --- backgrounds ---------------------------------------------------------------------------------

def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient, low-frequency noise, or shapes over a gradient; with grain."""
    kind = rng.integers(0, 3)
    a, b = rng.integers(30, 226, 3), rng.integers(30, 226, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    t = (xs * math.cos(angle) + ys * math.sin(angle))
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    image = (a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None])
    if kind == 1:
        cells = rng.integers(3, 9)
        noise = rng.uniform(-70, 70, (cells, cells, 3)).astype(np.float32)
        image = image + cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if kind == 2:
        for _ in range(rng.integers(4, 12)):
            colour = tuple(int(c) for c in rng.integers(30, 226, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            size = int(rng.integers(min(width, height) // 12, min(width, height) // 3))
            shape = rng.integers(0, 3)
            if shape == 0:
                cv2.rectangle(image, (x, y), (x + size, y + int(size * rng.uniform(0.4, 1.6))), colour, -1)
            elif shape == 1:
                cv2.circle(image, (x, y), size // 2, colour, -1, cv2.LINE_AA)
            else:
                end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
                cv2.line(image, (x, y), end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    grain = rng.normal(0, rng.uniform(1, 3), image.shape)  # light: grain costs JPEG bytes
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def scene_canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """A background of a random aspect (square, landscape or portrait), ``size`` px on the longer side."""
    aspect = [(1.0, 1.0), (1.0, 0.75), (0.75, 1.0)][int(rng.integers(0, 3))]
    width, height = int(round(size * aspect[0])), int(round(size * aspect[1]))
    return background(rng, width, height)


# --- labels --------------------------------------------------------------------------------------

def keypoint_visibility(points: np.ndarray, covered: list[np.ndarray], width: int, height: int
                        ) -> np.ndarray:
    """Visibility of pixel keypoints: 0 outside the frame, 1 under any of the ``covered`` masks, else 2."""
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    ix = np.clip(points[:, 0].astype(int), 0, width - 1)
    iy = np.clip(points[:, 1].astype(int), 0, height - 1)
    hidden = np.zeros(len(points), bool)
    for mask in covered:
        hidden |= mask[iy, ix]
    return np.where(inside, np.where(hidden, 1, 2), 0)


def labelled_figure(points: np.ndarray, box: np.ndarray, covered: list[np.ndarray], width: int,
                    height: int) -> Figure | None:
    """The labelled figure of a drawn pose (pixel keypoints, unclipped box) under the masks drawn over
    it; None when none of its keypoints is in the frame or its clipped box is under 2 px wide or high."""
    visibility = keypoint_visibility(points, covered, width, height)
    if not (visibility > 0).any():
        return None
    clipped = np.clip(box, 0, [width, height, width, height])
    if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
        return None
    keypoints = np.column_stack([points, visibility]).astype(np.float64)
    keypoints[visibility == 0, :2] = 0
    return Figure(keypoints, clipped)
