"""Label Studio export reader: every rule of the module docstring, on hand-written exports."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.errors import FdposeError
from pipeline.images import orient_points
from pipeline.labelstudio.client import ImageFetcher
from pipeline.labelstudio.config import parse_label_config
from pipeline.labelstudio.images import FolderImages, ServerImages, UnresolvedImage, parse_image_ref
from pipeline.labelstudio.predictions import prediction_result
from pipeline.labelstudio.reader import read_labelstudio_export, read_labelstudio_live
from pipeline.skeleton import Skeleton

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
  <Choices name="vis" toName="img" perRegion="true"><Choice value="occluded"/></Choices>
</View>"""
NAMES = ["head", "neck", "tail"]


def rect(rid, label, x, y, w, h, rotation=0.0, size=(200, 100), image_rotation=0):
    return {"id": rid, "type": "rectanglelabels", "from_name": "box", "to_name": "img",
            "original_width": size[0], "original_height": size[1], "image_rotation": image_rotation,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                      "rectanglelabels": [label]}}


def kp(rid, label, x, y, parent=None, size=(200, 100), image_rotation=0):
    item = {"id": rid, "type": "keypointlabels", "from_name": "kp", "to_name": "img",
            "original_width": size[0], "original_height": size[1], "image_rotation": image_rotation,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}
    if parent:
        item["parentID"] = parent
    return item


def choice(rid, value):
    return {"id": rid, "type": "choices", "from_name": "vis", "to_name": "img", "value": {"choices": [value]}}


def annotation(aid, result, updated="2024-01-01T00:00:00Z", cancelled=False, ground_truth=False):
    return {"id": aid, "result": result, "updated_at": updated, "created_at": updated,
            "was_cancelled": cancelled, "ground_truth": ground_truth}


def task(tid, image, annotations, predictions=None):
    return {"id": tid, "data": {"image": image}, "annotations": annotations, "predictions": predictions or []}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (200, 100)).save(images / "a.jpg")
    Image.new("RGB", (200, 100)).save(images / "b.jpg")
    return images


def write(tmp_path: Path, tasks, config: str | None = CONFIG) -> tuple[Path, Path | None]:
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    if config is None:
        return export, None
    path = tmp_path / "config.xml"
    path.write_text(config)
    return export, path


def read(tmp_path, root, tasks, config=CONFIG, **kwargs):
    export, config_path = write(tmp_path, tasks, config)
    return read_labelstudio_export(export, root, label_config=config_path, **kwargs)


def reasons(dataset) -> list[str]:
    return [f"{i.action}: {i.reason}" for i in dataset.report.items]


# --- grouping, order, coordinates ----------------------------------------------------------------


def test_keypoints_grouped_by_parent_in_model_index_order(tmp_path, root):
    result = [rect("r1", "person", 10, 10, 30, 60), rect("r2", "dog", 50, 10, 40, 80),
              kp("k1", "tail", 20, 50, parent="r1"), kp("k2", "head", 15, 20, parent="r1"),
              kp("k3", "neck", 60, 30, parent="r2")]
    data = read(tmp_path, root, [task(1, "/data/upload/1/a.jpg", [annotation(1, result)])])
    assert data.skeleton.keypoint_names == NAMES
    assert data.skeleton.class_names == ["person", "dog"]
    (image,) = data.images
    assert (image.width, image.height, image.file_name) == (200, 100, "a.jpg")
    person, dog = image.instances
    assert person.class_id == 0 and dog.class_id == 1
    np.testing.assert_allclose(person.bbox, [20, 10, 80, 70])
    np.testing.assert_allclose(person.keypoints, [[30, 20, 2], [0, 0, 0], [40, 50, 2]])
    np.testing.assert_allclose(dog.keypoints, [[0, 0, 0], [120, 30, 2], [0, 0, 0]])
    assert data.report.items == [] and data.report.warnings == []


