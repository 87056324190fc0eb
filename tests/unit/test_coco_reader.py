"""COCO keypoint files as real ones are, and every kind of bad input: read, repaired or refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import FdposeError
from pipeline.formats.coco import read_coco
from pipeline.images import safe_relative_name
from pipeline.skeleton import Skeleton

NAMES = ["nose", "left_eye", "right_eye"]


def make_image(path: Path, size=(100, 80), exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (10, 20, 30))
    if exif_orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif)
    return path


def coco_file(tmp_path: Path, annotations: list, images=None, categories=None, name="coco.json") -> Path:
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}]
    for entry in images:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("file_name"), str)
            and "//" not in entry["file_name"]
        ):
            target = tmp_path / "img" / entry["file_name"]
            if target.resolve().is_relative_to((tmp_path / "img").resolve()) and not target.exists():
                make_image(target, (entry.get("width", 100), entry.get("height", 80)))
    categories = categories if categories is not None else [{"id": 1, "name": "person", "keypoints": NAMES}]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    (tmp_path / "img").mkdir(exist_ok=True)
    return path


def ann(id=1, image_id=1, keypoints=(10, 20, 2, 30, 40, 1, 0, 0, 0), bbox=(5, 10, 40, 50), **extra):
    out = {"id": id, "image_id": image_id, "category_id": 1, "keypoints": list(keypoints), **extra}
    if bbox is not None:
        out["bbox"] = list(bbox)
    return out


def reasons(dataset) -> list[str]:
    return [f"{i.action}: {i.item}: {i.reason}" for i in dataset.report.items]


def test_reads_keypoints_boxes_and_visibility_in_pixels(tmp_path):
    dataset = read_coco(coco_file(tmp_path, [ann()]), tmp_path / "img")
    assert dataset.skeleton.keypoint_names == NAMES and dataset.skeleton.class_names == ["person"]
    (image,) = dataset.images
    assert (image.width, image.height, image.file_name) == (100, 80, "a.png")
    (instance,) = image.instances
    np.testing.assert_array_equal(instance.bbox, [5, 10, 45, 60])
    np.testing.assert_array_equal(instance.keypoints, [[10, 20, 2], [30, 40, 1], [0, 0, 0]])
    assert dataset.report.items == []


def test_categories_without_names_take_k_from_annotations(tmp_path):
    path = coco_file(tmp_path, [ann()], categories=[{"id": 1, "name": "face", "keypoints": []}])
    dataset = read_coco(path, tmp_path / "img")
    assert dataset.skeleton.keypoint_names == ["kp0", "kp1", "kp2"]
    assert any("3 keypoints taken from the annotations" in w for w in dataset.report.warnings)


def test_categories_sharing_a_layout_become_classes(tmp_path):
    categories = [{"id": 7, "name": "cat", "keypoints": NAMES}, {"id": 9, "name": "dog", "keypoints": NAMES}]
    annotations = [{**ann(1), "category_id": 7}, {**ann(2), "category_id": 9}]
    dataset = read_coco(coco_file(tmp_path, annotations, categories=categories), tmp_path / "img")
    assert dataset.skeleton.class_names == ["cat", "dog"]
    assert [i.class_id for i in dataset.images[0].instances] == [0, 1]


def test_different_layouts_in_use_are_refused(tmp_path):
    categories = [
        {"id": 1, "name": "cat", "keypoints": NAMES},
        {"id": 2, "name": "hand", "keypoints": ["a", "b"]},
    ]
    annotations = [ann(1), {**ann(2, keypoints=[1, 1, 2, 2, 2, 2]), "category_id": 2}]
    with pytest.raises(FdposeError, match="different keypoint layouts"):
        read_coco(coco_file(tmp_path, annotations, categories=categories), tmp_path / "img")


def test_pairs_flat_and_nested(tmp_path):
    annotations = [
        ann(1, keypoints=[10, 20, 30, 40, 0, 0]),
        ann(2, keypoints=[[11, 21], [31, 41], [0, 0]]),
        ann(3, keypoints=[[12, 22, 2], [32, 42, 1], [0, 0, 0]]),
    ]
    dataset = read_coco(coco_file(tmp_path, annotations), tmp_path / "img")
    points = [i.keypoints for i in dataset.images[0].instances]
    np.testing.assert_array_equal(points[0], [[10, 20, 2], [30, 40, 2], [0, 0, 0]])
    np.testing.assert_array_equal(points[1], [[11, 21, 2], [31, 41, 2], [0, 0, 0]])
    np.testing.assert_array_equal(points[2], [[12, 22, 2], [32, 42, 1], [0, 0, 0]])


def test_missing_bbox_is_derived_and_reported(tmp_path):
    dataset = read_coco(coco_file(tmp_path, [ann(bbox=None)]), tmp_path / "img")
    np.testing.assert_array_equal(dataset.images[0].instances[0].bbox, [10, 20, 30, 40])
    assert reasons(dataset) == ["repaired: annotation 1: no bbox; derived from the labelled keypoints"]


def test_crowd_skipped_and_unlabelled_kept_unless_dropped(tmp_path):
    annotations = [ann(1), ann(2, iscrowd=1), ann(3, keypoints=[0] * 9, num_keypoints=0)]
    path = coco_file(tmp_path, annotations)
    dataset = read_coco(path, tmp_path / "img")
    assert len(dataset.images[0].instances) == 2
    assert dataset.images[0].instances[1].num_labelled == 0
    assert reasons(dataset) == ["skipped: annotation 2: iscrowd (a crowd region, not one instance)"]
    dropped = read_coco(path, tmp_path / "img", drop_unlabelled=True)
    assert len(dropped.images[0].instances) == 1
    assert "skipped: annotation 3: no labelled keypoints (--drop-unlabelled)" in reasons(dropped)


def test_sub_folders_and_string_ids(tmp_path):
    images = [{"id": "img-a", "file_name": "seq1/000001.png", "width": 100, "height": 80}]
    annotations = [ann("x1", image_id="img-a")]
    dataset = read_coco(coco_file(tmp_path, annotations, images=images), tmp_path / "img")
    assert dataset.images[0].file_name == "seq1/000001.png"
    assert dataset.images[0].instances[0].source == "annotation 'x1'"


@pytest.mark.parametrize(
    "name",
    ["../outside.png", "/etc/passwd", "http://example.com/a.png", "C:\\images\\a.png", "a/../../b.png", ""],
)
def test_names_escaping_the_root_are_rejected(name):
    assert safe_relative_name(name) is None


def test_escaping_and_missing_and_corrupt_images_are_skipped_with_reasons(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "../escape.png", "width": 100, "height": 80},
        {"id": 3, "file_name": "https://other.host/x.jpg", "width": 100, "height": 80},
        {"id": 4, "file_name": "missing.png", "width": 100, "height": 80},
        {"id": 5, "file_name": "corrupt.png", "width": 100, "height": 80},
    ]
    make_image(tmp_path / "escape.png")
    path = coco_file(tmp_path, [ann(i, image_id=i) for i in range(1, 6)], images=images)
    (tmp_path / "img" / "missing.png").unlink()
    (tmp_path / "img" / "corrupt.png").write_bytes(b"not an image at all")
    dataset = read_coco(path, tmp_path / "img")
    assert [im.file_name for im in dataset.images] == ["a.png"]
    lines = reasons(dataset)
    assert any("image 2" in line and "escapes the images root" in line for line in lines)
    assert any("image 3" in line and "escapes the images root" in line for line in lines)
    assert any("image 4" in line and "image file not found (1 annotations)" in line for line in lines)
    assert any("image 5" in line and "corrupt or unreadable image" in line for line in lines)


def test_duplicate_ids(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "c.png", "width": 100, "height": 80},
    ]
    annotations = [ann(1), ann(1), ann(3, image_id=2)]
    dataset = read_coco(coco_file(tmp_path, annotations, images=images), tmp_path / "img")
    assert [im.file_name for im in dataset.images] == ["a.png"]
    assert len(dataset.images[0].instances) == 1
    lines = reasons(dataset)
    assert "skipped: annotation 1: duplicate annotation id" in lines
    assert sum("duplicate image id" in line for line in lines) == 2


def test_nan_wrong_count_and_unknown_category(tmp_path):
    annotations = [
        ann(1),
        ann(2, keypoints=[10, 20, 2, float("nan"), 40, 2, 0, 0, 0]),
        ann(3, keypoints=[1, 2, 2]),
        {**ann(4), "category_id": 99},
        ann(5, keypoints=[10, "x", 2, 0, 0, 0, 0, 0, 0]),
    ]
    text = json.dumps(
        {
            "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": NAMES}],
        }
    )
    assert "NaN" in text
    path = tmp_path / "coco.json"
    path.write_text(text)
    make_image(tmp_path / "img" / "a.png")
    dataset = read_coco(path, tmp_path / "img")
    lines = reasons(dataset)
    assert (
        "repaired: annotation 2: keypoints [1] have NaN or infinite coordinates; marked unlabelled" in lines
    )
    assert "skipped: annotation 3: expected 3 keypoints (9 or 6 values), found 3 values" in lines
    assert any(line.startswith("skipped: annotation 4: category_id 99 is not") for line in lines)
    assert "skipped: annotation 5: non-numeric or ragged keypoint values" in lines
    assert [i.source for i in dataset.images[0].instances] == ["annotation 1", "annotation 2"]
    np.testing.assert_array_equal(dataset.images[0].instances[1].keypoints[1], [0, 0, 0])


def test_keypoint_outside_image_clipped_or_error_when_strict(tmp_path):
    path = coco_file(tmp_path, [ann(keypoints=[10, 20, 2, 130, 40, 2, -5, 90, 1])])
    dataset = read_coco(path, tmp_path / "img")
    np.testing.assert_array_equal(dataset.images[0].instances[0].keypoints[1:], [[100, 40, 2], [0, 80, 1]])
    assert reasons(dataset) == [
        "repaired: annotation 1: keypoints [1, 2] outside the 100x80 image (a.png); clipped"
    ]
    with pytest.raises(FdposeError, match=r"annotation 1: keypoints \[1, 2\] outside .*--strict"):
        read_coco(path, tmp_path / "img", strict=True)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [{"id": 1, "file_name": "a.png"', "invalid or truncated JSON"),
        ("not json", "invalid or truncated JSON"),
        ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9}]', "top level is a list"),
        ('{"3": {"campos": [0, 0, 0]}}', "no 'images' and 'annotations'"),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1, "image_id": 1, '
            '"joint_valid": [[1]]}]}',
            "no 2-D keypoints",
        ),
    ],
)
def test_unusable_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(FdposeError, match=message) as error:
        read_coco(path, tmp_path)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_nothing_usable_is_an_error(tmp_path):
    images = [{"id": 1, "file_name": "gone.png", "width": 100, "height": 80}]
    path = tmp_path / "coco.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": [ann()],
                "categories": [{"id": 1, "name": "p", "keypoints": NAMES}],
            }
        )
    )
    (tmp_path / "img").mkdir()
    with pytest.raises(FdposeError, match="no usable images.*image file not found"):
        read_coco(path, tmp_path / "img")


def test_skeleton_disagreeing_with_data_names_both(tmp_path):
    path = coco_file(tmp_path, [ann()])
    other = Skeleton(["head", "tail", "paw"])
    with pytest.raises(FdposeError) as error:
        read_coco(path, tmp_path / "img", skeleton=other, skeleton_source="cfg/skeletons/cat.yaml")
    assert "cfg/skeletons/cat.yaml" in str(error.value) and str(path) in str(error.value)
    count = Skeleton(["a", "b", "c", "d"])
    nameless = coco_file(tmp_path, [ann()], categories=[{"id": 1, "name": "x"}], name="nameless.json")
    with pytest.raises(FdposeError, match="3 keypoints per annotation but .* names 4"):
        read_coco(nameless, tmp_path / "img", skeleton=count)


def test_skeleton_with_the_same_names_reorders_keypoints(tmp_path):
    path = coco_file(tmp_path, [ann()])
    skeleton = Skeleton(["right_eye", "left_eye", "nose"], class_names=["person"])
    dataset = read_coco(path, tmp_path / "img", skeleton=skeleton)
    np.testing.assert_array_equal(
        dataset.images[0].instances[0].keypoints, [[0, 0, 0], [30, 40, 1], [10, 20, 2]]
    )
    assert dataset.skeleton.flip_permutation == [1, 0, 2]


def test_exif_rotated_image_annotated_on_stored_pixels_is_turned(tmp_path):
    # Stored 100x80 with orientation 6 (rotate 90 clockwise): displayed 80x100.
    make_image(tmp_path / "img" / "a.jpg", (100, 80), exif_orientation=6)
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]
    dataset = read_coco(
        coco_file(
            tmp_path, [ann(keypoints=[10, 20, 2, 0, 0, 0, 0, 0, 0], bbox=(10, 20, 30, 40))], images=images
        ),
        tmp_path / "img",
    )
    image = dataset.images[0]
    assert (image.width, image.height) == (80, 100)
    np.testing.assert_allclose(image.instances[0].keypoints[0], [80 - 20, 10, 2])
    np.testing.assert_allclose(image.instances[0].bbox, [80 - 60, 10, 80 - 20, 40])
    assert any("EXIF orientation 6" in line for line in reasons(dataset))


def test_size_mismatch_is_skipped(tmp_path):
    make_image(tmp_path / "img" / "a.png", (50, 50))
    images = [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
    ]
    dataset = read_coco(coco_file(tmp_path, [ann(), ann(2, image_id=2)], images=images), tmp_path / "img")
    assert [im.file_name for im in dataset.images] == ["b.png"]
    assert any("size 100x80 in the file differs from the image's 50x50" in line for line in reasons(dataset))


def test_keypoint_count_that_cannot_be_told_is_an_error(tmp_path):
    path = coco_file(tmp_path, [ann(keypoints=[1, 2, 3, 4, 5])], categories=[{"id": 1, "name": "x"}])
    with pytest.raises(FdposeError, match="cannot tell the keypoint count"):
        read_coco(path, tmp_path / "img")


def test_tally_counts_every_annotation_once(tmp_path):
    # read = converted + skipped, with annotations skipped one by one and with their image.
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
              {"id": 2, "file_name": "../b.png", "width": 100, "height": 80}]
    annotations = [ann(1), ann(2, iscrowd=1), "not an object", ann(4, image_id=9), ann(5, image_id=2),
                   ann(6, image_id=2), ann(7, bbox=None, keypoints=(0, 0, 0) * 3)]
    dataset = read_coco(coco_file(tmp_path, annotations, images=images), tmp_path / "img")
    converted = sum(len(image.instances) for image in dataset.images)
    assert dataset.report.tally == {"unit": "annotations", "read": 7, "skipped": 6}
    assert converted == 1
