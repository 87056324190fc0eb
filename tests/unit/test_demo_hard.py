"""``fdpose demo-data --preset hard``: deterministic, harder than the default preset in the numbers that
make pose estimation hard (figures per image, occlusion, scale range, truncation, degraded images), and
a valid Label Studio export that our reader reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.demo import demo_data, draw_image
from pipeline.demo_hard import HardSettings, articulate, hard_scene, scene_statistics
from pipeline.errors import FdposeError
from pipeline.figures import sample_pose
from pipeline.labelstudio.reader import read_labelstudio_export
from pipeline.skeleton import Skeleton

SKELETON = Path(__file__).resolve().parents[2] / "cfg" / "skeletons" / "coco_person.yaml"


def folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard") / "hard"
    demo_data(out, images=40, seed=5, size=160, preset="hard")
    return out


def test_same_parameters_same_bytes(hard, tmp_path):
    again = demo_data(tmp_path / "again", images=40, seed=5, size=160, preset="hard").out
    assert folder_files(again) == folder_files(hard)
    default = demo_data(tmp_path / "default", images=3, seed=5, size=160).out
    assert (default / "images/demo_0001.jpg").read_bytes() != (hard / "images/demo_0001.jpg").read_bytes()
    assert json.loads((hard / "params.json").read_text())["preset"] == "hard"
    assert "--preset hard" in (hard / "README.md").read_text()
    assert "preset" not in json.loads((default / "params.json").read_text())  # the default folder as before


def test_statistics_are_those_of_a_hard_benchmark():
    stats = scene_statistics([hard_scene(5, index, 160) for index in range(40)])
    default = [draw_image(5, index, 160)[1] for index in range(40)]
    default_per_image = np.mean([len(figures) for figures in default])
    visibility = np.concatenate([f.keypoints[:, 2] for figures in default for f in figures])
    default_occlusion = (visibility == 1).sum() / (visibility > 0).sum()

    assert stats["figures_per_image"] >= max(2.0, 1.5 * default_per_image)  # crowding
    assert stats["max_figures_per_image"] >= 5
    assert 2 * default_occlusion <= stats["occlusion_rate"] <= 0.35  # occluded, yet mostly visible
    assert stats["truncated_rate"] >= 0.1  # figures cut by the border
    assert stats["min_height"] < 0.25 and stats["max_height"] > 0.75  # a wide range of scales
    assert stats["max_height"] / stats["min_height"] >= 3 and stats["small_rate"] >= 0.25
    assert stats["degraded_rate"] >= 0.5  # blur, low contrast or noise


def test_figures_overlap_and_hide_each_other():
    scenes = [hard_scene(5, index, 160) for index in range(40)]
    overlapping = 0
    for scene in scenes:
        boxes = [figure.box for figure in scene.figures]
        overlapping += any(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
                           for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert overlapping >= 10


def test_articulation_bends_limbs_beyond_the_default_pose():
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        points = articulate(rng, sample_pose(rng)[0], HardSettings())
        upper, lower = points[9] - points[7], points[7] - points[5]  # left forearm, left upper arm
        cosine = np.dot(upper, lower) / np.linalg.norm(upper) / np.linalg.norm(lower)
        angles.append(np.degrees(np.arccos(np.clip(cosine, -1, 1))))
    assert max(angles) > 90 and np.std(angles) > 20


def test_export_reads_back(hard):
    dataset = read_labelstudio_export(hard / "export.json", hard / "images",
                                      label_config=hard / "label_config.xml",
                                      skeleton=Skeleton.load(SKELETON))
    assert len(dataset.images) == 40
    scenes = [hard_scene(5, index, 160) for index in range(40)]
    for image, scene in zip(dataset.images, scenes, strict=True):
        assert len(image.instances) == len(scene.figures)
        for instance, figure in zip(image.instances, scene.figures, strict=True):
            read = np.asarray(instance.keypoints)
            assert (read[:, 2] == figure.keypoints[:, 2]).all()
            labelled = figure.keypoints[:, 2] > 0
            assert np.abs(read[labelled, :2] - figure.keypoints[labelled, :2]).max() < 0.01 * 160


def test_cli_preset(tmp_path):
    done = CliRunner().invoke(main, ["demo-data", "--out", str(tmp_path / "h"), "--images", "2",
                                     "--size", "96", "--preset", "hard"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "h" / "params.json").read_text())["preset"] == "hard"
    done = CliRunner().invoke(main, ["demo-data", "--out", str(tmp_path / "x"), "--preset", "harder"])
    assert done.exit_code == 2 and not (tmp_path / "x").exists()
    with pytest.raises(FdposeError, match="unknown preset"):
        demo_data(tmp_path / "y", images=1, preset="harder")
