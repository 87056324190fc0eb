"""Against a real Label Studio server: a project with keypoints (model_index), rectangles and a
per-region visibility choice, images uploaded through the API, annotations made through the API;
then the JSON export (as a file and live) must convert to the pixel coordinates we labelled, and
predictions uploaded by fdpose must come back through the export unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.dataset import ImageRecord, Instance, Report
from pipeline.errors import FdposeError
from pipeline.labelstudio.predictions import upload_predictions
from pipeline.labelstudio.reader import read_labelstudio_export, read_labelstudio_live
from pipeline.skeleton import Skeleton

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Document order differs from model order on purpose: the model order is head, neck, tail.
CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="box" toName="img">
    <Label value="person"/><Label value="dog"/>
  </RectangleLabels>
  <KeyPointLabels name="kp" toName="img">
    <Label value="tail" model_index="2"/>
    <Label value="head" model_index="0"/>
    <Label value="neck" model_index="1"/>
  </KeyPointLabels>
  <Choices name="visibility" toName="img" perRegion="true">
    <Choice value="occluded"/>
  </Choices>
</View>"""
NAMES = ["head", "neck", "tail"]
SKELETON = Skeleton(keypoint_names=NAMES, class_names=["person", "dog"], occlusion_choice="occluded")


def _rect(rid, label, box, size):
    (x0, y0, x1, y1), (w, h) = box, size
    return {"id": rid, "type": "rectanglelabels", "from_name": "box", "to_name": "img", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"x": x0 / w * 100, "y": y0 / h * 100, "width": (x1 - x0) / w * 100,
                      "height": (y1 - y0) / h * 100, "rotation": 0, "rectanglelabels": [label]}}


def _point(rid, label, xy, size, parent=None, occluded=False):
    (x, y), (w, h) = xy, size
    common = {"id": rid, "to_name": "img", "original_width": w, "original_height": h, "image_rotation": 0}
    value = {"x": x / w * 100, "y": y / h * 100, "width": 0.6}
    out = [{**common, "type": "keypointlabels", "from_name": "kp",
            "value": {**value, "keypointlabels": [label]}}]
    if parent:
        out[0]["parentID"] = parent
    if occluded:
        out.append({**common, "type": "choices", "from_name": "visibility",
                    "value": {**value, "choices": ["occluded"]}})
    return out


# What we label, in pixels of the images as shown (after EXIF orientation): expected hub instances.
WALK = (320, 240)
EXPECTED_WALK = [  # (class, box, keypoints x, y, v in model order)
    (0, [40, 30, 140, 210], [[90, 50, 2], [90, 80, 1], [0, 0, 0]]),
    (1, [180, 120, 300, 220], [[200, 140, 2], [0, 0, 0], [290, 200, 2]]),
]
PHONE_STORED, PHONE = (240, 160), (160, 240)  # EXIF orientation 6: stored landscape, shown portrait
PHONE_POINTS = [[40, 60, 2], [0, 0, 0], [120, 200, 2]]


@dataclass
class Project:
    id: int
    url: str
    api_key: str
    images: Path  # the originals, under their own names (Label Studio adds an upload prefix)
    config: Path
    tasks: dict[str, int]  # original file name -> task id
    export: Path


def _client(server):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=server.api_key)


def _export(server, project_id: int, target: Path) -> Path:
    chunks = _client(server).projects.exports.download_sync(id=project_id, export_type="JSON",
                                                            download_all_tasks=True)
    target.write_bytes(b"".join(chunks))
    return target


