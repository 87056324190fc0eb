"""A handful of images (issue 22): the default 0.8/0.2 split of 4 images leaves val empty. Convert warns in
one line, augment and train refuse in one line naming the split and the data.yaml; with
``--fill-splits`` one image moves to val and a tiny training run goes through."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, ImageDraw

from pipeline.cli import main
from pipeline.split import split_of

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FDCONV_YAML = str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")
# Four names the seed-0 hash puts all in train (checked below, so the test cannot pass by luck).
NAMES = [f"person_0_{index}.png" for index in range(4)]


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    images, annotations = [], []
    for index, name in enumerate(NAMES):
        picture = Image.new("RGB", (96, 96), (40, 40, 40))
        x0 = 16 + 4 * index
        ImageDraw.Draw(picture).rectangle([x0, 20, x0 + 40, 70], fill=(200, 180, 160))
        picture.save(root / "images" / name)
        images.append({"id": index + 1, "file_name": name, "width": 96, "height": 96})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [x0, 20, 40, 50], "area": 2000, "num_keypoints": 3,
                            "keypoints": [x0 + 10, 30, 2, x0 + 30, 30, 2, x0 + 20, 60, 2]})
    categories = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2], [2, 3]]}]
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def run(*args: str):
    return CliRunner().invoke(main, [*args])


def convert(coco: Path, out: Path, *options: str):
    return run("convert", "--from", "coco", "--input", str(coco), "--images", str(coco.parent / "images"),
               "--out", str(out), "--split", "0.8,0.2", "--seed", "0", "--quiet", "--params", os.devnull,
               *options)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output
    # stderr: importing ultralytics prints its settings notice on stdout in a fresh settings folder.
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--model", FDCONV_YAML, "--epochs", "1",
            "--imgsz", "64", "--batch", "4", "--device", "cpu", "--workers", "0", "--params", os.devnull]


def test_default_split_of_four_images_warns_and_training_refuses_in_one_line(coco_file, tmp_path):
    assert all(split_of(name, (0.8, 0.2, 0.0), 0) == "train" for name in NAMES)
    result = convert(coco_file, tmp_path / "ds")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: split 'val' is empty: none of the 4 images fell in it (fractions "
                        "[0.8, 0.2, 0.0]); training needs train and val images: set convert.fill_splits "
                        "(--fill-splits), or give a split file"], result.output
    data = tmp_path / "ds" / "data.yaml"
    expected = f"Error: {data.resolve()}: split 'val' has no images (training needs train and val images"
    assert one_error_line(run(*train_args(data, tmp_path / "run"))).startswith(expected)
    assert not (tmp_path / "run").exists()
    refused = one_error_line(run("augment", "--data", str(data), "--out", str(tmp_path / "aug"),
                                 "--params", os.devnull, "--quiet"))
    assert refused.startswith(f"Error: {data}: split 'val' has no images"), refused
    assert not (tmp_path / "aug").exists()


def test_fill_splits_moves_one_image_to_val_and_trains(coco_file, tmp_path):
    result = convert(coco_file, tmp_path / "ds", "--fill-splits")
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert len(report["split"]["moved"]) == 1 and report["summary"]["splits"]["val"]["images"] == 1
    assert report["summary"]["splits"]["train"]["images"] == 3
    again = convert(coco_file, tmp_path / "ds2", "--fill-splits")
    assert again.exit_code == 0
    assert (tmp_path / "ds2" / "report.json").read_bytes() == (tmp_path / "ds" / "report.json").read_bytes()
    data = tmp_path / "ds" / "data.yaml"
    assert yaml.safe_load(data.read_text())["val"] == "images/val"
    trained = run(*train_args(data, tmp_path / "run"))
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "weights" / "best.pt").is_file()
