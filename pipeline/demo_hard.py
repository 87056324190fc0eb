"""The hard preset of ``fdpose demo-data`` (``--preset hard``): stick-figure scenes a model cannot saturate.

It draws with the demo's stick-figure primitives (:mod:`pipeline.figures`: poses, figures, occluders,
backgrounds; :mod:`pipeline.demo` writes the Label Studio export) and adds what makes pose estimation
hard:

* crowding: one to six figures per image, allowed to overlap; a figure drawn over another hides
  the keypoints under it (labelled, visibility 1), as an occluding object does;
* occlusion by objects: filled shapes over limbs, the head or the torso;
* a wide range of scales: figure heights log-uniform between :attr:`HardSettings.smallest` and
  :attr:`HardSettings.largest` of the image height, so many figures are small;
* truncation: some figures stand partly outside the frame (keypoints out there are absent);
* more articulation: limbs swung and bent further than the demo's, the whole body tilted;
* clutter: limb-like distractors (outlined, side-coloured segments with joint dots) on the background;
* blur, low contrast and sensor noise on part of the images.

Deterministic like the demo: image ``index`` depends on ``(seed, index, size)`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.figures import (
    TONES,
    Figure,
    K,
    draw_figure,
    draw_occluder,
    extent,
    jitter,
    labelled_figure,
    overlap,
    sample_pose,
    scene_canvas,
)

# Keypoint groups an occluding object may cover.
OCCLUDABLE = [
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"), ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_hip", "right_hip"), ("nose", "left_eye", "right_eye"), ("left_wrist",), ("right_ankle",),
    ("left_hip", "left_knee"), ("right_hip", "right_knee"),
]
# Limb tones of the figures (BGR), reused by the distractors so that colour alone does not tell a limb
# from clutter.
LIMB_TONES = tuple(TONES.values())
_ARMS = (("left_shoulder", "left_elbow", "left_wrist"), ("right_shoulder", "right_elbow", "right_wrist"))
_LEGS = (("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle"))


@dataclass(frozen=True)
class HardSettings:
    """How hard the scenes are. The defaults are the preset, calibrated so that stock YOLOv8n-pose
    trained at the demo's settings (15 epochs at 192 px, batch 16, 300 images of 256 px, seed 0)
    reaches OKS mAP50 0.597 on the validation split: far from saturation, room for a better model."""

    figure_counts: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    figure_weights: tuple[float, ...] = (0.2, 0.3, 0.25, 0.12, 0.08, 0.05)
    smallest: float = 0.18  # figure height / image height, log-uniform between these
    largest: float = 0.9
    max_overlap: float = 0.5  # intersection over the smaller box allowed between two figures
    truncated: float = 0.25  # chance a figure is pushed partly out of the frame
    occluder: float = 0.4  # chance of an occluding object over each figure
    tilt: float = 15.0  # degrees, standard deviation of the whole-body tilt
    swing: float = 45.0  # degrees, limbs swung about the shoulder / hip by up to this
    bend: float = 55.0  # degrees, forearms and shins bent about the elbow / knee by up to this
    distractors: tuple[int, int] = (3, 10)  # limb-like segments per image
    blur: float = 0.35  # chance of a Gaussian blur
    low_contrast: float = 0.35  # chance of reduced contrast
    noise: float = 0.3  # chance of sensor noise


@dataclass
class HardScene:
    """One hard image: pixels (BGR), labelled figures, and what the statistics are computed from."""

    pixels: np.ndarray
    figures: list[Figure]
    heights: list[float] = field(default_factory=list)  # unclipped figure height / image height
    truncated: int = 0  # figures with a keypoint outside the frame
    effects: list[str] = field(default_factory=list)  # blur, low_contrast, noise


def _rotate(points: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    radians = math.radians(degrees)
    rotation = np.array([[math.cos(radians), -math.sin(radians)], [math.sin(radians), math.cos(radians)]])
    return (points - centre) @ rotation.T + centre


def articulate(rng: np.random.Generator, points: np.ndarray, settings: HardSettings) -> np.ndarray:
    """Swing each limb about its root joint, bend it at its middle joint, and tilt the whole body."""
    points = points.copy()
    for chain in _ARMS + _LEGS:
        root, middle, end = (K[name] for name in chain)
        points[[middle, end]] = _rotate(points[[middle, end]], points[root],
                                        rng.uniform(-settings.swing, settings.swing))
        bend = rng.uniform(-settings.bend, settings.bend)
        points[end] = _rotate(points[end][None], points[middle], bend)[0]
    tilt = float(np.clip(rng.normal(0.0, settings.tilt), -3 * settings.tilt, 3 * settings.tilt))
    return _rotate(points, np.zeros(2), tilt)


def place(rng: np.random.Generator, local: np.ndarray, head_radius: float, width: int, height: int,
          taken: list[np.ndarray], settings: HardSettings) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Scale (log-uniform height) and position a pose: pixel keypoints, unit length, unclipped box.
    None when no spot within the allowed overlap was found."""
    low, high = extent(local, head_radius)
    size_units = high - low
    for _ in range(25):
        fraction = math.exp(rng.uniform(math.log(settings.smallest), math.log(settings.largest)))
        unit = fraction * height / size_units[1]
        size = size_units * unit
        margin = size * (rng.uniform(0.2, 0.5) if rng.random() < settings.truncated else 0.0)
        x0 = rng.uniform(-margin[0], max(-margin[0], width - size[0] + margin[0]))
        y0 = rng.uniform(-margin[1], max(-margin[1], height - size[1] + margin[1]))
        box = np.array([x0, y0, x0 + size[0], y0 + size[1]])
        if all(overlap(box, other) <= settings.max_overlap for other in taken):
            return (local - low) * unit + [x0, y0], unit, box
    return None


