"""``fdpose demo-data``: the bundled demo dataset, stick figures drawn with the COCO person layout.

Every image holds one to three front-facing stick figures (:mod:`pipeline.figures`) with the 17 COCO
person keypoints, on a varied background (gradients, low-frequency noise, shapes, grain). The figures
are meant to be learnable in a few CPU epochs, and to make left/right matter:

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

``--preset hard`` draws the crowded, occluded, cluttered scenes of :mod:`pipeline.demo_hard` instead,
into the same export.

Deterministic: each image is drawn from its own generator seeded by ``(seed, index)``; JPEG
encoding uses a fixed quality; region ids, upload prefixes and timestamps derive from the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from pipeline.demo_hard import draw_hard_image, draw_pretrain_image
from pipeline.errors import FdposeError
from pipeline.figures import (
    OCCLUDABLE,
    Figure,
    body_side,
    draw_figure,
    draw_occluder,
    labelled_figure,
    place,
    sample_pose,
    scene_canvas,
)
from pipeline.io import atomic_dir
from pipeline.labelstudio.predictions import RegionStyle, instance_regions
from pipeline.skeleton import COCO_PERSON_KEYPOINTS

DEFAULT_OUT = Path("data/raw/demo")
JPEG_QUALITY = 88
OCCLUSION_CHOICE = "occluded"  # must match cfg/skeletons/coco_person.yaml occlusion_choice
CLASS_NAME = "person"
GENERATOR_VERSION = 1  # bump when the drawing changes, so params.json says which drawing it is
PROJECT_ID = 1
_BASE_TIME = datetime(2025, 1, 6, 9, 0, 0, tzinfo=timezone.utc)
# The project's controls (label_config_xml), percentages at 4 decimals, regions drawn by hand.
_REGION_STYLE = RegionStyle("image", "keypoints", "bbox", "visibility", OCCLUSION_CHOICE, point_width=0.75,
                            digits=4, origin="manual")
_ID_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))


# --- one image -----------------------------------------------------------------------------------

def draw_image(seed: int, index: int, size: int) -> tuple[np.ndarray, list[Figure]]:
    """Image ``index`` of the demo: pixels (BGR) and its figures. Depends on (seed, index, size) only."""
    rng = np.random.default_rng([seed, index])
    canvas = scene_canvas(rng, size)
    height, width = canvas.shape[:2]
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    placed: list[tuple[np.ndarray, np.ndarray]] = []  # pixel keypoints, unclipped box
    occluders: list[tuple[int, np.ndarray]] = []  # (figures drawn before it, mask)
    for _ in range(count):
        local, head_radius = sample_pose(rng)
        spot = place(rng, local, head_radius, width, height, count, [box for _, box in placed])
        if spot is None:
            continue
        points, unit, box = spot
        draw_figure(canvas, rng, points, unit, head_radius)
        placed.append((points, box))
        if rng.random() < 0.25:
            part = OCCLUDABLE[int(rng.integers(0, len(OCCLUDABLE)))]
            occluders.append((len(placed), draw_occluder(canvas, rng, points, unit, part)))
    figures = []
    for number, (points, box) in enumerate(placed):
        covered = [mask for drawn_after, mask in occluders if drawn_after > number]  # drawn over it
        figure = labelled_figure(points, box, covered, width, height)
        if figure is not None:
            figures.append(figure)
    return canvas, figures


# --- Label Studio export -------------------------------------------------------------------------

def _region_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_ID_ALPHABET, 10))


def task_for(index: int, file_name: str, width: int, height: int, figures: list[Figure], seed: int
             ) -> dict[str, Any]:
    """One task as Label Studio's JSON export writes it (uploaded image, one annotation)."""
    rng = np.random.default_rng([seed, index, 1])
    prefix = hashlib.sha256(f"{seed}:{file_name}".encode()).hexdigest()[:8]
    result: list[dict[str, Any]] = []
    for figure in figures:
        # Ids are drawn box first, then one per labelled keypoint in order (instance_regions' order).
        result += instance_regions(_REGION_STYLE, (width, height), CLASS_NAME, figure.box, figure.keypoints,
                                   COCO_PERSON_KEYPOINTS, _region_id(rng), lambda _: _region_id(rng))
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
                           (n, {"left": "#1E78EB", "right": "#EB4628", "centre": "#EBD75A"}[body_side(n)])
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



