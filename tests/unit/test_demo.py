"""``fdpose demo-data``: determinism, the Label Studio export layout, left/right colours, occluded and
absent points, the round trip through our Label Studio reader, and the committed data/raw/demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.demo import GENERATOR_VERSION, OCCLUSION_CHOICE, demo_data, demo_item, label_config_xml
from pipeline.labelstudio.reader import read_labelstudio_export
from pipeline.skeleton import COCO_PERSON_KEYPOINTS, Skeleton

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "data" / "raw" / "demo"
SKELETON = ROOT / "cfg" / "skeletons" / "coco_person.yaml"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_demo(folder: Path):
    return read_labelstudio_export(folder / "export.json", folder / "images",
                                   label_config=folder / "label_config.xml", skeleton=Skeleton.load(SKELETON))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    demo_data(out, images=40, seed=5, size=160)
    return out


def test_same_parameters_same_bytes(demo, tmp_path):
    again = demo_data(tmp_path / "again", images=40, seed=5, size=160).out
    assert tree_bytes(again) == tree_bytes(demo)
    other = demo_data(tmp_path / "other", images=3, seed=6, size=160).out
    first = "images/demo_0001.jpg"
    assert (other / first).read_bytes() != (demo / first).read_bytes()


def test_export_has_label_studio_layout(demo):
    tasks = json.loads((demo / "export.json").read_text())
    assert len(tasks) == 40
    figures_per_image, occluded, absent = [], 0, 0
    for task in tasks:
        match = re.fullmatch(r"/data/upload/1/([0-9a-f]{8})-(demo_\d{4}\.jpg)", task["data"]["image"])
        assert match, task["data"]["image"]
        assert (demo / "images" / match.group(2)).is_file()
        (annotation,) = task["annotations"]
        result = annotation["result"]
        rectangles = {r["id"] for r in result if r["type"] == "rectanglelabels"}
        points = {r["id"]: r for r in result if r["type"] == "keypointlabels"}
        figures_per_image.append(len(rectangles))
        by_figure: dict[str, list[str]] = {}
        for region in result:
            value = region["value"]
            assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100
            assert region["to_name"] == "image" and region["original_width"] > 0
            if region["type"] == "keypointlabels":
                assert region["parentID"] in rectangles
                by_figure.setdefault(region["parentID"], []).append(value["keypointlabels"][0])
            elif region["type"] == "choices":
                assert region["id"] in points and value["choices"] == [OCCLUSION_CHOICE]
                occluded += 1
        for names in by_figure.values():
            assert len(names) == len(set(names)) and set(names) <= set(COCO_PERSON_KEYPOINTS)
            absent += 17 - len(names)
    assert set(figures_per_image) <= {1, 2, 3} and len(set(figures_per_image)) > 1
    assert occluded > 0 and absent > 0  # both kinds of not-visible points occur


def test_config_matches_the_skeleton():
    skeleton = Skeleton.load(SKELETON)
    assert skeleton.occlusion_choice == OCCLUSION_CHOICE
    config = label_config_xml()
    order = re.findall(r'<Label value="([a-z_]+)" model_index="(\d+)"', config)
    assert [name for name, _ in order] == skeleton.keypoint_names
    assert [int(i) for _, i in order] == list(range(17))
    assert 'perRegion="true"' in config


def test_reads_back_through_the_label_studio_reader_without_loss(demo):
    dataset = read_demo(demo)
    assert dataset.report.items == [] and dataset.report.warnings == []
    assert len(dataset.images) == 40
    by_name = {image.file_name: image for image in dataset.images}
    for index in range(40):
        item = demo_item(index, seed=5, size=160)
        image = by_name[item.name]
        assert len(image.instances) == len(item.figures)
        for instance, figure in zip(image.instances, item.figures, strict=True):
            np.testing.assert_allclose(instance.keypoints, figure.keypoints, atol=0.01)
            np.testing.assert_allclose(instance.bbox, figure.box, atol=0.01)


def test_left_and_right_limbs_have_their_colours(demo):
    """Visible left joints are drawn in blue tones, right ones in red tones (BGR), so the sides can be
    told apart in the pixels."""
    dataset = read_demo(demo)
    joints = ["elbow", "wrist", "knee", "ankle"]
    agree = total = 0
    for image in dataset.images:
        pixels = cv2.imread(str(image.path)).astype(int)
        for instance in image.instances:
            for side, blue_wins in (("left", True), ("right", False)):
                for joint in joints:
                    x, y, v = instance.keypoints[COCO_PERSON_KEYPOINTS.index(f"{side}_{joint}")]
                    if v == 2:
                        b, _, r = pixels[int(y), int(x)]
                        agree += (b > r) == blue_wins
                        total += 1
    assert total > 200 and agree / total > 0.95  # other figures or occluders may overlap a few


def test_committed_demo_is_what_the_generator_writes():
    """data/raw/demo is the generator's output for its recorded parameters (a sample of images is
    regenerated, to keep this fast)."""
    params = json.loads((COMMITTED / "params.json").read_text())
    tasks = json.loads((COMMITTED / "export.json").read_text())
    assert params["generator_version"] == GENERATOR_VERSION and len(tasks) == params["images"]
    assert sorted(p.name for p in (COMMITTED / "images").iterdir()) == [
        f"demo_{i + 1:04d}.jpg" for i in range(params["images"])]
    assert (COMMITTED / "label_config.xml").read_text() == label_config_xml()
    sample = sorted({0, 1, params["images"] - 1, *range(7, params["images"], 37)})
    for index in sample:
        item = demo_item(index, seed=params["seed"], size=params["size"])
        committed = (COMMITTED / "images" / item.name).read_bytes()
        if committed != item.jpeg:
            # Same pixels up to encoder/anti-aliasing rounding: another OpenCV build may encode the
            # same drawing into other bytes; the labels (checked exactly below) are what must not move.
            a = cv2.imdecode(np.frombuffer(committed, np.uint8), cv2.IMREAD_COLOR).astype(int)
            b = cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
            assert a.shape == b.shape and np.abs(a - b).mean() < 1.0, item.name
        assert tasks[index] == json.loads(json.dumps(item.task)), item.name
    assert f"--images {params['images']} --seed {params['seed']} --size {params['size']}" in (
        COMMITTED / "README.md").read_text()


def test_command_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "cli"
    outcome = CliRunner().invoke(main, ["demo-data", "--out", str(out), "--images", "2", "--size", "96"])
    assert outcome.exit_code == 0, outcome.output
    assert "2 images" in outcome.output and (out / "images" / "demo_0002.jpg").is_file()
    bad = CliRunner().invoke(main, ["demo-data", "--out", str(tmp_path / "bad"), "--images", "0"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "--images" in bad.output
    assert not (tmp_path / "bad").exists()
