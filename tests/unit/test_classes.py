"""Classes as users mean them, the same from every reader: unused classes dropped and listed, a
mapping (keep, rename, merge) from the command line or the params, every class merged into one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.convert import convert
from pipeline.errors import FdposeError

CATEGORIES = ["cat", "dog", "horse"]  # horse: listed, never annotated


@pytest.fixture(autouse=True)
def _outside_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def make_coco(root: Path) -> Path:
    """Six images, one cat and one dog in each."""
    images, annotations = [], []
    for i in range(6):
        Image.new("RGB", (60, 40)).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 60, "height": 40})
        for category, x in ((1, 2), (2, 30)):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                                "bbox": [x, 2, 20, 30], "keypoints": [x + 5, 5, 2, x + 10, 20, 2]})
    categories = [{"id": n + 1, "name": name, "keypoints": ["head", "tail"]}
                  for n, name in enumerate(CATEGORIES)]
    path = root / "animals.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def labels(out: Path) -> list[str]:
    return sorted(line.split()[0] for p in (out / "labels").rglob("*.txt")
                  for line in p.read_text().splitlines())


def names(out: Path) -> dict[int, str]:
    return yaml.safe_load((out / "data.yaml").read_text())["names"]


def from_coco(tmp_path: Path, out: str, **options):
    return convert(source="coco", input_path=make_coco(tmp_path), images=tmp_path, out=tmp_path / out,
                   params_path="none.yaml", **options)


def test_unused_categories_are_dropped_and_listed(tmp_path):
    result = from_coco(tmp_path, "a")
    assert names(tmp_path / "a") == {0: "cat", 1: "dog"} and labels(tmp_path / "a") == ["0"] * 6 + ["1"] * 6
    assert result.report["classes"]["dropped_unused"] == ["horse"]
    kept = from_coco(tmp_path, "b", keep_unused_classes=True)
    assert names(tmp_path / "b") == {0: "cat", 1: "dog", 2: "horse"}
    assert kept.report["classes"]["dropped_unused"] == []


def test_mapping_keeps_renames_and_merges_and_counts_what_it_leaves_out(tmp_path):
    merged = from_coco(tmp_path, "a", merge_classes="animal")
    assert names(tmp_path / "a") == {0: "animal"} and labels(tmp_path / "a") == ["0"] * 12
    assert merged.report["classes"]["merged_into"] == "animal"
    subset = from_coco(tmp_path, "b", classes="dog=canine")
    assert names(tmp_path / "b") == {0: "canine"} and labels(tmp_path / "b") == ["0"] * 6
    assert subset.report["classes"]["left_out"] == {"cat": 6}
    assert subset.report["details"]["counts"]["skipped: class 'cat' left out by the class mapping"] == 6
    assert subset.report["counts"]["skipped"] == 6
    assert subset.report["classes"]["mapping"] == {"dog": "canine"}
    with pytest.raises(FdposeError, match=r"names \['cow'\], which are not among the input's classes"):
        from_coco(tmp_path, "c", classes="cow=animal")
    assert not (tmp_path / "c").exists()


def test_the_mapping_works_the_same_from_a_yolo_dataset_and_from_the_params(tmp_path):
    from_coco(tmp_path, "yolo", keep_unused_classes=True, split="1,0")
    data_yaml = tmp_path / "yolo" / "data.yaml"
    convert(source="yolo", input_path=data_yaml, out=tmp_path / "a", params_path="none.yaml",
            classes="cat=pet,dog=pet")
    assert names(tmp_path / "a") == {0: "pet"} and labels(tmp_path / "a") == ["0"] * 12
    result = convert(source="yolo", input_path=data_yaml, out=tmp_path / "b", params_path="none.yaml",
                     classes={"dog": "dog"})
    assert names(tmp_path / "b") == {0: "dog"} and result.report["classes"]["dropped_unused"] == ["horse"]
    assert result.report["classes"]["left_out"] == {"cat": 6}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"convert": {"from": "yolo", "input": str(data_yaml),
                                                  "classes": ["cat"]}}))
    args = ["convert", "--out", str(tmp_path / "c"), "--params", str(params), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert names(tmp_path / "c") == {0: "cat"} and "classes 1: cat" in result.output
    params.write_text(yaml.safe_dump({"convert": {"classes": {"cat": 3}}}))
    result = CliRunner().invoke(main, ["convert", "--out", str(tmp_path / "d"), "--params", str(params)])
    assert result.exit_code == 1 and "convert.classes" in result.output