# Below this many images, a hash split may leave a split empty often enough to say so in the README.
FEW_IMAGES = 20
_FEW_IMAGES = """
With this few images the hash split may leave a split empty (4 images at 0.8/0.2: val is empty 41% of
the time): convert then warns, and augment and train refuse the dataset in one line. Set
`convert.fill_splits: true` in `cfg/params.yaml` (or `fdpose convert --fill-splits`) to give every
split with a non-zero fraction at least one image.
"""


def _readme(images: int, seed: int, size: int, counts: dict[str, int], preset: str = "default") -> str:
    command = f"fdpose demo-data --out data/raw/demo --images {images} --seed {seed} --size {size}"
    if preset != "default":  # not the bundled folder: the README does not depend on where it is written
        command = command.replace("data/raw/demo", "DIR") + f" --preset {preset}"
    return f"""# Demo keypoint dataset (generated)

Stick figures with the 17-keypoint COCO person layout, in Label Studio JSON export format, made by

    {command}

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
""" + (_FEW_IMAGES if images < FEW_IMAGES else "")



@dataclass
class DemoItem:
    """One image of the demo: its file name, JPEG bytes, export task and figures."""

    name: str
    jpeg: bytes
    task: dict[str, Any]
    figures: list[Figure]


# Preset -> the function drawing its images.
PRESETS: dict[str, Callable[[int, int, int], tuple[np.ndarray, list[Figure]]]] = {
    "default": draw_image, "hard": draw_hard_image, "hard-pretrain": draw_pretrain_image}


def image_drawer(preset: str) -> Callable[[int, int, int], tuple[np.ndarray, list[Figure]]]:
    """The function that draws image ``(seed, index, size)`` of a preset: :func:`draw_image`, or for
    ``hard`` the crowded, occluded, cluttered scenes of ``pipeline.demo_hard``."""
    if preset not in PRESETS:
        raise FdposeError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}", item="--preset")
    return PRESETS[preset]


def demo_item(index: int, seed: int, size: int, preset: str = "default") -> DemoItem:
    """Image ``index`` (0-based) of the demo generated with ``seed`` and ``size``, independent of the
    others (so a test can regenerate any one of them)."""
    pixels, figures = image_drawer(preset)(seed, index, size)
    name = f"demo_{index + 1:04d}.jpg"
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FdposeError("could not encode a demo image", item=name)
    task = task_for(index, name, pixels.shape[1], pixels.shape[0], figures, seed)
    return DemoItem(name, data.tobytes(), task, figures)


@dataclass
class DemoResult:
    """What ``fdpose demo-data`` wrote."""

    out: Path
    export_path: Path
    images: int
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """What the command prints: the export and its counts."""
        c = self.counts
        return (f"wrote {self.export_path}: {c['images']} images, {c['figures']} figures; keypoints "
                f"{c['visible']} visible, {c['occluded']} occluded, {c['absent']} absent")


def demo_data(out: str | Path = DEFAULT_OUT, images: int = 300, seed: int = 0, size: int = 256,
              preset: str = "default") -> DemoResult:
    """Generate the demo dataset into ``out`` (replaced atomically): ``images/``, ``export.json``,
    ``label_config.xml``, ``params.json``, ``README.md``. ``preset``: ``default`` or ``hard``."""
    image_drawer(preset)  # an unknown preset fails before anything is written
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
            item = demo_item(index, seed, size, preset)
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
        params = {"generator_version": GENERATOR_VERSION, "images": images, "seed": seed, "size": size,
                  **({"preset": preset} if preset != "default" else {})}
        (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
        (tmp / "README.md").write_text(_readme(images, seed, size, counts, preset), encoding="utf-8")
    return DemoResult(out, out / "export.json", images, counts)


@click.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Folder to write (replaced atomically).")
@click.option("--images", type=int, default=300, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--size", type=int, default=256, show_default=True, help="Longer image side, pixels.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True,
              help="hard: crowded, occluded, small, truncated, blurred figures on cluttered backgrounds; "
                   "hard-pretrain: the same in a milder style, a pretraining corpus for the hard target.")
def demo_data_command(out: Path, images: int, seed: int, size: int, preset: str) -> None:
    """Generate the bundled demo dataset (Label Studio export)."""
    click.echo(demo_data(out, images=images, seed=seed, size=size, preset=preset).summary())