def draw_distractors(canvas: np.ndarray, rng: np.random.Generator, settings: HardSettings) -> None:
    """Limb-like clutter: two-segment outlined strokes in the figures' tones, with dots at the joints."""
    height, width = canvas.shape[:2]
    for _ in range(int(rng.integers(settings.distractors[0], settings.distractors[1] + 1))):
        length = rng.uniform(0.04, 0.2) * height
        start = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(0, 360)
        joint = start + length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        angle += rng.uniform(-70, 70)
        end = joint + length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        path = [tuple(int(round(c)) for c in p) for p in (start, joint, end)]
        tone = LIMB_TONES[int(rng.integers(0, len(LIMB_TONES)))]
        colour = jitter(rng, tone)
        thickness = max(2, int(round(length * 0.12)))
        for a, b in zip(path[:-1], path[1:], strict=True):
            cv2.line(canvas, a, b, (20, 20, 20), thickness + 2, cv2.LINE_AA)
            cv2.line(canvas, a, b, colour, thickness, cv2.LINE_AA)
        for point in path:
            cv2.circle(canvas, point, thickness // 2 + 1, colour, -1, cv2.LINE_AA)


def degrade(canvas: np.ndarray, rng: np.random.Generator, settings: HardSettings
            ) -> tuple[np.ndarray, list[str]]:
    """Blur, low contrast and noise, each with its chance; returns the image and the effects applied."""
    image = canvas.astype(np.float32)
    effects = []
    if rng.random() < settings.blur:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.7, 1.8)))
        effects.append("blur")
    if rng.random() < settings.low_contrast:
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = mean + (image - mean) * float(rng.uniform(0.3, 0.65))
        effects.append("low_contrast")
    if rng.random() < settings.noise:
        image = image + rng.normal(0.0, rng.uniform(4, 12), image.shape)
        effects.append("noise")
    return np.clip(image, 0, 255).astype(np.uint8), effects


