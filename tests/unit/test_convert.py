"""``fdpose convert`` end to end on small generated data: outputs, reports, splits, atomicity,
determinism and round trips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.convert import convert
from pipeline.errors import FdposeError
from pipeline.formats.coco import read_coco
from pipeline.formats.yolo import output_names, read_yolo
from pipeline.split import split_of

SKELETON = Path(__file__).resolve().parents[2] / "cfg" / "skeletons" / "coco_person.yaml"

NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]


@pytest.fixture(autouse=True)
def _outside_the_project(tmp_path, monkeypatch):
    """Run where no cfg/params.yaml is: the project's own params must not steer these tests."""
    monkeypatch.chdir(tmp_path)


def make_coco(root: Path, count: int = 12, sizes=((120, 90), (64, 48)), sub_folders: bool = False) -> Path:
    """``count`` images with two persons each; returns the JSON path (images under root/img)."""
    rng = np.random.default_rng(7)
    images, annotations = [], []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        name = f"seq{i % 3}/{i:03d}.png" if sub_folders else f"{i:03d}.png"
        (root / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (i, 2 * i, 3 * i)).save(root / "img" / name)
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        for _ in range(2):
            points = np.column_stack(
                [rng.uniform(0, width, 5), rng.uniform(0, height, 5), rng.choice([0, 1, 2], 5)]
            ).round(3)
            points[points[:, 2] == 0, :2] = 0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [1.5, 2.5, width / 2, height / 2],
                    "keypoints": points.reshape(-1).tolist(),
                    "iscrowd": 0,
                }
            )
    path = root / "coco.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]}],
            }
        )
    )
    return path


def run(args: list[str]):
    return CliRunner().invoke(main, ["convert", *args], catch_exceptions=False)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_coco_to_yolo_labels_match_source_coordinates(tmp_path):
    source = make_coco(tmp_path)
    result = convert(
        source="coco", input_path=source, images=tmp_path / "img", out=tmp_path / "out", split="0.5,0.5"
    )
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["kpt_shape"] == [5, 3] and data["names"] == {0: "person"}
    assert data["flip_idx"] == [0, 2, 1, 4, 3]
    assert data["kpt_names"] == {0: NAMES} and data["skeleton"] == [[0, 1], [0, 2]]
    # COCO keypoint names get COCO's sigmas (not 1/K)
    assert data["kpt_oks_sigmas"] == [0.026, 0.025, 0.025, 0.035, 0.035] and "path" not in data
    assert data["kpt_oks_sigmas_source"] == ["coco"] * 5
    coco = json.loads(source.read_text())
    for entry in coco["images"]:
        split = split_of(entry["file_name"], (0.5, 0.5, 0.0), 0)
        label = tmp_path / "out" / "labels" / split / entry["file_name"].replace(".png", ".txt")
        rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
        anns = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
        assert len(rows) == len(anns) == 2
        w, h = entry["width"], entry["height"]
        for row, ann in zip(rows, anns, strict=True):
            x, y, bw, bh = ann["bbox"]
            np.testing.assert_allclose(
                row[1:5], [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h], atol=1e-6
            )
            points = np.array(ann["keypoints"]).reshape(-1, 3)
            expected = np.column_stack([points[:, 0] / w, points[:, 1] / h, points[:, 2]]).reshape(-1)
            np.testing.assert_allclose(row[5:], expected, atol=1e-6)
        image = tmp_path / "out" / "images" / split / entry["file_name"]
        assert os.path.samefile(image, tmp_path / "img" / entry["file_name"])  # hard-linked, not re-encoded
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["images"] == 12 and report["summary"]["instances"] == 24
    visibility = np.array([a["keypoints"][2::3] for a in coco["annotations"]]).reshape(-1)
    assert report["summary"]["keypoints_by_visibility"] == {
        str(v): int((visibility == v).sum()) for v in (0, 1, 2)
    }
    assert report["split"] == {"ratios": [0.5, 0.5, 0.0], "seed": 0}
    assert result.report_path == tmp_path / "out" / "report.json"