def test_parentless_keypoints_join_the_containing_rectangle(tmp_path, root):
    result = [rect("r1", "person", 0, 0, 50, 100), rect("r2", "person", 40, 0, 60, 100),
              kp("k1", "head", 10, 50),  # only in r1
              kp("k2", "neck", 90, 50),  # only in r2
              kp("k3", "tail", 45, 50),  # in both: ambiguous
              kp("k4", "tail", 20, 20, parent="missing")]  # dangling parent: containment, r1
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    first, second = data.images[0].instances
    np.testing.assert_allclose(first.keypoints, [[20, 50, 2], [0, 0, 0], [40, 20, 2]])
    np.testing.assert_allclose(second.keypoints, [[0, 0, 0], [180, 50, 2], [0, 0, 0]])
    found = reasons(data)
    assert "skipped: keypoint without parent inside 2 rectangles (ambiguous)" in found
    assert "repaired: parent missing not found; assigned by containment" in found


def test_parentless_keypoint_outside_every_rectangle_is_skipped(tmp_path, root):
    result = [rect("r1", "person", 0, 0, 10, 10), kp("k1", "head", 50, 50)]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    assert data.images[0].instances[0].num_labelled == 0
    assert reasons(data) == ["skipped: keypoint without parent outside every rectangle"]


def test_keypoints_without_any_rectangle_form_one_instance_with_a_margin(tmp_path, root):
    result = [kp("k1", "head", 10, 20), kp("k2", "tail", 60, 70)]  # (20, 20) and (120, 70)
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    (instance,) = data.images[0].instances
    assert instance.class_id == 0
    # extent 100 x 50 px, margin 10% of it each side: 10 px and 5 px
    np.testing.assert_allclose(instance.bbox, [10, 15, 130, 75])
    np.testing.assert_allclose(instance.keypoints[:, 2], [2, 0, 2])


def test_single_keypoint_gets_a_minimum_box_clipped_to_the_image(tmp_path, root):
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, [kp("k1", "head", 0, 50)])])])
    np.testing.assert_allclose(data.images[0].instances[0].bbox, [0, 48, 2, 52])  # 1% of 200 px


def test_config_without_model_index_uses_label_order_with_a_warning():
    config = parse_label_config(CONFIG.replace(' model_index="2"', "").replace(' model_index="0"', "")
                                .replace(' model_index="1"', ""), "c.xml")
    assert config.keypoint_names == ["tail", "head", "neck"]
    assert "no model_index" in config.warnings[0]


def test_partial_or_duplicate_model_index_is_an_error():
    with pytest.raises(FdposeError, match=r"model_index missing on labels \['tail'\]"):
        parse_label_config(CONFIG.replace(' model_index="2"', ""), "c.xml")
    with pytest.raises(FdposeError, match="duplicate model_index"):
        parse_label_config(CONFIG.replace('model_index="2"', 'model_index="0"'), "c.xml")
    with pytest.raises(FdposeError, match="invalid label config XML"):
        parse_label_config("<View><Image", "c.xml")
    with pytest.raises(FdposeError, match="no <KeyPointLabels>"):
        parse_label_config("<View><Image name='i' value='$image'/></View>", "c.xml")


def test_without_config_or_skeleton_order_is_first_appearance_with_a_warning(tmp_path, root):
    result = [rect("r1", "dog", 0, 0, 100, 100), kp("k1", "neck", 10, 10, parent="r1"),
              kp("k2", "head", 20, 10, parent="r1")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)]),
                                 task(2, "b.jpg", [annotation(2, [kp("k3", "tail", 5, 5), *result[1:2]])])],
                config=None)
    assert data.skeleton.keypoint_names == ["neck", "head", "tail"]
    assert data.skeleton.class_names == ["dog"]
    assert any("first appearance ['neck', 'head', 'tail']" in w for w in data.report.warnings)


def test_skeleton_gives_order_classes_and_must_agree_with_the_config(tmp_path, root):
    skeleton = Skeleton(keypoint_names=["tail", "neck", "head"], class_names=["cat"])
    result = [rect("r1", "cat", 0, 0, 100, 100), kp("k1", "head", 10, 10, parent="r1")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])], config=None, skeleton=skeleton)
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[:, 2], [0, 0, 2])
    assert data.report.warnings == []
    with pytest.raises(FdposeError, match="disagrees with the label config's model_index order"):
        read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])], skeleton=skeleton)
    with pytest.raises(FdposeError, match="differ from the label config's"):
        read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])],
             skeleton=Skeleton(keypoint_names=["head", "neck"]))


def test_default_skeleton_classes_come_from_the_rectangles(tmp_path, root):
    skeleton = Skeleton(keypoint_names=NAMES)
    result = [rect("r1", "cat", 0, 0, 100, 100), kp("k1", "head", 10, 10, parent="r1")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])], config=None, skeleton=skeleton)
    assert data.skeleton.class_names == ["cat"]