def hard_scene(seed: int, index: int, size: int, settings: HardSettings = HardSettings()) -> HardScene:
    """Image ``index`` of the hard preset. Depends on (seed, index, size, settings) only."""
    rng = np.random.default_rng([seed, index, 2])  # a stream of its own: not the default preset's images
    canvas = scene_canvas(rng, size)
    height, width = canvas.shape[:2]
    draw_distractors(canvas, rng, settings)
    count = int(rng.choice(settings.figure_counts, p=np.asarray(settings.figure_weights)
                           / sum(settings.figure_weights)))
    placed: list[tuple[np.ndarray, np.ndarray]] = []  # pixel keypoints, unclipped box
    covers: list[list[np.ndarray]] = []  # per figure, the masks of everything drawn after it
    for _ in range(count):
        local, head_radius = sample_pose(rng)
        spot = place(rng, articulate(rng, local, settings), head_radius, width, height,
                     [box for _, box in placed], settings)
        if spot is None:
            continue
        points, unit, box = spot
        before = canvas.copy()
        draw_figure(canvas, rng, points, unit, head_radius)
        drawn = (canvas != before).any(axis=2)  # the figure hides what lies beneath it
        occluder = np.zeros_like(drawn)
        if rng.random() < settings.occluder:
            part = OCCLUDABLE[int(rng.integers(0, len(OCCLUDABLE)))]
            occluder = draw_occluder(canvas, rng, points, unit, part)
        for masks in covers:
            masks.append(drawn | occluder)
        covers.append([occluder])
        placed.append((points, box))
    canvas, effects = degrade(canvas, rng, settings)
    return _scene(canvas, placed, covers, effects)


def _scene(canvas: np.ndarray, placed: list[tuple[np.ndarray, np.ndarray]], covers: list[list[np.ndarray]],
           effects: list[str]) -> HardScene:
    height, width = canvas.shape[:2]
    scene = HardScene(canvas, [], effects=effects)
    for (points, box), masks in zip(placed, covers, strict=True):
        figure = labelled_figure(points, box, masks, width, height)
        if figure is None:
            continue
        scene.figures.append(figure)
        scene.heights.append(float((box[3] - box[1]) / height))
        scene.truncated += int((figure.keypoints[:, 2] == 0).any())
    return scene


# ``--preset hard-pretrain``: the same world in another style, for a pretraining corpus whose images
# are not the target's (compare/dvc.yaml pretrains on it, then fine-tunes on ``hard``): fewer and
# larger figures, less clutter and degradation, stiffer poses.
PRETRAIN_STYLE = HardSettings(
    figure_weights=(0.3, 0.3, 0.2, 0.12, 0.08, 0.0), smallest=0.25, largest=0.95, occluder=0.25, tilt=8.0,
    swing=30.0, bend=40.0, distractors=(1, 5), blur=0.15, low_contrast=0.15, noise=0.15)


def draw_hard_image(seed: int, index: int, size: int) -> tuple[np.ndarray, list[Figure]]:
    """Pixels and figures of hard image ``index``: the drawing function ``fdpose demo-data`` uses."""
    scene = hard_scene(seed, index, size)
    return scene.pixels, scene.figures


def draw_pretrain_image(seed: int, index: int, size: int) -> tuple[np.ndarray, list[Figure]]:
    """Pixels and figures of image ``index`` of the ``hard-pretrain`` style (:data:`PRETRAIN_STYLE`)."""
    scene = hard_scene(seed, index, size, PRETRAIN_STYLE)
    return scene.pixels, scene.figures


def scene_statistics(scenes: list[HardScene]) -> dict[str, float]:
    """What makes a set of scenes hard, in numbers: figures per image, the share of labelled keypoints
    occluded, of figures truncated, the figure height range, and the share of degraded images."""
    figures = [len(scene.figures) for scene in scenes]
    visibility = np.concatenate([f.keypoints[:, 2] for s in scenes for f in s.figures] or [np.zeros(0)])
    labelled = int((visibility > 0).sum())
    heights = [h for scene in scenes for h in scene.heights]
    total = max(1, sum(figures))
    return {
        "images": len(scenes),
        "figures_per_image": float(np.mean(figures)) if figures else 0.0,
        "max_figures_per_image": int(max(figures, default=0)),
        "occlusion_rate": float((visibility == 1).sum() / labelled) if labelled else 0.0,
        "truncated_rate": sum(scene.truncated for scene in scenes) / total,
        "min_height": float(min(heights, default=0.0)),
        "max_height": float(max(heights, default=0.0)),
        "small_rate": float(np.mean([h < 0.3 for h in heights])) if heights else 0.0,
        "degraded_rate": float(np.mean([bool(scene.effects) for scene in scenes])) if scenes else 0.0,
    }
