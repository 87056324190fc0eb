"""Writing the hub as COCO keypoints ground truth (:func:`dataset_to_coco`, :func:`write_coco`).

It follows the COCO keypoint convention that pycocotools and faster-coco-eval load: 1-based image,
annotation and category ids, ``bbox`` as ``[x, y, w, h]`` in pixels, ``keypoints`` as flat ``x, y, v``
triples, ``num_keypoints`` (labelled points), ``area``, ``iscrowd = 0``, and one category per class
carrying the keypoint names and the 1-based ``skeleton``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.io import write_json


def box_area(instance: Instance) -> float:
    """The default COCO ``area``: the box's area in pixels (the hub keeps no segmentation)."""
    x0, y0, x1, y1 = instance.bbox
    return float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))


def dataset_to_coco(dataset: Dataset, *, split: str | None = None,
                    area_fn: Callable[[Instance], float] | None = None,
                    file_name_fn: Callable[[ImageRecord], str] | None = None) -> dict[str, Any]:
    """The dataset, or its images of one ``split``, as a COCO keypoint ground-truth mapping.

    Image ids are ``1..n`` in the order of ``dataset.images`` (restricted to ``split``), annotation
    ids ``1..m`` in image order, category ids ``class_id + 1``. ``area_fn(instance)`` gives each
    annotation's ``area`` (the box area by default; ultralytics-style OKS uses ``0.53 * box area``).
    ``file_name_fn(image)`` names each image (its ``file_name`` by default).
    """
    area_fn = area_fn or box_area
    skeleton = dataset.skeleton
    edges = [[a + 1, b + 1] for a, b in skeleton.edges]
    categories = [
        {"id": class_id + 1, "name": name, "supercategory": name,
         "keypoints": list(skeleton.keypoint_names), "skeleton": edges}
        for class_id, name in enumerate(skeleton.class_names)
    ]
    images = []
    annotations = []
    selected = [im for im in dataset.images if split is None or (im.split or "train") == split]
    for image_id, image in enumerate(selected, start=1):
        images.append({"id": image_id, "width": int(image.width), "height": int(image.height),
                       "file_name": file_name_fn(image) if file_name_fn else image.file_name})
        for instance in image.instances:
            x0, y0, x1, y1 = (float(v) for v in instance.bbox)
            keypoints = np.array(instance.keypoints, dtype=np.float64)
            keypoints[keypoints[:, 2] <= 0, :2] = 0.0
            flat: list[float | int] = []
            for x, y, v in keypoints:
                flat.extend((float(x), float(y), int(v)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(instance.class_id) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(area_fn(instance)),
                "iscrowd": 0,
                "keypoints": flat,
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            })
    return {
        "info": {"description": "written by fdpose"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco(dataset: Dataset, out_json: str | Path, *, split: str | None = None,
               area_fn: Callable[[Instance], float] | None = None,
               file_name_fn: Callable[[ImageRecord], str] | None = None) -> Path:
    """Write :func:`dataset_to_coco` to ``out_json`` atomically (deterministic JSON)."""
    coco = dataset_to_coco(dataset, split=split, area_fn=area_fn, file_name_fn=file_name_fn)
    return write_json(out_json, coco, indent=None)