def test_unknown_labels_are_skipped_and_reported(tmp_path, root):
    result = [rect("r1", "person", 0, 0, 50, 50), rect("r2", "unicorn", 50, 0, 50, 50),
              kp("k1", "head", 10, 10, parent="r1"), kp("k2", "horn", 20, 20, parent="r1")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    assert len(data.images[0].instances) == 1
    assert reasons(data) == ["skipped: unknown rectangle label 'unicorn'",
                             "skipped: unknown keypoint label 'horn'"]


# --- visibility ----------------------------------------------------------------------------------


def test_occlusion_choice_gives_visibility_one(tmp_path, root):
    skeleton = Skeleton(keypoint_names=NAMES, class_names=["person", "dog"], occlusion_choice="occluded")
    result = [rect("r1", "person", 0, 0, 100, 100), kp("k1", "head", 10, 10, parent="r1"),
              kp("k2", "neck", 20, 20, parent="r1"), choice("k2", "occluded"), choice("r1", "occluded")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])], skeleton=skeleton)
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[:, 2], [2, 1, 0])
    without = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    np.testing.assert_allclose(without.images[0].instances[0].keypoints[:, 2], [2, 2, 0])
    assert any("choices ['occluded'] on keypoints ignored" in w for w in without.report.warnings)


# --- annotations ---------------------------------------------------------------------------------


def _boxes(x):
    return [rect("r1", "person", x, 0, 10, 10)]


def test_latest_ground_truth_all_cancelled_and_empty(tmp_path, root):
    tasks = [
        task(1, "a.jpg", [annotation(11, _boxes(10), "2024-01-02T00:00:00Z", ground_truth=True),
                          annotation(12, _boxes(20), "2024-03-01T00:00:00Z"),
                          annotation(13, _boxes(30), "2024-05-01T00:00:00Z", cancelled=True)]),
        task(2, "b.jpg", []),
        task(3, "b.jpg", [annotation(31, _boxes(40), cancelled=True)]),
    ]
    latest = read(tmp_path, root, tasks)
    assert [im.instances[0].bbox[0] for im in latest.images] == [40.0]
    assert sorted(reasons(latest)) == ["skipped: cancelled annotation", "skipped: cancelled annotation",
                                       "skipped: empty task (no annotation)"]
    assert any("1 older annotation(s) superseded" in w for w in latest.report.warnings)
    truth = read(tmp_path, root, tasks, annotation="ground-truth")
    assert [im.instances[0].bbox[0] for im in truth.images] == [20.0]
    every = read(tmp_path, root, tasks, annotation="all")
    assert [(im.file_name, im.instances[0].bbox[0]) for im in every.images] == [
        ("a__ann11.jpg", 20.0), ("a__ann12.jpg", 40.0)]
    assert every.images[0].path == every.images[1].path == root / "a.jpg"


def test_ground_truth_mode_reports_tasks_without_one(tmp_path, root):
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, _boxes(10))])], annotation="ground-truth")
    assert data.images == [] and reasons(data) == ["skipped: no ground-truth annotation"]


def test_empty_annotation_result_and_predictions_mode(tmp_path, root):
    prediction = {"id": 5, "result": _boxes(50), "model_version": "m1", "created_at": "2024-01-01T00:00:00Z"}
    tasks = [task(1, "a.jpg", [annotation(1, [])], predictions=[prediction])]
    data = read(tmp_path, root, tasks)
    assert data.images == [] and reasons(data) == ["skipped: empty annotation (no regions)"]
    predicted = read(tmp_path, root, tasks, annotation="predictions")
    assert predicted.images[0].instances[0].bbox[0] == 100.0
    with pytest.raises(FdposeError, match="annotation must be one of"):
        read(tmp_path, root, tasks, annotation="newest")


# --- image references ----------------------------------------------------------------------------