@pytest.fixture(scope="module")
def project(label_studio, tmp_path_factory) -> Project:
    client = _client(label_studio)
    folder = tmp_path_factory.mktemp("ls-originals")
    Image.new("RGB", WALK, (90, 120, 30)).save(folder / "walk.png")
    phone = Image.new("RGB", PHONE_STORED, (10, 20, 200))
    exif = phone.getexif()
    exif[0x0112] = 6
    phone.save(folder / "phone.jpg", exif=exif)
    Image.new("RGB", (100, 100)).save(folder / "skipped.png")
    Image.new("RGB", (64, 64)).save(folder / "empty.png")
    config_path = folder.parent / "label_config.xml"
    config_path.write_text(CONFIG)

    created = client.projects.create(title="fdpose integration", label_config=CONFIG)
    # One form field per file: Label Studio reads the upload as a mapping of field name -> file.
    files = [(f"file{i}", (p.name, p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg"))
             for i, p in enumerate(sorted(folder.iterdir()))]
    # File upload is not in the SDK's typed API; the SDK's headers carry the key.
    response = httpx.post(f"{label_studio.url}/api/projects/{created.id}/import", files=files,
                          headers=client._client_wrapper.get_headers(), timeout=60)
    assert response.status_code == 201, response.text
    tasks = {}
    for task in client.tasks.list(project=created.id):
        stored = task.data["image"]
        assert stored.startswith(f"/data/upload/{created.id}/")
        tasks[stored.rsplit("/", 1)[1].split("-", 1)[1]] = task.id
    assert sorted(tasks) == ["empty.png", "phone.jpg", "skipped.png", "walk.png"]

    # walk.png: an older annotation (superseded) and the one that counts, with a parentless keypoint
    # that belongs to the dog's box by containment and an occluded neck.
    client.annotations.create(id=tasks["walk.png"], result=[_rect("old", "person", [0, 0, 50, 50], WALK)])
    result = [_rect("p1", "person", EXPECTED_WALK[0][1], WALK), _rect("d1", "dog", EXPECTED_WALK[1][1], WALK),
              *_point("p1h", "head", (90, 50), WALK, parent="p1"),
              *_point("p1n", "neck", (90, 80), WALK, parent="p1", occluded=True),
              *_point("d1h", "head", (200, 140), WALK),
              *_point("d1t", "tail", (290, 200), WALK, parent="d1")]
    client.annotations.create(id=tasks["walk.png"], result=result)
    # phone.jpg: keypoints only, in the frame a browser shows (EXIF applied).
    client.annotations.create(id=tasks["phone.jpg"], result=[
        *_point("a", "head", (40, 60), PHONE), *_point("b", "tail", (120, 200), PHONE)])
    client.annotations.create(id=tasks["skipped.png"], result=[], was_cancelled=True)
    export = _export(label_studio, created.id, folder.parent / "export.json")
    return Project(created.id, label_studio.url, label_studio.api_key, folder, config_path, tasks, export)


def _check_dataset(dataset, images: dict[str, str]) -> None:
    """``images`` maps an original file name to the name the dataset must use for it."""
    by_name = {image.file_name: image for image in dataset.images}
    assert sorted(by_name) == sorted(images.values())
    walk, phone = by_name[images["walk.png"]], by_name[images["phone.jpg"]]
    assert (walk.width, walk.height) == WALK and (phone.width, phone.height) == PHONE
    assert len(walk.instances) == 2
    for instance, (class_id, box, keypoints) in zip(walk.instances, EXPECTED_WALK, strict=True):
        assert instance.class_id == class_id
        np.testing.assert_allclose(instance.bbox, box, atol=1e-6)
        np.testing.assert_allclose(instance.keypoints, keypoints, atol=1e-6)
    (free,) = phone.instances
    np.testing.assert_allclose(free.keypoints, PHONE_POINTS, atol=1e-6)
    np.testing.assert_allclose(free.bbox, [32, 46, 128, 214], atol=1e-6)  # extent + 10% margin each side
    assert dataset.skeleton.keypoint_names == NAMES
    assert dataset.skeleton.class_names == ["person", "dog"]
    reasons = sorted(item.reason for item in dataset.report.items)
    assert reasons == ["cancelled annotation", "empty task (no annotation)"]
    assert any("1 older annotation(s) superseded" in w for w in dataset.report.warnings)


def test_export_file_converts_to_the_labelled_pixels(project):
    tasks = json.loads(project.export.read_text())
    assert len(tasks) == 4
    dataset = read_labelstudio_export(project.export, project.images, label_config=project.config,
                                      skeleton=SKELETON)
    # Exported references carry Label Studio's upload prefix; the originals resolve without it.
    _check_dataset(dataset, {"walk.png": "walk.png", "phone.jpg": "phone.jpg"})


def test_export_file_converts_through_the_cli_to_yolo_labels(project, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    skeleton_file = tmp_path / "skeleton.yaml"
    skeleton_file.write_text(yaml.safe_dump({"keypoints": NAMES, "classes": ["person", "dog"],
                                             "occlusion_choice": "occluded"}))
    out = tmp_path / "dataset"
    run = CliRunner().invoke(main, ["convert", "--from", "label-studio", "--input", str(project.export),
                                    "--images", str(project.images), "--label-config", str(project.config),
                                    "--skeleton", str(skeleton_file), "--split", "1,0", "--out", str(out),
                                    "--params", str(REPO / "cfg" / "params.yaml"), "--quiet"])
    assert run.exit_code == 0, run.output
    lines = (out / "labels" / "train" / "walk.txt").read_text().splitlines()
    w, h = WALK
    for line, (class_id, (x0, y0, x1, y1), keypoints) in zip(lines, EXPECTED_WALK, strict=True):
        values = [float(v) for v in line.split()]
        assert int(values[0]) == class_id
        box = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
        np.testing.assert_allclose(values[1:5], box, atol=1e-6)
        expected = [[x / w, y / h, v] if v else [0, 0, 0] for x, y, v in keypoints]
        np.testing.assert_allclose(np.reshape(values[5:], (3, 3)), expected, atol=1e-6)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["kpt_shape"] == [3, 3] and data["kpt_names"][0] == NAMES


def test_live_convert_through_the_cli_writes_no_key(project, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", project.api_key)
    skeleton_file = tmp_path / "skeleton.yaml"
    skeleton_file.write_text(yaml.safe_dump({"keypoints": NAMES, "classes": ["person", "dog"],
                                             "occlusion_choice": "occluded"}))
    out = tmp_path / "dataset"
    run = CliRunner().invoke(main, ["convert", "--from", "label-studio", "--url", project.url, "--project",
                                    str(project.id), "--skeleton", str(skeleton_file), "--split", "1,0",
                                    "--out", str(out), "--params", str(REPO / "cfg" / "params.yaml"),
                                    "--quiet"])
    assert run.exit_code == 0, run.output
    (walk_label,) = (out / "labels" / "train").glob("*walk.txt")
    first = [float(v) for v in walk_label.read_text().splitlines()[0].split()]
    np.testing.assert_allclose(first[5:8], [90 / WALK[0], 50 / WALK[1], 2], atol=1e-6)
    (walk_image,) = (out / "images" / "train").glob("*walk.png")
    assert walk_image.read_bytes() == (project.images / "walk.png").read_bytes()
    key = project.api_key.encode()
    assert project.api_key not in run.output
    assert not [p for p in out.rglob("*") if p.is_file() and key in p.read_bytes()]


def test_live_read_downloads_images_and_matches_the_export(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", project.api_key)
    downloads = tmp_path / "downloads"
    dataset = read_labelstudio_live(project.url, project.id, downloads, skeleton=SKELETON)
    names = {image.file_name: image for image in dataset.images}
    walk_name = next(n for n in names if n.endswith("-walk.png"))
    phone_name = next(n for n in names if n.endswith("-phone.jpg"))
    _check_dataset(dataset, {"walk.png": walk_name, "phone.jpg": phone_name})
    # The downloaded files are the uploaded bytes (EXIF block included), and no key was written.
    assert (downloads / walk_name).read_bytes() == (project.images / "walk.png").read_bytes()
    assert (downloads / phone_name).read_bytes() == (project.images / "phone.jpg").read_bytes()
    assert project.api_key not in json.dumps(dataset.report.to_dict())


def test_live_read_with_a_wrong_key_is_one_clear_error(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-key")
    with pytest.raises(FdposeError, match=rf"{project.url}: reading project {project.id} failed \(HTTP 401"):
        read_labelstudio_live(project.url, project.id, tmp_path / "downloads")


def test_predictions_round_trip_through_label_studio(project, label_studio, tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", project.api_key)
    instances = [Instance(1, [10.5, 20.25, 150.75, 230], [[30.5, 40.5, 2], [60, 70, 1], [100.125, 200, 2]]),
                 Instance(0, [200, 10, 310, 100], [[250, 30, 2], [0, 0, 0], [0, 0, 0]])]
    predicted = ImageRecord(path=project.images / "walk.png", file_name="walk.png", width=WALK[0],
                            height=WALK[1], instances=instances)
    stranger = ImageRecord(path=project.images / "walk.png", file_name="not-in-project.png", width=WALK[0],
                           height=WALK[1], instances=[])
    report = Report()
    created = upload_predictions(project.url, project.id, [predicted, stranger],
                                 model_version="fdpose-test-1", skeleton=SKELETON, scores=[0.75, None],
                                 report=report)
    assert created == 1
    assert [(i.item, i.reason) for i in report.items] == [("not-in-project.png", "no task shows this image")]

    client = _client(label_studio)
    (prediction,) = client.predictions.list(task=project.tasks["walk.png"])
    assert prediction.model_version == "fdpose-test-1" and prediction.score == pytest.approx(0.75)
    kinds = [r["type"] for r in prediction.result]
    assert kinds.count("rectanglelabels") == 2 and kinds.count("keypointlabels") == 4
    # Keypoints go out in model_index order, each pointing at its rectangle.
    first = [r for r in prediction.result if r["type"] == "keypointlabels"][:3]
    assert [r["value"]["keypointlabels"][0] for r in first] == NAMES
    assert {r["parentID"] for r in first} == {prediction.result[0]["id"]}

    def same_as_sent(dataset) -> None:
        (walk,) = [image for image in dataset.images if image.file_name.endswith("walk.png")]
        for got, sent in zip(walk.instances, predicted.instances, strict=True):
            assert got.class_id == sent.class_id
            np.testing.assert_allclose(got.bbox, sent.bbox, atol=1e-6)
            np.testing.assert_allclose(got.keypoints, sent.keypoints, atol=1e-6)

    # Live, the export snapshot carries the full predictions.
    same_as_sent(read_labelstudio_live(project.url, project.id, tmp_path / "downloads", skeleton=SKELETON,
                                       annotation="predictions"))
    # Label Studio's quick export lists predictions by id only: reported, not guessed; the human
    # annotations are untouched by the upload.
    export = _export(label_studio, project.id, tmp_path / "with-predictions.json")
    ids_only = read_labelstudio_export(export, project.images, label_config=project.config, skeleton=SKELETON,
                                       annotation="predictions")
    assert ids_only.images == []
    assert any("prediction ids only" in item.reason for item in ids_only.report.items)
    humans = read_labelstudio_export(export, project.images, label_config=project.config, skeleton=SKELETON)
    _check_dataset(humans, {"walk.png": "walk.png", "phone.jpg": "phone.jpg"})
    # An annotator accepts the pre-annotation as it is: it comes back through the export unchanged.
    client.annotations.create(id=project.tasks["walk.png"], result=prediction.result,
                              parent_prediction=prediction.id)
    accepted = _export(label_studio, project.id, tmp_path / "accepted.json")
    same_as_sent(read_labelstudio_export(accepted, project.images, label_config=project.config,
                                         skeleton=SKELETON))


def test_local_files_storage_live_and_from_the_export(label_studio, tmp_path, monkeypatch):
    """Images served from local files storage (``/data/local-files/?d=...``): downloaded live by
    their relative path, and found by that path under --images for a file export."""
    client = _client(label_studio)
    shoot = label_studio.local_files_root / "shoot" / "day1"
    shoot.mkdir(parents=True)
    Image.new("RGB", WALK, (200, 10, 10)).save(shoot / "walk.png")
    created = client.projects.create(title="fdpose local files", label_config=CONFIG)
    storage = client.import_storage.local.create(project=created.id, path=str(shoot.parent),
                                                 recursive_scan=True, regex_filter=r".*\.png",
                                                 use_blob_urls=True, title="shoot")
    client.import_storage.local.sync(id=storage.id)
    (task,) = list(client.tasks.list(project=created.id))
    assert task.data["image"] == "/data/local-files/?d=shoot/day1/walk.png"
    result = [_rect("p1", "person", EXPECTED_WALK[0][1], WALK),
              *_point("h", "head", (90, 50), WALK, parent="p1")]
    client.annotations.create(id=task.id, result=result)

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    live = read_labelstudio_live(label_studio.url, created.id, tmp_path / "downloads", skeleton=SKELETON)
    export = read_labelstudio_export(_export(label_studio, created.id, tmp_path / "export.json"),
                                     label_studio.local_files_root, skeleton=SKELETON)
    for dataset in (live, export):
        (image,) = dataset.images
        assert image.file_name == "shoot/day1/walk.png"
        assert image.path.read_bytes() == (shoot / "walk.png").read_bytes()
        (instance,) = image.instances
        np.testing.assert_allclose(instance.bbox, EXPECTED_WALK[0][1], atol=1e-6)
        np.testing.assert_allclose(instance.keypoints, [[90, 50, 2], [0, 0, 0], [0, 0, 0]], atol=1e-6)
    assert live.images[0].path == tmp_path / "downloads" / "shoot" / "day1" / "walk.png"
