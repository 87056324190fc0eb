"""A skeleton's Label Studio labeling config (``fdpose skeleton label-config``) read back unchanged by
convert's reader and serve's check, and class mapping on a Label Studio export."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.convert import convert
from pipeline.labelstudio.config import parse_label_config
from pipeline.labelstudio.labelconfig import label_config_xml, skeleton_from_label_config
from pipeline.labelstudio.layout import match_label_config
from pipeline.skeleton import Skeleton


def test_label_config_of_a_skeleton_reads_back_unchanged(tmp_path):
    out = tmp_path / "config.xml"
    result = CliRunner().invoke(main, ["skeleton", "label-config", "crowdpose.yaml", "--out", str(out)])
    assert result.exit_code == 0, result.output
    skeleton = Skeleton.load("crowdpose.yaml")
    config = parse_label_config(out.read_text(), out)
    assert config.keypoint_names == skeleton.keypoint_names and config.class_names == ["person"]
    assert config.keypoint_indices == {name: i for i, name in enumerate(skeleton.keypoint_names)}
    assert config.choice_values == ["occluded"] and not config.warnings
    back = skeleton_from_label_config(out)
    assert back.keypoint_names == skeleton.keypoint_names and back.flip_pairs() == skeleton.flip_pairs()
    assert back.occlusion_choice == "occluded"
    layout = match_label_config(out.read_text(), skeleton.keypoint_names, skeleton.class_names)
    assert layout.image_key == "image" and layout.skeleton.occlusion_choice == "occluded"
    odd = Skeleton(["a<b", 'quote"d', "left & right"], class_names=["c&d"])
    assert parse_label_config(label_config_xml(odd)).keypoint_names == odd.keypoint_names


def _task(task_id: int, regions: list[tuple[str, str, float]]) -> dict:
    """A task whose annotation has, per region, a box of class ``label`` at ``x`` % with two keypoints."""
    result = []
    for rid, label, x in regions:
        common = {"to_name": "image", "original_width": 100, "original_height": 100, "image_rotation": 0}
        result.append({**common, "id": rid, "type": "rectanglelabels", "from_name": "bbox",
                       "value": {"x": x, "y": 10, "width": 30, "height": 60, "rotation": 0,
                                 "rectanglelabels": [label]}})
        for index, name in enumerate(["head", "tail"]):
            result.append({**common, "id": f"{rid}{name}", "type": "keypointlabels", "from_name": "keypoints",
                           "parentID": rid, "value": {"x": x + 5 + 10 * index, "y": 20 + 30 * index,
                                                      "width": 0.5, "keypointlabels": [name]}})
    return {"id": task_id, "data": {"image": f"/data/upload/1/{task_id}.png"},
            "annotations": [{"id": task_id * 10, "result": result, "was_cancelled": False,
                             "updated_at": "2026-01-01T00:00:00Z"}]}


def test_class_mapping_from_a_label_studio_export(tmp_path):
    (tmp_path / "images").mkdir()
    for task_id in range(1, 5):
        Image.new("RGB", (100, 100)).save(tmp_path / "images" / f"{task_id}.png")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_task(t, [("a", "cat", 5), ("b", "dog", 55)]) for t in range(1, 5)]))
    config = tmp_path / "config.xml"
    config.write_text(label_config_xml(Skeleton(["head", "tail"], class_names=["cat", "dog", "horse"])))
    common = {"source": "label-studio", "input_path": export, "images": tmp_path / "images",
              "label_config": config, "params_path": tmp_path / "none.yaml", "split": "1,0"}
    result = convert(out=tmp_path / "a", **common)
    assert result.report["classes"]["output"] == ["cat", "dog"]
    assert result.report["classes"]["dropped_unused"] == ["horse"]
    result = convert(out=tmp_path / "b", classes="dog=canine", **common)
    assert yaml.safe_load((tmp_path / "b" / "data.yaml").read_text())["names"] == {0: "canine"}
    assert result.report["classes"]["left_out"] == {"cat": 4} and result.report["summary"]["instances"] == 4
    assert result.report["counts"]["converted"] == 4  # every task still converts, without its cat
    result = convert(out=tmp_path / "c", merge_classes="animal", **common)
    labels = [line.split()[0] for p in Path(tmp_path / "c" / "labels").rglob("*.txt")
              for line in p.read_text().splitlines()]
    assert result.report["classes"]["output"] == ["animal"] and labels == ["0"] * 8
