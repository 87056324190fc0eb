"""``fdpose convert --from label-studio`` on mutated Label Studio JSON exports."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fuzzing import encoded_json, mutated, run_convert
from hypothesis import event, given
from hypothesis import strategies as st

from pipeline.demo import label_config_xml


def rect(rid: str, label: str, x: float, y: float, w: float, h: float, rotation: float = 0.0,
         size: tuple[int, int] = (64, 48)) -> dict:
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}
    return {"id": rid, "type": "rectanglelabels", "from_name": "bbox", "to_name": "image", "origin": "manual",
            "original_width": size[0], "original_height": size[1], "image_rotation": 0, "value": value}


def point(rid: str, label: str, x: float, y: float, parent: str | None = None,
          size: tuple[int, int] = (64, 48)) -> dict:
    region = {"id": rid, "type": "keypointlabels", "from_name": "keypoints", "to_name": "image",
              "original_width": size[0], "original_height": size[1], "image_rotation": 0,
              "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}
    if parent is not None:
        region["parentID"] = parent
    return region


def occluded(rid: str) -> dict:
    return {"id": rid, "type": "choices", "from_name": "visibility", "to_name": "image",
            "value": {"choices": ["occluded"]}}


def task(task_id: int, image: str, annotations: list[dict], **extra) -> dict:
    return {"id": task_id, "data": {"image": f"/data/upload/1/1a2b3c4d-{image}"}, "annotations": annotations,
            "predictions": [], **extra}


def annotation(annotation_id: int, result: list[dict], **extra) -> dict:
    return {"id": annotation_id, "result": result, "was_cancelled": False, "ground_truth": False,
            "created_at": "2025-01-06T09:00:00Z", "updated_at": f"2025-01-06T09:0{annotation_id}:00Z",
            **extra}


BASE = [
    task(1, "a.png", [annotation(1, [rect("r1", "person", 10, 10, 50, 60), point("k1", "nose", 20, 20, "r1"),
                                      point("k2", "left_eye", 30, 40, "r1"),
                                      point("k3", "right_ankle", 40, 60, "r1"), occluded("k3")])]),
    task(2, "b.png", [annotation(2, [rect("r2", "person", 20, 10, 40, 50, rotation=30),
                                      point("k4", "nose", 30, 30), point("k5", "left_eye", 35, 40)])]),
    task(3, "turned.jpg", [annotation(3, [point("k6", "nose", 20, 20, size=(48, 64)),
                                           point("k7", "right_ankle", 60, 70, size=(48, 64))])]),
    task(4, "c.png", [annotation(4, [rect("r3", "person", 0, 0, 100, 100, size=(40, 30))],
                                 was_cancelled=True),
                      annotation(5, [rect("r4", "person", 5, 5, 50, 50, size=(40, 30)),
                                     point("k8", "left_eye", 20, 20, "r4", size=(40, 30))])]),
    task(5, "big.png", [annotation(6, [rect("r5", "person", 10, 10, 60, 70, size=(400, 300)),
                                       point("k9", "nose", 30, 30, "r5", size=(400, 300))])]),
]
OPTIONS = ([], ["--strict"], ["--drop-unlabelled"])


def run_labelstudio(raw: bytes, images: Path, options: list[str]) -> tuple[bool, str]:
    """One conversion of the export ``raw`` with the demo project's label config, and its properties."""
    with tempfile.TemporaryDirectory(prefix="fuzz-ls-") as tmp:
        source, config = Path(tmp) / "export.json", Path(tmp) / "label_config.xml"
        source.write_bytes(raw)
        config.write_text(label_config_xml(), encoding="utf-8")
        args = ["--from", "label-studio", "--input", str(source), "--images", str(images), "--label-config",
                str(config), *options]
        return run_convert(Path(tmp), args, [str(source), str(images), str(config)], read_only=images)


@given(data=st.data())
def test_mutated_label_studio_export_converts_or_fails_in_one_line(image_folder, data):
    raw = encoded_json(data.draw, mutated(data.draw, BASE))
    succeeded, _ = run_labelstudio(raw, image_folder, data.draw(st.sampled_from(OPTIONS)))
    event("converted" if succeeded else "refused")


# --- what the fuzzing found, fixed (each once a failing example) -------------------------------------

def test_export_with_a_byte_order_mark_converts(image_folder):
    # An export saved by a Windows editor; was "invalid or truncated JSON (Unexpected UTF-8 BOM ...)".
    succeeded, output = run_labelstudio(b"\xef\xbb\xbf" + json.dumps(BASE).encode(), image_folder, [])
    assert succeeded, output


def test_annotations_that_are_not_a_list_skip_the_task(image_folder):
    # Was a TypeError traceback ('bool' object is not iterable).
    tasks = json.loads(json.dumps(BASE))
    tasks[1]["annotations"] = True
    succeeded, output = run_labelstudio(json.dumps(tasks).encode(), image_folder, [])
    assert succeeded, output
    assert "1 x skipped: annotations is not a list" in output


def test_lone_surrogate_escape_is_refused_in_one_line(image_folder):
    # Was a UnicodeEncodeError traceback writing report.json (a region id "\ud800" in the export).
    raw = json.dumps(BASE).replace('"k4"', '"\\ud800"', 1).encode()
    succeeded, output = run_labelstudio(raw, image_folder, [])
    assert not succeeded and "export.json: a string holds a lone UTF-16 surrogate (\\ud800)" in output


def test_rectangle_of_height_minus_float_max_skips_its_instance(image_folder):
    # Issue 22: scaled to the 400 x 300 image the height overflows to -inf, the rotation turns it into
    # NaN, and the YOLO writer died with an IndexError; the hub's invariant now skips the instance.
    tasks = json.loads(json.dumps(BASE))
    tasks[4]["annotations"][0]["result"][0]["value"]["height"] = -1e308
    raw = json.dumps(tasks).encode()
    succeeded, output = run_labelstudio(raw, image_folder, [])
    assert succeeded and "1 x skipped: box not finite" in output, output
    succeeded, output = run_labelstudio(raw, image_folder, ["--strict"])
    assert not succeeded and "export.json: task 5 annotation 6 region r5: box not finite" in output, output
