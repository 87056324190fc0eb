"""Against a real Label Studio server on loopback: a project set up with the labeling config that
``fdpose skeleton label-config`` writes, annotated through the API, exports annotations that convert
reads back to the same dataset; and a project whose tasks two annotators (two users of the server)
labelled gives ``fdpose sigmas`` one pair per instance and keypoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from labelstudio_server import second_annotator
from PIL import Image

from pipeline.cli import main
from pipeline.convert import convert
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import Skeleton

pytestmark = pytest.mark.integration

LAYOUT = {"keypoints": ["head", "left_hand", "right_hand", "tail"], "classes": ["person", "robot"],
          "flip_pairs": [["left_hand", "right_hand"]], "edges": [["head", "tail"]],
          "occlusion_choice": "occluded"}
SIZE = (160, 120)


def _client(url: str, key: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=key)


def _dataset(folder: Path, skeleton: Skeleton, images: int, seed: int) -> Dataset:
    """``images`` images with two instances each (one per class), keypoints visible, occluded or absent."""
    rng = np.random.default_rng(seed)
    dataset = Dataset(skeleton)
    for index in range(images):
        path = folder / f"scene{index}.png"
        Image.new("RGB", SIZE, (20 * index, 90, 40)).save(path)
        instances = []
        for class_id, x0 in ((0, 10.0), (1, 90.0)):
            box = [x0, 15.0, x0 + 55.0, 105.0]
            points = np.column_stack([rng.uniform(x0 + 3, x0 + 52, 4), rng.uniform(18, 102, 4),
                                      [2, 1 if index % 2 else 2, 2, 0 if index == 0 else 2]])
            points[points[:, 2] == 0, :2] = 0
            instances.append(Instance(class_id, box, points.round(2)))
        dataset.images.append(ImageRecord(path, path.name, *SIZE, instances, split="train"))
    return dataset


def _regions(image: ImageRecord, skeleton: Skeleton, tag: str) -> list[dict]:
    """An annotation's ``result``: per instance a rectangle and its keypoints (parentID), the occluded
    ones with the occlusion choice, in the control names the generated config has."""
    width, height = SIZE
    result = []
    for n, instance in enumerate(image.instances):
        x0, y0, x1, y1 = instance.bbox
        common = {"to_name": "image", "original_width": width, "original_height": height,
                  "image_rotation": 0}
        box_id = f"{tag}b{n}"
        result.append({**common, "id": box_id, "type": "rectanglelabels", "from_name": "bbox",
                       "value": {"x": x0 / width * 100, "y": y0 / height * 100,
                                 "width": (x1 - x0) / width * 100, "height": (y1 - y0) / height * 100,
                                 "rotation": 0,
                                 "rectanglelabels": [skeleton.class_names[instance.class_id]]}})
        for k, (x, y, v) in enumerate(instance.keypoints):
            if v == 0:
                continue
            value = {"x": x / width * 100, "y": y / height * 100, "width": 0.5}
            point_id = f"{tag}p{n}k{k}"
            label = skeleton.keypoint_names[k]
            result.append({**common, "id": point_id, "type": "keypointlabels", "from_name": "keypoints",
                           "parentID": box_id, "value": {**value, "keypointlabels": [label]}})
            if v == 1:
                result.append({**common, "id": point_id, "type": "choices", "from_name": "visibility",
                               "value": {**value, "choices": ["occluded"]}})
    return result


def _project(url: str, key: str, config: str, folder: Path) -> tuple[int, dict[str, int]]:
    """A project with ``config``, the PNG files of ``folder`` uploaded as tasks: (id, name -> task id)."""
    client = _client(url, key)
    project = client.projects.create(title="fdpose layout", label_config=config)
    files = [(f"file{i}", (p.name, p.read_bytes(), "image/png"))
             for i, p in enumerate(sorted(folder.glob("*.png")))]
    response = httpx.post(f"{url}/api/projects/{project.id}/import", files=files,
                          headers=client._client_wrapper.get_headers(), timeout=60, trust_env=False)
    assert response.status_code == 201, response.text
    tasks = {task.data["image"].rsplit("/", 1)[1].split("-", 1)[1]: task.id
             for task in client.tasks.list(project=project.id)}
    return project.id, tasks


def _labels(out: Path) -> dict[str, np.ndarray]:
    """Label values per image, by the name the image had before Label Studio prefixed it."""
    return {p.name.split("-", 1)[-1]: np.array([[float(v) for v in line.split()]
                                                for line in p.read_text().splitlines()])
            for p in (out / "labels" / "train").glob("*.txt")}


def test_label_config_round_trip_on_a_live_server(label_studio, tmp_path, monkeypatch):
    layout_file = tmp_path / "layout.yaml"
    layout_file.write_text(yaml.safe_dump(LAYOUT))
    config_file = tmp_path / "label_config.xml"
    args = ["skeleton", "label-config", str(layout_file), "--out", str(config_file)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    skeleton = Skeleton.load(layout_file)
    (tmp_path / "images").mkdir()
    expected = _dataset(tmp_path / "images", skeleton, images=3, seed=1)
    write_yolo(expected, tmp_path / "expected")

    project_id, tasks = _project(label_studio.url, label_studio.api_key, config_file.read_text(),
                                 tmp_path / "images")
    client = _client(label_studio.url, label_studio.api_key)
    for image in expected.images:
        client.annotations.create(id=tasks[image.file_name], result=_regions(image, skeleton, "a"))
    assert client.projects.get(id=project_id).label_config.strip() == config_file.read_text().strip()

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    report = convert(source="label-studio", url=label_studio.url, project=project_id, skeleton=layout_file,
                     out=tmp_path / "back", split="1,0", params_path=tmp_path / "none.yaml").report
    assert report["counts"]["converted"] == 3 and not report["details"]["items"]
    back, want = _labels(tmp_path / "back"), _labels(tmp_path / "expected")
    assert sorted(back) == sorted(want)
    for name, values in want.items():
        np.testing.assert_allclose(back[name], values, atol=1e-5, err_msg=name)
    got_yaml = yaml.safe_load((tmp_path / "back" / "data.yaml").read_text())
    want_yaml = yaml.safe_load((tmp_path / "expected" / "data.yaml").read_text())
    for key in ("names", "kpt_shape", "flip_idx", "kpt_names", "skeleton", "kpt_oks_sigmas"):
        assert got_yaml[key] == want_yaml[key], key


def test_sigmas_read_a_project_with_two_annotators_per_task(label_studio, tmp_path, monkeypatch):
    layout_file = tmp_path / "layout.yaml"
    layout_file.write_text(yaml.safe_dump(LAYOUT))
    skeleton = Skeleton.load(layout_file)
    config = CliRunner().invoke(main, ["skeleton", "label-config", str(layout_file), "--out",
                                       str(tmp_path / "config.xml")])
    assert config.exit_code == 0, config.output
    (tmp_path / "images").mkdir()
    truth = _dataset(tmp_path / "images", skeleton, images=6, seed=2)
    config_text = (tmp_path / "config.xml").read_text()
    project_id, tasks = _project(label_studio.url, label_studio.api_key, config_text, tmp_path / "images")
    admin = _client(label_studio.url, label_studio.api_key)
    other_key = second_annotator(label_studio.url, admin._client_wrapper.get_headers(),
                                 "second-annotator@example.com", "fdpose-Second-Passw0rd")
    other = _client(label_studio.url, other_key)
    rng = np.random.default_rng(4)
    for image in truth.images:  # each annotator's points: the truth plus 1.5 px of noise per axis
        for tag, client in (("a", admin), ("b", other)):
            moved = []
            for instance in image.instances:
                points = instance.keypoints.copy()
                points[:, :2] += rng.normal(0, 1.5, (4, 2))
                moved.append(Instance(instance.class_id, instance.bbox, points))
            noisy = ImageRecord(image.path, image.file_name, *SIZE, moved)
            client.annotations.create(id=tasks[image.file_name], result=_regions(noisy, skeleton, tag))
    annotators = {a.completed_by for task in admin.tasks.list(project=project_id)
                  for a in admin.annotations.list(id=task.id)}
    assert len(annotators) == 2

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    out = tmp_path / "estimated.yaml"
    result = CliRunner().invoke(main, ["sigmas", "--from", "label-studio", "--url", label_studio.url,
                                       "--project", str(project_id), "--skeleton", str(layout_file),
                                       "--out", str(out), "--min-pairs", "5"])
    assert result.exit_code == 0, result.output
    estimate = yaml.safe_load(out.read_text())["sigma_estimate"]["keypoints"]
    # 6 tasks x 2 instances = 12 pairs, but image 0's tails are unlabelled (10 pairs).
    pairs = {name: e["pairs"] for name, e in estimate.items()}
    assert pairs == {"head": 12, "left_hand": 12, "right_hand": 12, "tail": 10}
    # 1.5 px per axis per annotator, boxes 55 x 90 px: sigma = 1.5 sqrt(2) / sqrt(0.53 x 55 x 90) = 0.041;
    # with 10-12 pairs an estimate's standard error is about 15 %.
    for e in estimate.values():
        assert 0.025 < e["sigma"] < 0.065 and e["low"] < e["sigma"] < e["high"]
    assert Skeleton.load(out).sigma_sources == ["estimated"] * 4