def test_image_reference_forms():
    upload = parse_image_ref("/data/upload/3/1a2b3c4d-cat%20one.jpg")
    assert (upload.kind, upload.relative, upload.name, upload.unprefixed_name) == (
        "upload", "3/1a2b3c4d-cat one.jpg", "1a2b3c4d-cat one.jpg", "cat one.jpg")
    local = parse_image_ref("/data/local-files/?d=photos%2Fsub%2Fcat.jpg")
    assert (local.kind, local.relative, local.name) == ("local-files", "photos/sub/cat.jpg", "cat.jpg")
    url = parse_image_ref("https://example.com/bucket/x/cat.jpg?sig=1")
    assert (url.kind, url.relative, url.name) == ("url", "bucket/x/cat.jpg", "cat.jpg")
    served = parse_image_ref("http://127.0.0.1:8080/data/upload/1/abcdef12-x.png")
    assert (served.kind, served.host, served.server_path) == (
        "upload", "127.0.0.1:8080", "/data/upload/1/abcdef12-x.png")
    assert parse_image_ref("../../etc/passwd").relative is None
    assert parse_image_ref("/abs/cat.jpg").relative is None
    assert parse_image_ref("C:\\data\\cat.jpg").name == "cat.jpg"


def test_images_resolve_by_path_then_name_then_unprefixed_name(tmp_path):
    root = tmp_path / "images"
    for rel in ("photos/sub/cat.jpg", "3/1a2b3c4d-dog.jpg", "x/bird.jpg", "one/same.jpg", "two/same.jpg",
                "fish.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    images = FolderImages(root)
    local = parse_image_ref("/data/local-files/?d=photos/sub/cat.jpg")
    assert images.resolve(local) == (root / "photos/sub/cat.jpg", "photos/sub/cat.jpg")
    assert images.resolve(parse_image_ref("/data/upload/3/1a2b3c4d-dog.jpg"))[1] == "3/1a2b3c4d-dog.jpg"
    assert images.resolve(parse_image_ref("/data/upload/9/1a2b3c4d-bird.jpg"))[1] == "x/bird.jpg"
    assert images.resolve(parse_image_ref("https://h/other/bird.jpg"))[1] == "x/bird.jpg"
    assert images.resolve(parse_image_ref("/mnt/somewhere/fish.jpg"))[1] == "fish.jpg"
    with pytest.raises(UnresolvedImage, match=r"ambiguous image: file name 'same.jpg' matches 2 files"):
        images.resolve(parse_image_ref("same.jpg"))
    with pytest.raises(UnresolvedImage, match="ambiguous image: name without upload prefix"):
        images.resolve(parse_image_ref("/data/upload/1/deadbeef-same.jpg"))
    with pytest.raises(UnresolvedImage, match="image not found"):
        images.resolve(parse_image_ref("/data/upload/1/deadbeef-none.jpg"))
    # A path leaving the folder is never followed, even when the file exists there.
    (tmp_path / "outside.jpg").write_bytes(b"")
    with pytest.raises(UnresolvedImage, match="image not found"):
        images.resolve(parse_image_ref("../outside.jpg"))


def test_missing_ambiguous_duplicate_and_corrupt_images_are_skipped_and_counted(tmp_path, root):
    (root / "dup1").mkdir()
    (root / "dup2").mkdir()
    Image.new("RGB", (200, 100)).save(root / "dup1" / "c.jpg")
    Image.new("RGB", (200, 100)).save(root / "dup2" / "c.jpg")
    (root / "broken.jpg").write_bytes(b"not an image")
    result = _boxes(10)
    tasks = [task(1, "missing.jpg", [annotation(1, result)]), task(2, "c.jpg", [annotation(2, result)]),
             task(3, "a.jpg", [annotation(3, result)]), task(4, "/data/upload/1/0123abcd-a.jpg",
                                                           [annotation(4, result)]),
             task(5, "broken.jpg", [annotation(5, result)]), {"id": 6, "data": {}, "annotations": [
                 annotation(6, result)]}, "junk"]
    data = read(tmp_path, root, tasks)
    assert [im.file_name for im in data.images] == ["a.jpg"]
    found = reasons(data)
    assert found[0].startswith("skipped: image not found")
    assert found[1].startswith("skipped: ambiguous image: file name 'c.jpg' matches 2 files")
    assert found[2] == "skipped: image a.jpg already used by task 3 annotation 3"
    assert found[3].startswith("skipped: unreadable image")
    assert found[4:] == ["skipped: no image reference in the task data",
                         "skipped: not a Label Studio task (not an object)"]


# --- geometry: rotation, EXIF, clipping, NaN -----------------------------------------------------


def test_rotated_rectangle_box_is_its_corners_extent(tmp_path, root):
    # 40 x 20 px at (100, 20), turned 90 degrees clockwise about its top-left corner: the far corner
    # lands at (100 - 20, 20 + 40).
    result = [rect("r1", "person", 50, 20, 20, 20, rotation=90), kp("k1", "head", 45, 50)]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])])
    (instance,) = data.images[0].instances
    np.testing.assert_allclose(instance.bbox, [80, 20, 100, 60], atol=1e-9)
    assert instance.num_labelled == 1  # (90, 50) lies inside the turned rectangle


