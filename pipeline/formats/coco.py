"""The COCO keypoints edge of the hub: read COCO keypoint files, write COCO ground truth.

Reading (:func:`read_coco`) accepts what real files do: categories with or without ``keypoints``
names (``K`` then comes from the annotations), several categories sharing one layout (one class
each), keypoints as flat or nested triples or pairs, missing ``bbox`` (derived from the labelled
keypoints), string or integer ids, ``file_name``s with sub-folders. Every annotation is validated,
vectorised over the whole file; what is skipped or repaired is listed in the dataset's report.

Writing (:func:`dataset_to_coco`) follows the COCO keypoint convention that pycocotools and
faster-coco-eval load: 1-based image, annotation and category ids, ``bbox`` as ``[x, y, w, h]`` in
pixels, ``keypoints`` as flat ``x, y, v`` triples, ``num_keypoints`` (labelled points), ``area``,
``iscrowd = 0``, and one category per class carrying the keypoint names and the 1-based ``skeleton``.
"""

from __future__ import annotations

import gc
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

try:  # a faster parser where installed (dvc brings it); the standard library's otherwise
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

from pipeline.dataset import Dataset, ImageRecord, Instance, Report
from pipeline.errors import FdposeError
from pipeline.images import image_info, orient_points
from pipeline.io import write_json
from pipeline.skeleton import Skeleton


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


# --- reading ----------------------------------------------------------------------------------------

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WINDOWS_DRIVE = re.compile(r"^[a-zA-Z]:")


