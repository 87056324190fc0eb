"""``fdpose demo-data``: the bundled demo dataset, stick figures drawn with the COCO person layout.

Every image holds one to three front-facing stick figures with the 17 COCO person keypoints, on a
varied background (gradients, low-frequency noise, shapes, grain). The figures are meant to be
learnable in a few CPU epochs, and to make left/right matter:

* the person's left limbs (on the image's right, as for a person facing the camera) are drawn in
  blue tones, the right limbs in red/orange tones, the torso and head in neutral tones; eyes and ears
  carry their side's colour, the nose is a dark dot;
* some figures have a body part hidden behind an occluding shape: the keypoints under it are still
  labelled, marked occluded (visibility 1) through a per-region choice;
* some figures stand partly outside the frame: their keypoints out there are absent (not labelled).

The output is what Label Studio's "JSON" export gives for a project whose images were uploaded
(``data.image`` = ``/data/upload/1/<8 hex>-<name>.jpg``): rectangles (``rectanglelabels``) and
keypoints (``keypointlabels``, ``parentID`` = their rectangle), values in percent of
``original_width``/``original_height``, and a ``choices`` result sharing the id of each occluded
keypoint. Beside it: the images under their original names, the project's ``label_config.xml``
(keypoint order by ``model_index``), ``params.json`` (what regenerates the folder) and a README.

Deterministic: each image is drawn from its own generator seeded by ``(seed, index)``; JPEG
encoding uses a fixed quality; region ids, upload prefixes and timestamps derive from the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from pipeline.errors import FdposeError
from pipeline.io import atomic_dir
from pipeline.skeleton import COCO_PERSON_EDGES, COCO_PERSON_KEYPOINTS

DEFAULT_OUT = Path("data/raw/demo")
JPEG_QUALITY = 88
OCCLUSION_CHOICE = "occluded"  # must match cfg/skeletons/coco_person.yaml occlusion_choice
CLASS_NAME = "person"
GENERATOR_VERSION = 1  # bump when the drawing changes, so params.json says which drawing it is
PROJECT_ID = 1
_BASE_TIME = datetime(2025, 1, 6, 9, 0, 0, tzinfo=timezone.utc)
_ID_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))

K = {name: index for index, name in enumerate(COCO_PERSON_KEYPOINTS)}
# Body parts an occluder may hide (the keypoints it is drawn over).
_OCCLUDABLE = [
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"), ("left_wrist",), ("right_wrist",), ("left_ankle",), ("right_ankle",),
    ("left_hip", "left_knee"), ("right_hip", "right_knee"),
]


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


def _jitter(rng: np.random.Generator, bgr: tuple[int, int, int], spread: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in bgr)


def _side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


@dataclass
class Figure:
    """A drawn figure: keypoints in continuous pixel coordinates (pixel ``i`` spans ``[i, i+1)``),
    visibility (2 visible, 1 occluded, 0 outside the frame) and its box."""

    keypoints: np.ndarray  # (17, 3)
    box: np.ndarray  # x0, y0, x1, y1, clipped to the image


def _place(rng: np.random.Generator, local: np.ndarray, head_radius: float, width: int, height: int,
           count: int, taken: list[np.ndarray]) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Scale and position a pose: pixel keypoints, the unit length, and the full (unclipped) extent.
    Tries to avoid overlapping the figures already placed."""
    head = (local[K["left_ear"]] + local[K["right_ear"]]) / 2
    low = np.minimum(local.min(axis=0), head - head_radius)
    high = np.maximum(local.max(axis=0), head + head_radius)
    extent = high - low
    smallest, largest = {1: (0.65, 0.95), 2: (0.55, 0.85), 3: (0.5, 0.7)}[count]
    for _ in range(20):
        figure_height = rng.uniform(smallest, largest) * height
        unit = figure_height / extent[1]
        size = extent * unit
        # Mostly inside the frame; now and then pushed partly out (absent keypoints).
        margin = size * (0.3 if rng.random() < 0.15 else 0.0)
        x0 = rng.uniform(-margin[0], max(-margin[0], width - size[0] + margin[0]))
        y0 = rng.uniform(-margin[1], max(-margin[1], height - size[1] + margin[1]))
        box = np.array([x0, y0, x0 + size[0], y0 + size[1]])
        if all(_overlap(box, other) < 0.15 for other in taken):
            return (local - low) * unit + [x0, y0], unit, box
    return None


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
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
    colours = {"left": _jitter(rng, (235, 120, 30)), "right": _jitter(rng, (40, 70, 235)),
               "centre": _jitter(rng, (90, 215, 235), 20)}
    thickness = max(2, round(0.3 * unit))
    outline = (20, 20, 20)
    limbs = [(a, b) for a, b in COCO_PERSON_EDGES if max(a, b) >= 5]  # the face is drawn below
    for width, use_outline in ((thickness + 2, True), (thickness, False)):
        for a, b in limbs:
            sides = {_side(COCO_PERSON_KEYPOINTS[a]), _side(COCO_PERSON_KEYPOINTS[b])}
            colour = outline if use_outline else colours[sides.pop() if len(sides) == 1 else "centre"]
            cv2.line(canvas, _px(points[a]), _px(points[b]), colour, width, cv2.LINE_AA, _SHIFT)
    neck = (points[K["left_shoulder"]] + points[K["right_shoulder"]]) / 2
    head = (points[K["left_ear"]] + points[K["right_ear"]]) / 2
    cv2.line(canvas, _px(neck), _px(head), outline, thickness + 2, cv2.LINE_AA, _SHIFT)
    cv2.line(canvas, _px(neck), _px(head), colours["centre"], thickness, cv2.LINE_AA, _SHIFT)
    radius = int(round(head_radius * unit * (1 << _SHIFT)))
    cv2.circle(canvas, _px(head), radius, _jitter(rng, (150, 190, 225), 20), -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(canvas, _px(head), radius, outline, max(1, thickness // 2), cv2.LINE_AA, _SHIFT)
    dot = max(1, round(0.13 * unit))
    for name in ("left_ear", "right_ear"):
        colour = colours[_side(name)]
        cv2.circle(canvas, _px(points[K[name]]), (dot + 1) << _SHIFT, colour, -1, cv2.LINE_AA, _SHIFT)
    for name in ("left_eye", "right_eye"):
        cv2.circle(canvas, _px(points[K[name]]), dot << _SHIFT, colours[_side(name)], -1, cv2.LINE_AA,
                   _SHIFT)
    cv2.circle(canvas, _px(points[K["nose"]]), dot << _SHIFT, (30, 30, 60), -1, cv2.LINE_AA, _SHIFT)
    # A dot on every body joint: a junction of two lines is harder to pin down than a dot.
    for name in ("left_wrist", "right_wrist", "left_ankle", "right_ankle", "left_elbow", "right_elbow",
                 "left_knee", "right_knee", "left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        cv2.circle(canvas, _px(points[K[name]]), (thickness // 2 + 1) << _SHIFT, colours[_side(name)],
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


# --- one image -----------------------------------------------------------------------------------

def draw_image(seed: int, index: int, size: int) -> tuple[np.ndarray, list[Figure]]:
    """Image ``index`` of the demo: pixels (BGR) and its figures. Depends on (seed, index, size) only."""
    rng = np.random.default_rng([seed, index])
    aspect = [(1.0, 1.0), (1.0, 0.75), (0.75, 1.0)][int(rng.integers(0, 3))]
    width, height = int(round(size * aspect[0])), int(round(size * aspect[1]))
    canvas = background(rng, width, height)
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    placed: list[tuple[np.ndarray, np.ndarray]] = []  # pixel keypoints, visibility
    boxes: list[np.ndarray] = []
    occluders: list[tuple[int, np.ndarray]] = []  # (figures drawn before it, mask)
    for _ in range(count):
        local, head_radius = sample_pose(rng)
        spot = _place(rng, local, head_radius, width, height, count, boxes)
        if spot is None:
            continue
        points, unit, extent = spot
        draw_figure(canvas, rng, points, unit, head_radius)
        boxes.append(extent)
        placed.append((points, np.full(17, 2)))
        if rng.random() < 0.25:
            part = _OCCLUDABLE[int(rng.integers(0, len(_OCCLUDABLE)))]
            occluders.append((len(placed), draw_occluder(canvas, rng, points, unit, part)))
    figures = []
    for number, ((points, visibility), extent) in enumerate(zip(placed, boxes, strict=True)):
        inside = ((points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0)
                  & (points[:, 1] < height))
        visibility = np.where(inside, visibility, 0)
        for drawn_after, mask in occluders:
            if drawn_after > number:  # occluders drawn over this figure
                ix = np.clip(points[:, 0].astype(int), 0, width - 1)
                iy = np.clip(points[:, 1].astype(int), 0, height - 1)
                visibility = np.where(inside & mask[iy, ix], 1, visibility)
        if not (visibility > 0).any():
            continue
        box = np.clip(extent, 0, [width, height, width, height])
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        keypoints = np.column_stack([points, visibility]).astype(np.float64)
        keypoints[visibility == 0, :2] = 0
        figures.append(Figure(keypoints, box))
    return canvas, figures


# --- Label Studio export -------------------------------------------------------------------------

def _region_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_ID_ALPHABET, 10))


def _pct(value: float, total: int) -> float:
    return round(float(value) / total * 100.0, 4)


def task_for(index: int, file_name: str, width: int, height: int, figures: list[Figure], seed: int
             ) -> dict[str, Any]:
    """One task as Label Studio's JSON export writes it (uploaded image, one annotation)."""
    rng = np.random.default_rng([seed, index, 1])
    prefix = hashlib.sha256(f"{seed}:{file_name}".encode()).hexdigest()[:8]
    frame = {"original_width": width, "original_height": height, "image_rotation": 0}
    result: list[dict[str, Any]] = []
    for figure in figures:
        box_id = _region_id(rng)
        x0, y0, x1, y1 = figure.box
        result.append({**frame, "value": {"x": _pct(x0, width), "y": _pct(y0, height),
                                          "width": _pct(x1 - x0, width), "height": _pct(y1 - y0, height),
                                          "rotation": 0, "rectanglelabels": [CLASS_NAME]},
                       "id": box_id, "from_name": "bbox", "to_name": "image", "type": "rectanglelabels",
                       "origin": "manual"})
        for name, (x, y, v) in zip(COCO_PERSON_KEYPOINTS, figure.keypoints, strict=True):
            if v == 0:
                continue  # absent: Label Studio has no region for a point nobody placed
            point_id = _region_id(rng)
            position = {"x": _pct(x, width), "y": _pct(y, height), "width": 0.75}
            result.append({**frame, "value": {**position, "keypointlabels": [name]}, "id": point_id,
                           "from_name": "keypoints", "to_name": "image", "type": "keypointlabels",
                           "origin": "manual", "parentID": box_id})
            if v == 1:
                result.append({**frame, "value": {**position, "choices": [OCCLUSION_CHOICE]},
                               "id": point_id, "from_name": "visibility", "to_name": "image",
                               "type": "choices", "origin": "manual"})
    created = (_BASE_TIME + timedelta(minutes=3 * index)).isoformat().replace("+00:00", "Z")
    updated = (_BASE_TIME + timedelta(minutes=3 * index + 2)).isoformat().replace("+00:00", "Z")
    upload = f"{prefix}-{file_name}"
    return {
        "id": index + 1,
        "annotations": [{
            "id": index + 1, "completed_by": 1, "result": result, "was_cancelled": False,
            "ground_truth": False, "created_at": updated, "updated_at": updated, "draft_created_at": None,
            "lead_time": round(20.0 + 7.5 * len(result) / 4, 3), "prediction": {},
            "result_count": len(figures),
            "unique_id": hashlib.sha256(f"{seed}:{index}:annotation".encode()).hexdigest()[:36],
            "import_id": None, "last_action": None, "bulk_created": False, "task": index + 1,
            "project": PROJECT_ID, "updated_by": 1, "parent_prediction": None, "parent_annotation": None,
            "last_created_by": None,
        }],
        "file_upload": upload,
        "drafts": [],
        "predictions": [],
        "data": {"image": f"/data/upload/{PROJECT_ID}/{upload}"},
        "meta": {},
        "created_at": created,
        "updated_at": updated,
        "inner_id": index + 1,
        "total_annotations": 1,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": PROJECT_ID,
        "updated_by": 1,
        "comment_authors": [],
    }


def label_config_xml() -> str:
    """The project's labelling interface: a box per person, the 17 keypoints in COCO order
    (``model_index``), and a per-region choice that marks a keypoint occluded."""
    labels = "\n".join(f'    <Label value="{name}" model_index="{index}" background="{colour}"/>'
                       for index, (name, colour) in enumerate(
                           (n, {"left": "#1E78EB", "right": "#EB4628", "centre": "#EBD75A"}[_side(n)])
                           for n in COCO_PERSON_KEYPOINTS))
    return (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <RectangleLabels name="bbox" toName="image">\n'
        f'    <Label value="{CLASS_NAME}" background="#27AE60"/>\n'
        "  </RectangleLabels>\n"
        '  <KeyPointLabels name="keypoints" toName="image" smart="true">\n'
        f"{labels}\n"
        "  </KeyPointLabels>\n"
        '  <Choices name="visibility" toName="image" perRegion="true" whenTagName="keypoints">\n'
        f'    <Choice value="{OCCLUSION_CHOICE}"/>\n'
        "  </Choices>\n"
        "</View>\n"
    )


def _readme(images: int, seed: int, size: int, counts: dict[str, int]) -> str:
    return f"""# Demo keypoint dataset (generated)

Stick figures with the 17-keypoint COCO person layout, in Label Studio JSON export format, made by

    fdpose demo-data --out data/raw/demo --images {images} --seed {seed} --size {size}

(parameters also in `params.json`; `tests/unit/test_demo.py` checks that this folder is exactly what
that command writes). Do not edit by hand: change the generator (`pipeline/demo.py`) and regenerate.

- `export.json`: the export, one task per image, `data.image` = `/data/upload/1/<8 hex>-<name>.jpg`
  (the images as Label Studio stores uploads); rectangles `person` and keypoints with `parentID`.
- `images/`: the images under their original names (the reader strips the upload prefix).
- `label_config.xml`: the project's labelling config (keypoint order by `model_index`, a per-region
  `visibility` choice `{OCCLUSION_CHOICE}` = COCO visibility 1).
- Read it with `fdpose convert --from label-studio --input data/raw/demo/export.json
  --images data/raw/demo/images --label-config data/raw/demo/label_config.xml
  --skeleton cfg/skeletons/coco_person.yaml --out DIR`.

Content: {counts['images']} images ({size} px on the longer side), {counts['figures']} figures,
{counts['visible']} visible, {counts['occluded']} occluded and {counts['absent']} absent (out of frame)
keypoints. Left limbs blue, right limbs red/orange (the figures face the camera, so the person's left
is on the image's right).
"""


@dataclass
class DemoItem:
    """One image of the demo: its file name, JPEG bytes, export task and figures."""

    name: str
    jpeg: bytes
    task: dict[str, Any]
    figures: list[Figure]


def demo_item(index: int, seed: int, size: int) -> DemoItem:
    """Image ``index`` (0-based) of the demo generated with ``seed`` and ``size``, independent of the
    others (so a test can regenerate any one of them)."""
    pixels, figures = draw_image(seed, index, size)
    name = f"demo_{index + 1:04d}.jpg"
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FdposeError("could not encode a demo image", item=name)
    task = task_for(index, name, pixels.shape[1], pixels.shape[0], figures, seed)
    return DemoItem(name, data.tobytes(), task, figures)


@dataclass
class DemoResult:
    """What ``fdpose demo-data`` wrote."""

    out_dir: Path
    export_path: Path
    images: int
    counts: dict[str, int] = field(default_factory=dict)


def demo_data(out: str | Path = DEFAULT_OUT, images: int = 300, seed: int = 0, size: int = 256) -> DemoResult:
    """Generate the demo dataset into ``out`` (replaced atomically): ``images/``, ``export.json``,
    ``label_config.xml``, ``params.json``, ``README.md``."""
    if images < 1:
        raise FdposeError(f"--images must be at least 1, got {images}")
    if not 64 <= size <= 2048:
        raise FdposeError(f"--size must be between 64 and 2048 pixels, got {size}")
    out = Path(out)
    tasks = []
    counts = {"images": images, "figures": 0, "visible": 0, "occluded": 0, "absent": 0}
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for index in range(images):
            item = demo_item(index, seed, size)
            (tmp / "images" / item.name).write_bytes(item.jpeg)
            tasks.append(item.task)
            counts["figures"] += len(item.figures)
            for figure in item.figures:
                visibility = figure.keypoints[:, 2]
                counts["visible"] += int((visibility == 2).sum())
                counts["occluded"] += int((visibility == 1).sum())
                counts["absent"] += int((visibility == 0).sum())
        # One line: Label Studio's export is not indented either, and it keeps the repository small.
        (tmp / "export.json").write_text(json.dumps(tasks, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "label_config.xml").write_text(label_config_xml(), encoding="utf-8")
        params = {"generator_version": GENERATOR_VERSION, "images": images, "seed": seed, "size": size}
        (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
        (tmp / "README.md").write_text(_readme(images, seed, size, counts), encoding="utf-8")
    return DemoResult(out, out / "export.json", images, counts)


@click.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Folder to write (replaced atomically).")
@click.option("--images", type=int, default=300, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--size", type=int, default=256, show_default=True, help="Longer image side, pixels.")
def demo_data_command(out: Path, images: int, seed: int, size: int) -> None:
    """Generate the bundled demo dataset (Label Studio export)."""
    result = demo_data(out, images=images, seed=seed, size=size)
    c = result.counts
    click.echo(f"wrote {result.export_path}: {c['images']} images, {c['figures']} figures; keypoints "
               f"{c['visible']} visible, {c['occluded']} occluded, {c['absent']} absent")
