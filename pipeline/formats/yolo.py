"""The YOLO-pose edge of the hub: ``data.yaml``, ``images/<split>/``, ``labels/<split>/*.txt``.

A label line is ``class cx cy w h`` then ``K`` keypoints as ``x y`` or ``x y v``, all normalised by
the image size and clipped to ``[0, 1]`` as ultralytics expects; an unlabelled keypoint is ``0 0 0``.
``data.yaml`` carries ultralytics' keys (``train``, ``val``, ``test``, ``names``, ``kpt_shape``,
``flip_idx``, ``kpt_names``) and ours (``skeleton`` edges, ``kpt_sigmas``). It has no ``path`` key on
purpose: ultralytics then resolves the splits against the file's own folder, so a dataset can be
moved or cached by DVC without rewriting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.dataset import SPLITS, Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.images import image_size, place_file
from pipeline.io import atomic_dir
from pipeline.skeleton import Skeleton

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".mpo", ".dng"}


def label_line(instance: Instance, width: int, height: int, kpt_dims: int) -> str:
    """One label line, normalised and clipped; deterministic formatting (6 decimals)."""
    x0, y0, x1, y1 = instance.bbox
    x0, x1 = np.clip([x0, x1], 0, width) / width
    y0, y1 = np.clip([y0, y1], 0, height) / height
    values = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
    for x, y, v in instance.keypoints:
        if v > 0:
            point = [min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)]
        else:
            point = [0.0, 0.0]
        values.extend(point)
        if kpt_dims == 3:
            values.append(float(int(v)))
    body = " ".join(f"{value:.6f}" for value in values)
    return f"{instance.class_id} {body}"


def parse_label_line(line: str, width: int, height: int, skeleton: Skeleton, source: object,
                     line_number: int) -> Instance:
    k, dims = skeleton.kpt_shape
    fields = line.split()
    expected = 5 + k * dims
    if len(fields) != expected:
        raise FdposeError(f"expected {expected} values for kpt_shape {[k, dims]}, found {len(fields)}",
                          path=source, item=f"line {line_number}")
    try:
        class_id = int(fields[0])
        values = np.array([float(f) for f in fields[1:]], dtype=np.float64)
    except ValueError:
        raise FdposeError("non-numeric value", path=source, item=f"line {line_number}") from None
    if not np.isfinite(values).all():
        raise FdposeError("NaN or infinite value", path=source, item=f"line {line_number}")
    if not 0 <= class_id < len(skeleton.class_names):
        raise FdposeError(f"class {class_id} outside 0..{len(skeleton.class_names) - 1}",
                          path=source, item=f"line {line_number}")
    cx, cy, w, h = values[:4]
    bbox = np.array([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                     (cy + h / 2) * height])
    points = values[4:].reshape(k, dims)
    keypoints = np.zeros((k, 3))
    keypoints[:, 0] = points[:, 0] * width
    keypoints[:, 1] = points[:, 1] * height
    if dims == 3:
        keypoints[:, 2] = np.rint(points[:, 2])
    else:
        # Without a visibility column, ultralytics treats (0, 0) as unlabelled.
        keypoints[:, 2] = np.where((points[:, 0] > 0) | (points[:, 1] > 0), 2, 0)
    keypoints[keypoints[:, 2] == 0, :2] = 0
    return Instance(class_id, bbox, keypoints, source=f"{source}:{line_number}")


def label_path_for(image_path: Path) -> Path:
    """ultralytics' rule: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def load_data_yaml(data_yaml: str | Path) -> tuple[dict[str, Any], Path]:
    """The ``data.yaml`` mapping and the dataset root its split paths are relative to."""
    data_yaml = Path(data_yaml)
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FdposeError("data.yaml not found", path=data_yaml) from None
    except yaml.YAMLError as error:
        raise FdposeError(f"invalid YAML ({error})", path=data_yaml) from None
    if not isinstance(data, dict):
        raise FdposeError("expected a mapping", path=data_yaml)
    root = Path(data["path"]) if data.get("path") else data_yaml.parent
    if not root.is_absolute():
        root = data_yaml.parent / root
    return data, root


def read_yolo(data_yaml: str | Path) -> Dataset:
    """Read a YOLO-pose dataset (``train``/``val``/``test`` as folders of images) into the hub."""
    data, root = load_data_yaml(data_yaml)
    skeleton = Skeleton.from_data_yaml(data, source=data_yaml)
    dataset = Dataset(skeleton)
    for split in SPLITS:
        entry = data.get(split)
        if not entry:
            continue
        folders = entry if isinstance(entry, list) else [entry]
        for folder in folders:
            folder = (root / folder).resolve()
            if not folder.is_dir():
                raise FdposeError(f"split '{split}' folder {folder} does not exist", path=data_yaml)
            for image_path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                width, height = image_size(image_path)
                record = ImageRecord(image_path, image_path.relative_to(folder).as_posix(), width, height,
                                     split=split, image_id=image_path.relative_to(root).as_posix())
                label_file = label_path_for(image_path)
                if label_file.exists():
                    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
                        if line.strip():
                            record.instances.append(
                                parse_label_line(line, width, height, skeleton, label_file, number))
                dataset.images.append(record)
    return dataset


def data_yaml_text(skeleton: Skeleton, splits: list[str], extra: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {split: f"images/{split}" for split in splits}
    data.update(skeleton.data_yaml_fields())
    if extra:
        data.update(extra)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_yolo(dataset: Dataset, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the dataset as a YOLO-pose folder, atomically (the previous ``out_dir`` survives a failure).

    Images are hard-linked or copied, never re-encoded. ``train`` and ``val`` are always declared
    (ultralytics requires both); ``test`` only when it has images.
    """
    out_dir = Path(out_dir)
    skeleton = dataset.skeleton
    splits = dataset.splits()
    with atomic_dir(out_dir) as tmp:
        for split, images in splits.items():
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            for image in images:
                target = tmp / "images" / split / image.file_name
                place_file(image.path, target)
                lines = [label_line(inst, image.width, image.height, skeleton.kpt_dims)
                         for inst in image.instances]
                label_file = label_path_for(target)
                label_file.parent.mkdir(parents=True, exist_ok=True)
                label_file.write_text("".join(line + "\n" for line in lines))
        declared = [s for s in SPLITS if s in ("train", "val") or s in splits]
        for split in declared:
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
        (tmp / "data.yaml").write_text(data_yaml_text(skeleton, declared, extra), encoding="utf-8")
    return out_dir / "data.yaml"