class _Log:
    """The reader's report, with ``--strict`` turning problems into errors where they are found."""

    def __init__(self, report: Report, source: Path, strict: bool):
        self.report, self.source, self.strict = report, source, strict

    def skip(self, item: object, reason: str, *, problem: bool = True) -> None:
        if problem and self.strict:
            raise FdposeError(f"{reason} (--strict)", path=self.source, item=item)
        self.report.skip(self.source, item, reason)

    def repair(self, item: object, reason: str, *, problem: bool = True) -> None:
        if problem and self.strict:
            raise FdposeError(f"{reason} (--strict)", path=self.source, item=item)
        self.report.repair(self.source, item, reason)


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, truncated or invalid file is one :class:`FdposeError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FdposeError("file not found", path=path) from None
    except IsADirectoryError:
        raise FdposeError("is a directory, expected a JSON file", path=path) from None
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN literals, huge integers or a real error: the standard parser decides and explains
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise FdposeError(f"invalid or truncated JSON ({error.msg} at {where})", path=path) from None
    except UnicodeDecodeError as error:
        raise FdposeError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=path) from None


def safe_relative_name(name: object) -> str | None:
    """``name`` as a relative POSIX path that stays under the images root, or None when it is not a
    string, is empty, is absolute, is a URL, or climbs out with ``..``."""
    if not isinstance(name, str) or not name.strip():
        return None
    posix = name.replace("\\", "/")
    if _URL.match(posix) or posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        return None
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _id_key(value: object) -> str | None:
    """Ids compare as text, so ``1`` and ``"1"`` name the same image; other types are invalid."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):  # int subclasses, not True/False
        return str(int(value))
    return None


def _keypoint_layout(categories: list[dict], annotations: list[Any], source: Path
                     ) -> tuple[list[str] | None, list[dict]]:
    """The keypoint names (None when no category names them) and the categories that carry them."""
    layouts: dict[tuple[str, ...], list[dict]] = {}
    for category in categories:
        names = category.get("keypoints")
        if isinstance(names, list) and names:
            layouts.setdefault(tuple(str(n) for n in names), []).append(category)
    if not layouts:
        return None, categories
    if len(layouts) == 1:
        names, cats = next(iter(layouts.items()))
        return list(names), cats
    used = {_id_key(a.get("category_id")) for a in annotations if isinstance(a, dict) and a.get("keypoints")}
    used_layouts = {names: cats for names, cats in layouts.items()
                    if any(_id_key(c.get("id")) in used for c in cats)}
    if len(used_layouts) == 1:
        names, cats = next(iter(used_layouts.items()))
        return list(names), cats
    described = "; ".join(f"{cats[0].get('name')!r} has {len(names)} keypoints"
                          for names, cats in (used_layouts or layouts).items())
    raise FdposeError(f"categories have different keypoint layouts ({described}); convert them separately",
                      path=source)


def _infer_count(lengths: list[tuple[int, int]]) -> tuple[int, str]:
    """``K`` from annotation keypoint shapes ``(values, dims)`` (dims 0 = flat): the most common one."""
    counts: Counter[int] = Counter()
    for values, dims in lengths:
        if dims in (2, 3):
            counts[values] += 1
        elif values % 3 == 0:
            counts[values // 3] += 1
        elif values % 2 == 0:
            counts[values // 2] += 1
    if not counts:
        return 0, ""
    k, _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return k, f"no keypoint names in the categories; {k} keypoints taken from the annotations"


def _shape(keypoints: list) -> tuple[int, int]:
    """``(count, dims)`` of a nested keypoint list, ``(len, 0)`` of a flat one."""
    if keypoints and isinstance(keypoints[0], list):
        return len(keypoints), len(keypoints[0])
    return len(keypoints), 0


def _keypoints_slow(keypoints: list, k: int) -> tuple[np.ndarray | None, str]:
    """One annotation's keypoints as ``(K, 3)`` (x, y, v), for the shapes the fast path leaves out:
    nested lists and pairs (visibility 2 unless the point is ``(0, 0)``, ultralytics' unlabelled)."""
    count, dims = _shape(keypoints)
    try:
        values = np.array(keypoints, dtype=np.float64)
    except (TypeError, ValueError):
        return None, "non-numeric or ragged keypoint values"
    if dims == 0:
        if count == 3 * k:
            return values.reshape(k, 3), ""
        if count == 2 * k:
            values, dims = values.reshape(k, 2), 2
        else:
            return None, f"expected {k} keypoints ({3 * k} or {2 * k} values), found {count} values"
    elif values.shape not in ((k, 3), (k, 2)):
        return None, f"expected {k} keypoints, found {count} of {dims} values"
    if values.shape[1] == 3:
        return values, ""
    out = np.zeros((k, 3))
    out[:, :2] = values
    out[:, 2] = np.where((values[:, 0] != 0) | (values[:, 1] != 0), 2, 0)
    return out, ""


def _rows(items: list[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack lists of ``width`` numbers into a float array; rows that are not such lists become NaN
    and are flagged False."""
    nan_row = [float("nan")] * width
    ok = np.array([type(r) is list and len(r) == width for r in items], dtype=bool)
    rows = [r if good else nan_row for r, good in zip(items, ok, strict=True)]
    try:
        return np.array(rows, dtype=np.float64).reshape(len(items), width), ok
    except (TypeError, ValueError):  # a non-number somewhere: fall back to row by row
        out = np.full((len(items), width), np.nan)
        for index, row in enumerate(rows):
            try:
                out[index] = np.array(row, dtype=np.float64)
            except (TypeError, ValueError):
                ok[index] = False
        return out, ok


def _edges(raw_edges: list, k: int, report: Report) -> list[tuple[int, int]]:
    """A category's ``skeleton`` as 0-based edges. COCO's are 1-based; some files use 0-based indices
    (an index 0 and none equal to K tells them apart). Edges naming no keypoint are left out, warned."""
    pairs = [tuple(e) for e in raw_edges
             if isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) for v in e)]
    flat = [v for pair in pairs for v in pair]
    base = 0 if flat and min(flat) == 0 and max(flat) < k else 1
    if base == 0:
        report.warn("the categories' skeleton edges are 0-based (COCO's are 1-based); read as 0-based")
    edges = []
    for edge in raw_edges:
        if isinstance(edge, list) and tuple(edge) in pairs and all(base <= v < k + base for v in edge):
            edges.append((edge[0] - base, edge[1] - base))
        else:
            report.warn(f"skeleton edge {edge!r} names no keypoint of {k}; left out")
    return edges


def _format_indices(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:8])
    return f"[{shown}{', ...' if len(indices) > 8 else ''}]"


def read_coco(json_path: str | Path, images_root: str | Path, *, skeleton: Skeleton | None = None,
              skeleton_source: object = "skeleton", drop_unlabelled: bool = False, strict: bool = False,
              progress: bool = False) -> Dataset:
    """Read a COCO keypoint file into the hub, validating every annotation.

    ``images_root`` is where ``file_name``s resolve; names that escape it (``..``, absolute paths,
    URLs) are rejected. ``skeleton`` fixes keypoint order and classes (an error names both when it
    disagrees with the file). ``iscrowd`` annotations are skipped and counted; annotations with no
    labelled keypoint are kept as boxes unless ``drop_unlabelled``. Keypoints outside the image are
    clipped and reported, or raise with ``strict`` (as does every other problem).
    """
    # The parsed file is millions of small objects: the cyclic collector would rescan them on every
    # allocation burst while the reader builds its records, for nothing (none of them form cycles).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_coco(Path(json_path), Path(images_root), skeleton, skeleton_source, drop_unlabelled,
                          strict, progress)
    finally:
        if collecting:
            gc.enable()


def _read_coco(source: Path, images_root: Path, skeleton: Skeleton | None, skeleton_source: object,
               drop_unlabelled: bool, strict: bool, progress: bool) -> Dataset:
    data = load_json(source)
    if isinstance(data, list):
        raise FdposeError("not a COCO keypoint file: the top level is a list (detection results or "
                          "another format), expected an object with 'images' and 'annotations'", path=source)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        keys = ", ".join(list(map(str, data))[:6]) if isinstance(data, dict) else type(data).__name__
        raise FdposeError(f"not a COCO keypoint file: no 'images' and 'annotations' (found {keys})",
                          path=source)
    images, annotations = data["images"], data["annotations"]
    categories = data.get("categories") or []
    if not isinstance(images, list) or not isinstance(annotations, list) or not isinstance(categories, list):
        raise FdposeError("'images', 'annotations' and 'categories' must be lists", path=source)
    if not any(isinstance(a, dict) and isinstance(a.get("keypoints"), list) and a["keypoints"]
               for a in annotations):
        raise FdposeError("no 2-D keypoints in any annotation (a detection, 3-D or other file)", path=source)
    if not images_root.is_dir():
        raise FdposeError("images folder not found", path=images_root)
    report = Report()
    log = _Log(report, source, strict)
    categories = [c for c in categories if isinstance(c, dict) and _id_key(c.get("id")) is not None]

    # --- keypoint layout and classes ----------------------------------------------------------------
    names, layout_categories = _keypoint_layout(categories, annotations, source)
    if names is not None:
        k = len(names)
    else:
        k, message = _infer_count([_shape(a["keypoints"]) for a in annotations
                                   if isinstance(a, dict) and isinstance(a.get("keypoints"), list)
                                   and a["keypoints"]])
        if k == 0:
            raise FdposeError("cannot tell the keypoint count: no category names keypoints and no "
                              "annotation holds a multiple of 2 or 3 values", path=source)
        if skeleton is None:
            report.warn(message)
    permutation = None
    if skeleton is not None:
        if names is None and k != skeleton.num_keypoints:
            raise FdposeError(f"{source} has {k} keypoints per annotation but {skeleton_source} names "
                              f"{skeleton.num_keypoints}", path=skeleton_source)
        if names is not None and names != skeleton.keypoint_names:
            if sorted(names) != sorted(skeleton.keypoint_names):
                missing = [n for n in skeleton.keypoint_names if n not in names][:5]
                extra = [n for n in names if n not in skeleton.keypoint_names][:5]
                raise FdposeError(
                    f"keypoints disagree with {source}: the file has {len(names)} "
                    f"({', '.join(names[:5])}, ...) "
                    f"and the skeleton {skeleton.num_keypoints}; only in the skeleton {missing}, "
                    f"only in the file {extra}", path=skeleton_source)
            permutation = np.array([names.index(n) for n in skeleton.keypoint_names])
            report.warn(f"keypoints reordered from {source}'s order to {skeleton_source}'s")
        keypoint_names = list(skeleton.keypoint_names)
        k = skeleton.num_keypoints
    else:
        keypoint_names = names or [f"kp{i}" for i in range(k)]
    class_categories = layout_categories if names is not None else categories
    if skeleton is not None and skeleton.class_names != ["object"]:
        class_names = list(skeleton.class_names)
    else:
        class_names = [str(c.get("name", c["id"])) for c in class_categories] or ["object"]
    class_of: dict[str, int] = {}
    for category in class_categories:
        name = str(category.get("name", category["id"]))
        if name in class_names:
            class_of[_id_key(category["id"])] = class_names.index(name)
    if not class_categories:  # no categories at all: one class for every keypoint annotation
        report.warn(f"no categories in {source}; every annotation is class 0 'object'")
    if skeleton is not None:
        edges = skeleton.edges
    else:
        edges = _edges((class_categories[0].get("skeleton") if class_categories else None) or [], k, report)
    if skeleton is not None:
        out_skeleton = replace(skeleton, class_names=class_names, keypoint_names=keypoint_names)
    else:
        out_skeleton = Skeleton(keypoint_names, class_names=class_names, edges=edges)

    # --- images ---------------------------------------------------------------------------------------
    seen_ids: Counter[str] = Counter(_id_key(im.get("id")) for im in images if isinstance(im, dict))
    seen_names: set[str] = set()
    records: list[ImageRecord] = []
    image_index: dict[str, int] = {}
    orientation_of: list[tuple[int, int, int]] = []  # per record: EXIF orientation to apply, stored w, h
    dropped_images: dict[str, str] = {}  # id -> reason, to attribute their annotations
    annotation_count: Counter[str] = Counter(_id_key(a.get("image_id")) for a in annotations
                                             if isinstance(a, dict))
    for position, entry in enumerate(tqdm(images, desc="images", unit="img", disable=not progress, delay=1,
                                          leave=False)):
        if not isinstance(entry, dict):
            log.skip(f"images[{position}]", "not an object")
            continue
        key = _id_key(entry.get("id"))
        raw_name = entry.get("file_name")
        item = f"image {entry.get('id')!r} ({raw_name})"
        attached = annotation_count.get(key, 0)
        suffix = f" ({attached} annotations)" if attached else ""
        if key is None:
            log.skip(item, f"missing or invalid image id{suffix}")
            continue
        if seen_ids[key] > 1:
            dropped_images[key] = "duplicate image id"
            log.skip(item, f"duplicate image id: {seen_ids[key]} images share it{suffix}")
            continue
        name = safe_relative_name(raw_name)
        if name is None:
            dropped_images[key] = "bad file_name"
            log.skip(item, f"file_name escapes the images root (absolute, URL or '..') or is empty{suffix}")
            continue
        if name in seen_names:
            dropped_images[key] = "duplicate file_name"
            log.skip(item, f"duplicate file_name{suffix}")
            continue
        seen_names.add(name)
        path = images_root / name
        try:
            info = image_info(path)
        except FdposeError as error:
            dropped_images[key] = "image unusable"
            reason = str(error).removeprefix(f"{path}: ")
            log.skip(item, f"{reason}{suffix}")
            continue
        width, height = info.size
        stated = (entry.get("width"), entry.get("height"))
        turn = 1
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stated):
            log.repair(item, "width/height missing; taken from the image file", problem=False)
        elif stated != (width, height):
            if info.orientation in (5, 6, 7, 8) and stated == (info.stored_width, info.stored_height):
                turn = info.orientation
                log.repair(item, f"annotated on the stored image; coordinates turned by its EXIF "
                           f"orientation {turn}", problem=False)
            else:
                dropped_images[key] = "size mismatch"
                log.skip(item, f"size {stated[0]}x{stated[1]} in the file differs from the image's "
                         f"{width}x{height}{suffix}")
                continue
        image_index[key] = len(records)
        orientation_of.append((turn, info.stored_width, info.stored_height))
        records.append(ImageRecord(path, name, width, height, image_id=entry.get("id")))
    if not records:
        raise FdposeError(f"no usable images: {len(images)} listed, all skipped ({_top_reasons(report)})",
                          path=source)

    # --- annotations: cheap per-item checks, then the numbers all at once ------------------------------
    kept: list[dict] = []
    item_names: list[str] = []
    classes_list: list[int] = []
    owner_list: list[int] = []
    seen_annotation_ids: set[str] = set()
    for position, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            log.skip(f"annotations[{position}]", "not an object")
            continue
        ann_key = _id_key(ann.get("id"))
        item = f"annotation {ann.get('id')!r}" if ann_key is not None else f"annotations[{position}]"
        image_key = _id_key(ann.get("image_id"))
        record_index = image_index.get(image_key)
        if record_index is None:
            if image_key not in dropped_images:  # else already counted with its image
                log.skip(item, f"image_id {ann.get('image_id')!r} is not among the images")
            continue
        if ann.get("iscrowd"):
            log.skip(item, "iscrowd (a crowd region, not one instance)", problem=False)
            continue
        if not isinstance(ann.get("keypoints"), list) or not ann["keypoints"]:
            log.skip(item, "no keypoints")
            continue
        if ann_key is not None:
            if ann_key in seen_annotation_ids:
                log.skip(item, "duplicate annotation id")
                continue
            seen_annotation_ids.add(ann_key)
        class_id = 0
        if class_categories:
            class_id = class_of.get(_id_key(ann.get("category_id")))
            if class_id is None:
                if skeleton is None or skeleton.class_names == ["object"]:
                    known = f"among the file's keypoint categories {sorted(class_of, key=str)}"
                else:
                    known = f"one of the skeleton's classes {skeleton.class_names}"
                log.skip(item, f"category_id {ann.get('category_id')!r} is not {known}")
                continue
        kept.append(ann)
        item_names.append(item)
        classes_list.append(class_id)
        owner_list.append(record_index)
    n = len(kept)
    classes = np.array(classes_list, dtype=np.int64)
    owner = np.array(owner_list, dtype=np.int64)
    keep = np.ones(n, dtype=bool)

    # Keypoints: flat triples of the right length in one array; other shapes one by one.
    raw_keypoints = [a["keypoints"] for a in kept]
    fast = np.array([len(kp) == 3 * k and not isinstance(kp[0], list) for kp in raw_keypoints], dtype=bool)
    candidates = [kp if good else None for kp, good in zip(raw_keypoints, fast, strict=True)]
    points, fast_ok = _rows(candidates, 3 * k)
    points = points.reshape(n, k, 3)
    pairs = 0
    for index in np.flatnonzero(~(fast & fast_ok)):
        values, reason = _keypoints_slow(raw_keypoints[index], k)
        if values is None:
            keep[index] = False
            log.skip(item_names[index], reason)
        else:
            points[index] = values
            pairs += _shape(raw_keypoints[index])[1] == 2 or len(raw_keypoints[index]) == 2 * k
    if pairs:
        report.warn(f"{pairs} annotations give keypoints as (x, y) pairs: visibility 2 assumed, "
                    "(0, 0) read as unlabelled")
    if permutation is not None:
        points = points[:, permutation]

    # Visibility: 0 unlabelled, 1 occluded, 2 visible; other values are rounded into that range.
    visibility = points[:, :, 2]
    finite_v = np.isfinite(visibility)
    odd = keep & ~(finite_v & np.isin(visibility, (0.0, 1.0, 2.0))).all(axis=1)
    visibility[:] = np.where(~finite_v | (visibility <= 0), 0, np.where(visibility < 1.5, 1, 2))
    for index in np.flatnonzero(odd):
        log.repair(item_names[index], "visibility values other than 0, 1, 2; read as 0 (<= 0), 1 (< 1.5) "
                   "or 2", problem=False)
    labelled = visibility > 0
    nan_points = labelled & ~np.isfinite(points[:, :, :2]).all(axis=2)
    for index in np.flatnonzero(keep & nan_points.any(axis=1)):
        log.repair(item_names[index], f"keypoints {_format_indices(np.flatnonzero(nan_points[index]))} have "
                   "NaN or infinite coordinates; marked unlabelled")
    labelled &= ~nan_points
    visibility[~labelled] = 0
    points[~labelled, :2] = 0.0

    # Boxes: COCO [x, y, w, h]; a missing or degenerate one is derived from the labelled keypoints.
    raw_boxes = [a.get("bbox") for a in kept]
    boxes, box_ok = _rows(raw_boxes, 4)
    box_ok &= np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    bad_boxes = {index: raw_boxes[index] for index in np.flatnonzero(~box_ok).tolist()}
    # Every number is in arrays now: let the parsed file go, so the rest runs in the arrays' memory.
    del data, images, annotations, kept, raw_keypoints, candidates, raw_boxes
    boxes[:, 2:] += boxes[:, :2]
    turned = np.array([turn for turn, _, _ in orientation_of], dtype=np.int64)[owner] != 1
    for index in np.flatnonzero(turned):
        turn, stored_w, stored_h = orientation_of[owner[index]]
        mask = labelled[index]
        points[index, mask, :2] = orient_points(points[index, mask, :2], turn, stored_w, stored_h)
        corners = orient_points(boxes[index].reshape(2, 2), turn, stored_w, stored_h)
        boxes[index] = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
    widths = np.array([r.width for r in records], dtype=np.float64)[owner]
    heights = np.array([r.height for r in records], dtype=np.float64)[owner]
    masked_x = np.where(labelled, points[:, :, 0], np.nan)
    masked_y = np.where(labelled, points[:, :, 1], np.nan)
    has_points = labelled.any(axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no labelled point
        derived = np.stack([np.nanmin(masked_x, axis=1), np.nanmin(masked_y, axis=1),
                            np.nanmax(masked_x, axis=1), np.nanmax(masked_y, axis=1)], axis=1)
    for index in np.flatnonzero(keep & ~box_ok):
        missing = bad_boxes[index] is None
        what = "no bbox" if missing else f"bbox {bad_boxes[index]!r} is not 4 numbers with w, h > 0"
        x0, y0, x1, y1 = derived[index]
        if has_points[index] and x1 > x0 and y1 > y0:
            boxes[index] = derived[index]
            log.repair(item_names[index], f"{what}; derived from the labelled keypoints", problem=not missing)
        else:
            keep[index] = False
            log.skip(item_names[index], f"{what}, and too few labelled keypoints to derive one")

    # Keypoints outside the image: clipped and reported (an error with strict).
    outside = labelled & ((points[:, :, 0] < 0) | (points[:, :, 0] > widths[:, None])
                          | (points[:, :, 1] < 0) | (points[:, :, 1] > heights[:, None]))
    for index in np.flatnonzero(keep & outside.any(axis=1)):
        image = records[owner[index]]
        log.repair(item_names[index], f"keypoints {_format_indices(np.flatnonzero(outside[index]))} outside "
                   f"the {image.width}x{image.height} image ({image.file_name}); clipped")
    points[:, :, 0] = np.clip(points[:, :, 0], 0, widths[:, None])
    points[:, :, 1] = np.clip(points[:, :, 1], 0, heights[:, None])

    # Boxes past the image edge are clipped (ultralytics does the same); reported beyond one pixel.
    limits = np.stack([widths, heights, widths, heights], axis=1)
    clipped = np.clip(boxes, 0, limits)
    moved = keep & (np.abs(clipped - boxes) > 1).any(axis=1)
    empty = keep & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    for index in np.flatnonzero(moved & ~empty):
        log.repair(item_names[index], "bbox extends more than 1 px past the image; clipped", problem=False)
    for index in np.flatnonzero(empty):
        keep[index] = False
        log.skip(item_names[index], "bbox lies outside the image")
    boxes = clipped

    unlabelled = keep & ~labelled.any(axis=1)
    if drop_unlabelled:
        for index in np.flatnonzero(unlabelled):
            keep[index] = False
            log.skip(item_names[index], "no labelled keypoints (--drop-unlabelled)", problem=False)
    lost = Counter(owner[~keep].tolist())

    # --- the hub ------------------------------------------------------------------------------------
    owner_list, classes_list = owner.tolist(), classes.tolist()
    for index in np.flatnonzero(keep).tolist():
        records[owner_list[index]].instances.append(
            Instance.from_arrays(classes_list[index], boxes[index], points[index], item_names[index]))
    dataset = Dataset(out_skeleton, report=report)
    for position, record in enumerate(records):
        if lost.get(position) and not record.instances:
            log.skip(f"image {record.image_id!r} ({record.file_name})",
                     f"all of its annotations were skipped ({lost[position]})", problem=False)
            continue
        dataset.images.append(record)
    if not any(record.instances for record in dataset.images):
        raise FdposeError(f"no usable annotations ({_top_reasons(report)})", path=source)
    return dataset


def _top_reasons(report: Report) -> str:
    """The most common skip reasons, each with its count and one full example."""
    counts = Counter(item.reason.split(" (")[0] for item in report.items if item.action == "skipped")
    example = {}
    for item in report.items:
        example.setdefault(item.reason.split(" (")[0], f"{item.item}: {item.reason}")
    return "; ".join(f"{count} x {example[reason]}" for reason, count in counts.most_common(2)) or "nothing"