def test_image_rotation_current_and_legacy_frames(tmp_path, root):
    # Current Label Studio: coordinates stay in the image frame whatever the view rotation.
    current = [kp("k1", "head", 25, 40, image_rotation=90)]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, current)])])
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [50, 40, 2])
    # Older Label Studio: the view (100 x 200 after a 90 degree clockwise turn) held the coordinates.
    # View point (u, v) = (25% of 100, 40% of 200) = (25, 80) is image point (v, H - u) = (80, 75).
    legacy = [kp("k1", "head", 25, 40, size=(100, 200), image_rotation=90)]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, legacy)])])
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [80, 75, 2])
    legacy_ccw = [kp("k1", "head", 25, 40, size=(100, 200), image_rotation=270)]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, legacy_ccw)])])
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [200 - 80, 25, 2])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_mapping_matches_pil_exif_transpose(orientation):
    raw = Image.new("L", (40, 20))
    raw.putpixel((7, 3), 255)
    exif = raw.getexif()
    exif[0x0112] = orientation
    raw.info["exif"] = exif.tobytes()
    shown = ImageOps.exif_transpose(raw)
    ys, xs = np.nonzero(np.asarray(shown))
    # Pixel centres: raw (7.5, 3.5) must land on the centre of the lit pixel.
    x, y = orient_points(np.array([[7.5, 3.5]]), orientation, 40, 20)[0]
    assert (float(x), float(y)) == (xs[0] + 0.5, ys[0] + 0.5)


def _exif_image(path: Path, orientation: int) -> None:
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_exif_rotated_image_oriented_and_raw_frames(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    _exif_image(root / "phone.jpg", 6)  # stored 40 x 20, shown 20 x 40
    oriented = [kp("k1", "head", 25, 10, size=(20, 40))]
    data = read(tmp_path, root, [task(1, "phone.jpg", [annotation(1, oriented)])])
    image = data.images[0]
    assert (image.width, image.height) == (20, 40)
    np.testing.assert_allclose(image.instances[0].keypoints[0], [5, 4, 2])
    assert data.report.items == []
    # Labelled in a browser that ignored EXIF: percentages of the stored 40 x 20 frame.
    raw = [kp("k1", "head", 25, 10, size=(40, 20))]  # raw (10, 2) -> shown (20 - 2, 10)
    data = read(tmp_path, root, [task(1, "phone.jpg", [annotation(1, raw)])])
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [18, 10, 2])
    assert "EXIF orientation 6" in reasons(data)[0]


def test_size_mismatch_is_skipped_but_scaled_copies_convert(tmp_path, root):
    other = [kp("k1", "head", 50, 50, size=(300, 300))]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, other)])])
    assert data.images == [] and "another image?" in reasons(data)[0]
    scaled = [kp("k1", "head", 50, 50, size=(400, 200))]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, scaled)])])
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [100, 50, 2])
    assert "percentages applied to the image's size" in reasons(data)[0]


def test_keypoint_outside_is_clipped_or_an_error_when_strict(tmp_path, root):
    tasks = [task(1, "a.jpg", [annotation(1, [kp("k1", "head", 110, 50)])])]
    data = read(tmp_path, root, tasks)
    np.testing.assert_allclose(data.images[0].instances[0].keypoints[0], [200, 50, 2])
    assert reasons(data) == ["repaired: keypoint (220.00, 50.00) outside the 200x100 image (clipped)"]
    with pytest.raises(FdposeError, match=r"export.json: task 1 annotation 1 region k1: keypoint \(220.00"):
        read(tmp_path, root, tasks, strict=True)