def test_same_inputs_give_a_byte_identical_tree(tmp_path):
    source = make_coco(tmp_path, sub_folders=True)
    args = dict(source="coco", input_path=source, images=tmp_path / "img", split="0.7,0.2,0.1", seed=3)
    convert(out=tmp_path / "a", **args)
    convert(out=tmp_path / "b", **args)
    first = tree(tmp_path / "a")
    assert first == tree(tmp_path / "b")
    convert(out=tmp_path / "a", **args)  # again over the previous output
    assert tree(tmp_path / "a") == first
    assert "labels/train/seq0__000.txt" in first or "labels/val/seq0__000.txt" in first


def test_failed_run_leaves_previous_output_untouched(tmp_path):
    source = make_coco(tmp_path)
    out = tmp_path / "out"
    convert(source="coco", input_path=source, images=tmp_path / "img", out=out)
    before = tree(out)
    broken = tmp_path / "broken.json"
    broken.write_text(source.read_text()[:-40])  # truncated
    result = run(
        ["--from", "coco", "--input", str(broken), "--images", str(tmp_path / "img"), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "invalid or truncated JSON" in result.output
    assert str(broken) in result.output
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_cli_summary_lists_every_skipped_item_and_quiet_silences_the_listing(tmp_path):
    source = make_coco(tmp_path, count=4)
    coco = json.loads(source.read_text())
    coco["annotations"][0]["iscrowd"] = 1
    coco["annotations"][1]["keypoints"][:3] = [500.0, 10.0, 2]  # outside the 120 px wide image
    source.write_text(json.dumps(coco))
    args = [
        "--from",
        "coco",
        "--input",
        str(source),
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "o"),
    ]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert "images 4, instances 7" in result.output
    assert "1 x skipped: iscrowd" in result.output
    assert (
        "repaired: " in result.output
        and "annotation 2: keypoints [0] outside the 120x90 image" in result.output
    )
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert {i["item"] for i in report["details"]["items"]} == {"annotation 1", "annotation 2"}
    quiet = run([*args, "--quiet"])
    assert "annotation 2: keypoints" not in quiet.output and "1 x skipped: iscrowd" in quiet.output
    strict = run([*args, "--strict"])
    assert strict.exit_code == 1 and "--strict" in strict.output and "annotation 2" in strict.output


def test_skeleton_file_that_disagrees_is_an_error_naming_both(tmp_path):
    source = make_coco(tmp_path, count=2)
    result = run(
        [
            "--from",
            "coco",
            "--input",
            str(source),
            "--images",
            str(tmp_path / "img"),
            "--out",
            str(tmp_path / "o"),
            "--skeleton",
            str(SKELETON),
        ]
    )
    assert result.exit_code == 1
    assert str(SKELETON) in result.output and str(source) in result.output
    assert not (tmp_path / "o").exists()


def test_stable_splits_do_not_move_when_images_are_added(tmp_path):
    small = make_coco(tmp_path / "small", count=30)
    large = make_coco(tmp_path / "large", count=60)
    convert(source="coco", input_path=small, images=tmp_path / "small" / "img", out=tmp_path / "s", seed=5)
    convert(source="coco", input_path=large, images=tmp_path / "large" / "img", out=tmp_path / "l", seed=5)

    def splits(root):
        return {p.name: p.parent.name for p in (root / "images").rglob("*.png")}

    before, after = splits(tmp_path / "s"), splits(tmp_path / "l")
    assert all(after[name] == split for name, split in before.items())
    assert set(after.values()) == {"train", "val"}
    other_seed = convert(
        source="coco", input_path=small, images=tmp_path / "small" / "img", out=tmp_path / "x", seed=6
    )
    assert splits(other_seed.out) != before


def test_split_file(tmp_path):
    source = make_coco(tmp_path, count=4)
    split_file = tmp_path / "splits.yaml"
    split_file.write_text(
        yaml.safe_dump({"train": ["000.png", "001.png"], "val": ["002.png"], "test": ["zzz.png"]})
    )
    result = convert(
        source="coco", input_path=source, images=tmp_path / "img", out=tmp_path / "o", split_file=split_file
    )
    assert sorted(
        p.relative_to(tmp_path / "o" / "images").as_posix()
        for p in (tmp_path / "o" / "images").rglob("*.png")
    ) == ["train/000.png", "train/001.png", "val/002.png"]
    items = result.report["details"]["items"]
    assert [(i["item"], i["reason"]) for i in items] == [("003.png", "image not listed in the split file")]
    assert any("zzz.png" in w for w in result.report["details"]["warnings"])


def test_yolo_to_coco_to_yolo_round_trip(tmp_path):
    source = make_coco(tmp_path, count=6, sub_folders=True)
    convert(source="coco", input_path=source, images=tmp_path / "img", out=tmp_path / "y1", split="0.5,0.5")
    first = read_yolo(tmp_path / "y1" / "data.yaml")
    result = convert(
        source="yolo", input_path=tmp_path / "y1" / "data.yaml", out=tmp_path / "gt.json", to="coco"
    )
    from pycocotools.coco import COCO

    coco = COCO(str(result.out))
    assert len(coco.getAnnIds()) == 12 and min(coco.getAnnIds()) == 1
    root = Path(result.report["images_root"])
    assert all((root / im["file_name"]).is_file() for im in coco.dataset["images"])
    back = read_coco(result.out, root)
    assert back.skeleton.keypoint_names == NAMES and back.skeleton.edges == [(0, 1), (0, 2)]
    convert(source="coco", input_path=result.out, images=root, out=tmp_path / "y2", split="0.5,0.5")
    second = read_yolo(tmp_path / "y2" / "data.yaml")
    # COCO file_names are relative to the dataset's images/ folder (train/seq0__000.png), so the second
    # dataset's flat names carry the split folder too: match images by their original name.
    by_name = {im.file_name.split("__")[-1]: im for im in second.images}
    assert len(by_name) == len(first.images) == 6
    for image in first.images:
        other = by_name[image.file_name.split("__")[-1]]
        assert len(other.instances) == len(image.instances)
        size = np.array([image.width, image.height])
        for a, b in zip(image.instances, other.instances, strict=True):
            np.testing.assert_allclose(a.bbox / np.tile(size, 2), b.bbox / np.tile(size, 2), atol=1e-6)
            np.testing.assert_allclose(a.keypoints[:, :2] / size, b.keypoints[:, :2] / size, atol=1e-6)
            np.testing.assert_array_equal(a.keypoints[:, 2], b.keypoints[:, 2])


def test_from_yolo_keeps_or_resplits(tmp_path):
    source = make_coco(tmp_path, count=20)
    convert(source="coco", input_path=source, images=tmp_path / "img", out=tmp_path / "y", split="1,0")
    kept = convert(source="yolo", input_path=tmp_path / "y" / "data.yaml", out=tmp_path / "k")
    assert kept.report["summary"]["splits"].keys() == {"train"}
    resplit = convert(
        source="yolo", input_path=tmp_path / "y" / "data.yaml", out=tmp_path / "r", split="0.5,0.5"
    )
    assert resplit.report["summary"]["splits"].keys() == {"train", "val"}
    assert resplit.report["summary"]["instances"] == 40


def test_output_names_flatten_sub_folders_and_stay_unique():
    names = output_names(["a/b.jpg", "a__b.jpg", "c/d.JPG", "C/d.jpg", "images/val/x.jpg", "y.png"])
    assert len(set(n.lower() for n in names)) == 6
    assert names[4] == "images__val__x.jpg" and names[5] == "y.png"
    assert names[0] != "a__b.jpg" and names[0].startswith("a__b-") and names[0].endswith(".jpg")
    assert output_names(["a/b.jpg", "a__b.jpg"]) == names[:2]  # deterministic


def test_unusable_input_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "img").mkdir()
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]')
    result = run(
        [
            "--from",
            "coco",
            "--input",
            str(bad),
            "--images",
            str(tmp_path / "img"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    with pytest.raises(FdposeError, match="sum to 1"):
        convert(source="coco", input_path=bad, images=tmp_path / "img", out=tmp_path / "o", split="0.5,0.6")


LS_CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="box" toName="img"><Label value="person"/></RectangleLabels>
  <KeyPointLabels name="kp" toName="img">
    <Label value="tail" model_index="1"/><Label value="head" model_index="0"/>
  </KeyPointLabels>
</View>"""


def test_label_studio_export_through_the_cli(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (200, 100)).save(tmp_path / "img" / "a.jpg")
    common = {"to_name": "img", "original_width": 200, "original_height": 100, "image_rotation": 0}
    result = [
        {
            "id": "r1",
            "type": "rectanglelabels",
            "from_name": "box",
            **common,
            "value": {
                "x": 10,
                "y": 20,
                "width": 50,
                "height": 60,
                "rotation": 0,
                "rectanglelabels": ["person"],
            },
        },
        {
            "id": "k1",
            "type": "keypointlabels",
            "from_name": "kp",
            "parentID": "r1",
            **common,
            "value": {"x": 20, "y": 30, "width": 0.5, "keypointlabels": ["head"]},
        },
        {
            "id": "k2",
            "type": "keypointlabels",
            "from_name": "kp",
            "parentID": "r1",
            **common,
            "value": {"x": 40, "y": 70, "width": 0.5, "keypointlabels": ["tail"]},
        },
    ]
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/3/abcdef12-a.jpg"},
            "predictions": [],
            "annotations": [
                {
                    "id": 9,
                    "result": result,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2024-01-01T00:00:00Z",
                    "updated_at": "2024-01-01T00:00:00Z",
                }
            ],
        }
    ]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    (tmp_path / "config.xml").write_text(LS_CONFIG)
    out = tmp_path / "out"
    cli = run(
        [
            "--from",
            "label-studio",
            "--input",
            str(tmp_path / "export.json"),
            "--images",
            str(tmp_path / "img"),
            "--label-config",
            str(tmp_path / "config.xml"),
            "--out",
            str(out),
            "--split",
            "1,0",
            "--quiet",
        ]
    )
    assert cli.exit_code == 0, cli.output
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["kpt_names"] == {0: ["head", "tail"]} and data["names"] == {0: "person"}
    (label,) = (out / "labels" / "train").glob("*.txt")
    values = list(map(float, label.read_text().split()))
    np.testing.assert_allclose(values, [0, 0.35, 0.5, 0.5, 0.6, 0.2, 0.3, 2, 0.4, 0.7, 2], atol=1e-6)


def test_input_from_params_when_no_format_is_given(tmp_path):
    """The DVC stage's way: `fdpose convert --out DIR` with everything else in cfg/params.yaml."""
    source = make_coco(tmp_path, count=3)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "convert": {
                    "from": "coco",
                    "input": str(source),
                    "images": str(tmp_path / "img"),
                    "split": [1, 0],
                }
            }
        )
    )
    result = run(["--out", str(tmp_path / "o"), "--params", str(params), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "images 3, instances 6" in result.output and "splits train 3 images" in result.output
    # A command that names its input format ignores the params' input keys (here: a bad skeleton).
    params.write_text(yaml.safe_dump({"convert": {"from": "yolo", "skeleton": "missing.yaml"}}))
    explicit = run(
        [
            "--from",
            "coco",
            "--input",
            str(source),
            "--images",
            str(tmp_path / "img"),
            "--out",
            str(tmp_path / "o2"),
            "--params",
            str(params),
            "--quiet",
        ]
    )
    assert explicit.exit_code == 0, explicit.output
    params.write_text(yaml.safe_dump({"convert": {"split": [0.5, 0.5]}}))
    missing = run(["--out", str(tmp_path / "o3"), "--params", str(params)])
    assert missing.exit_code == 1 and "no input format" in missing.output
