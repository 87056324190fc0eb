"""COCO ground truth written from the hub loads in pycocotools with the COCO conventions."""

from __future__ import annotations

import json

import numpy as np
from pycocotools.coco import COCO

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.formats.coco_write import dataset_to_coco, write_coco
from pipeline.skeleton import COCO_PERSON_KEYPOINTS, Skeleton


def _dataset() -> Dataset:
    skeleton = Skeleton(COCO_PERSON_KEYPOINTS, class_names=["person", "robot"])
    keypoints = np.zeros((17, 3))
    keypoints[0] = [10, 20, 2]
    keypoints[5] = [30, 40, 1]
    keypoints[6] = [99, 99, 0]  # unlabelled: written as 0, 0, 0
    images = [
        ImageRecord("a.jpg", "a.jpg", 100, 80, [Instance(0, [5, 10, 45, 70], keypoints)], split="train"),
        ImageRecord(
            "b.jpg",
            "b.jpg",
            64,
            64,
            [Instance(1, [0, 0, 10, 20], keypoints), Instance(0, [1, 1, 2, 2], np.zeros((17, 3)))],
            split="val",
        ),
    ]
    return Dataset(skeleton, images)


def test_coco_ground_truth_loads_in_pycocotools(tmp_path):
    out = write_coco(_dataset(), tmp_path / "gt.json")
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert sorted(coco.getAnnIds()) == [1, 2, 3]  # 1-based: pycocotools treats id 0 as falsy
    first = coco.loadAnns([1])[0]
    assert first["bbox"] == [5.0, 10.0, 40.0, 60.0]
    assert first["area"] == 2400.0
    assert first["num_keypoints"] == 2
    assert first["keypoints"][:3] == [10.0, 20.0, 2] and first["keypoints"][15:21] == [30.0, 40.0, 1, 0, 0, 0]
    category = coco.loadCats([1])[0]
    assert category["keypoints"] == COCO_PERSON_KEYPOINTS
    assert [16, 14] in category["skeleton"]  # COCO's 1-based edge (left ankle, left knee)
    assert coco.loadCats([2])[0]["name"] == "robot"
    assert coco.loadAnns([2])[0]["category_id"] == 2


def test_split_selection_and_area_rule():
    coco = dataset_to_coco(_dataset(), split="val", area_fn=lambda inst: 106.0)
    assert [im["file_name"] for im in coco["images"]] == ["b.jpg"]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1]
    assert [a["id"] for a in coco["annotations"]] == [1, 2]
    assert coco["annotations"][0]["area"] == 106.0
    json.dumps(coco)  # plain JSON types only
