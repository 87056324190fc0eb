"""``fdpose convert --from coco`` on mutated COCO keypoint files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fuzzing import encoded_json, mutated, run_convert
from hypothesis import event, given
from hypothesis import strategies as st

BASE = {
    "info": {"description": "fuzz base"},
    "images": [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
        {"id": "3", "file_name": "turned.jpg", "width": 48, "height": 64},
        {"id": 4, "file_name": "c.png", "width": 40, "height": 30},
        {"id": 5, "file_name": "big.png", "width": 400, "height": 300},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 300.0, "num_keypoints": 3,
         "bbox": [5.0, 6.0, 30.0, 20.0], "keypoints": [10, 10, 2, 20, 12, 2, 25, 20, 1]},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "num_keypoints": 1,
         "bbox": [40.0, 20.0, 10.0, 10.0], "keypoints": [45, 25, 2, 0, 0, 0, 0, 0, 0]},
        {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
         "keypoints": [[12, 14, 2], [30, 30, 2], [0, 0, 0]]},
        {"id": 4, "image_id": "3", "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
         "bbox": [2.0, 3.0, 20.0, 30.0], "keypoints": [5, 5, 2, 10, 20, 2, 0, 0, 0]},
        {"id": 5, "image_id": 4, "category_id": 1, "iscrowd": 0, "num_keypoints": 3,
         "bbox": [1.0, 1.0, 30.0, 25.0], "keypoints": [3, 4, 2, 20, 20, 2, 35, 25, 2]},
        {"id": 6, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": 12000.0, "num_keypoints": 2,
         "bbox": [50.0, 40.0, 120.0, 100.0], "keypoints": [60, 50, 2, 100, 80, 1, 0, 0, 0]},
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": "person",
                    "keypoints": ["nose", "left_eye", "right_eye"], "skeleton": [[1, 2], [1, 3]]}],
}
OPTIONS = ([], ["--strict"], ["--drop-unlabelled"], ["--split", "0.5,0.5"])


def run_coco(raw: bytes, images: Path, options: list[str]) -> tuple[bool, str]:
    """One conversion of the COCO file ``raw`` with the images under ``images``, and its properties."""
    with tempfile.TemporaryDirectory(prefix="fuzz-coco-") as tmp:
        source = Path(tmp) / "coco.json"
        source.write_bytes(raw)
        args = ["--from", "coco", "--input", str(source), "--images", str(images), *options]
        return run_convert(Path(tmp), args, [str(source), str(images)], read_only=images)


@given(data=st.data())
def test_mutated_coco_file_converts_or_fails_in_one_line(image_folder, data):
    raw = encoded_json(data.draw, mutated(data.draw, BASE))
    succeeded, _ = run_coco(raw, image_folder, data.draw(st.sampled_from(OPTIONS)))
    event("converted" if succeeded else "refused")


# --- what the fuzzing found, fixed (each once a failing example) -------------------------------------

def coco_bytes(edit) -> bytes:
    doc = json.loads(json.dumps(BASE))
    edit(doc)
    return json.dumps(doc).encode()


def test_duplicate_keypoint_names_are_refused_naming_the_file(image_folder):
    # Was "Error: skeleton: duplicate keypoint names [...]", naming no file.
    def edit(doc):
        doc["categories"][0]["keypoints"].insert(0, "nose")
    succeeded, output = run_coco(coco_bytes(edit), image_folder, [])
    assert not succeeded and "coco.json: categories: duplicate keypoint names" in output


def test_coco_file_with_a_byte_order_mark_converts(image_folder):
    succeeded, output = run_coco(b"\xef\xbb\xbf" + json.dumps(BASE).encode(), image_folder, [])
    assert succeeded, output


def test_lone_surrogate_in_a_file_name_is_refused_in_one_line(image_folder):
    # Once opened as an image file name (a ValueError), then unwritable in report.json.
    def edit(doc):
        doc["images"][1]["file_name"] = "\ud800.png"
    succeeded, output = run_coco(coco_bytes(edit), image_folder, [])
    assert not succeeded and "coco.json: a string holds a lone UTF-16 surrogate (\\ud800)" in output


def test_control_characters_of_the_file_are_escaped_in_the_error(image_folder):
    # Was "... (found \x1f)" with the raw control character in the Error: line.
    succeeded, output = run_coco(json.dumps({"\x1f": None}).encode(), image_folder, [])
    assert not succeeded and "no 'images' and 'annotations' (found \\x1f)" in output


def test_integer_of_5000_digits_is_refused_in_one_line(image_folder):
    # Was a ValueError traceback (Python's limit on integer digits), found with the numeric extremes.
    raw = json.dumps(BASE).replace('"width": 400', '"width": ' + "1" * 5000, 1).encode()
    succeeded, output = run_coco(raw, image_folder, [])
    assert not succeeded and "coco.json: invalid JSON number (Exceeds the limit (4300 digits)" in output


def test_bbox_beyond_the_float_range_is_derived_from_the_keypoints(image_folder):
    # Was an OverflowError traceback (10**400 in a bbox), found by `make fuzz` with the numeric extremes.
    def edit(doc):
        doc["annotations"][0]["bbox"][0] = 10**400
    succeeded, output = run_coco(coco_bytes(edit), image_folder, [])
    assert succeeded, output
    assert "is not 4 numbers with w, h > 0; derived from the labelled keypoints" in output, output


def test_category_skeleton_that_is_a_number_is_warned_about(image_folder):
    # Was a TypeError traceback ('float' object is not iterable), found by `make fuzz` (seed 1796515130).
    def edit(doc):
        doc["categories"][0]["skeleton"] = float("nan")
    succeeded, output = run_coco(coco_bytes(edit), image_folder, [])
    assert succeeded and "its skeleton is not a list of keypoint pairs (float)" in output, output