def test_nan_and_missing_coordinates(tmp_path, root):
    bad = kp("k1", "head", 10, 10)
    bad["value"]["x"] = float("nan")
    missing = rect("r1", "person", 0, 0, 50, 50)
    del missing["value"]["width"]
    tasks = [task(1, "a.jpg", [annotation(1, [bad, missing, kp("k2", "neck", 20, 20)])])]
    data = read(tmp_path, root, tasks)
    assert data.images[0].instances[0].keypoints[1, 2] == 2
    found = reasons(data)
    assert found[0].startswith("skipped: missing, NaN or infinite coordinate {'x': nan}")
    assert found[1].startswith("skipped: missing, NaN or infinite coordinate {'width': None}")
    with pytest.raises(FdposeError, match="NaN or infinite"):
        read(tmp_path, root, tasks, strict=True)


def test_bad_json_and_bad_files_are_one_clear_error(tmp_path, root):
    export = tmp_path / "export.json"
    export.write_text('[{"id": 1, "data": {"image": "a.jpg"}, "annotations": [')
    with pytest.raises(FdposeError, match=r"export.json: invalid or truncated JSON"):
        read_labelstudio_export(export, root)
    export.write_text('{"not": "tasks"}')
    with pytest.raises(FdposeError, match="expected a Label Studio JSON export"):
        read_labelstudio_export(export, root)
    export.write_text("[]")
    with pytest.raises(FdposeError, match="holds no tasks"):
        read_labelstudio_export(export, root)
    with pytest.raises(FdposeError, match="export file not found"):
        read_labelstudio_export(tmp_path / "nope.json", root)
    export.write_text(json.dumps([task(1, "a.jpg", [annotation(1, _boxes(1))])]))
    with pytest.raises(FdposeError, match="images folder not found"):
        read_labelstudio_export(export, tmp_path / "no-images")


# --- predictions out -----------------------------------------------------------------------------


def test_prediction_result_round_trips_through_the_reader(tmp_path, root):
    config = parse_label_config(CONFIG)
    skeleton = Skeleton(keypoint_names=NAMES, class_names=["person", "dog"], occlusion_choice="occluded")
    result = [rect("r1", "dog", 10, 10, 30, 60), kp("k1", "tail", 20, 50, parent="r1"),
              kp("k2", "head", 15, 20, parent="r1"), choice("k2", "occluded")]
    data = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, result)])], skeleton=skeleton)
    produced = prediction_result(data.images[0], skeleton, config)
    assert [r["type"] for r in produced] == ["rectanglelabels", "keypointlabels", "choices", "keypointlabels"]
    assert [r["value"].get("keypointlabels") for r in produced[1::2]] == [["head"], ["tail"]]  # model order
    assert all(r.get("parentID") == produced[0]["id"] for r in produced if r["type"] == "keypointlabels")
    again = read(tmp_path, root, [task(1, "a.jpg", [annotation(1, produced)])], skeleton=skeleton)
    np.testing.assert_allclose(again.images[0].instances[0].keypoints, data.images[0].instances[0].keypoints)
    np.testing.assert_allclose(again.images[0].instances[0].bbox, data.images[0].instances[0].bbox)


# --- live server: what fails before or without a server ------------------------------------------


def test_live_read_needs_the_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(FdposeError, match="set LABEL_STUDIO_API_KEY"):
        read_labelstudio_live("http://127.0.0.1:9", 1, tmp_path)


def test_live_read_from_an_unreachable_server_is_one_clear_error(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-key-123")
    expected = rf"http://127.0.0.1:{port}: reading project 7 failed \(ConnectError"
    with pytest.raises(FdposeError, match=expected) as info:
        read_labelstudio_live(f"http://127.0.0.1:{port}", 7, tmp_path)
    assert "secret-key-123" not in str(info.value)


def test_server_images_never_send_the_key_elsewhere(tmp_path, monkeypatch):
    asked = []
    fetcher = ImageFetcher("http://127.0.0.1:8080", "secret-key-123")
    monkeypatch.setattr(fetcher, "get", lambda url: asked.append(url) or b"")
    images = ServerImages(fetcher, tmp_path)
    try:
        for reference in ("https://example.com/cat.jpg", "photos/cat.jpg",
                          "http://127.0.0.1:9999/data/upload/1/abcdef12-a.jpg"):
            with pytest.raises(UnresolvedImage, match="not served by http://127.0.0.1:8080; not downloaded"):
                images.resolve(parse_image_ref(reference))
    finally:
        fetcher.close()
    assert asked == []
