"""The COCO keypoints edge of the hub, reading: COCO keypoint files into a :class:`Dataset`
(writing COCO ground truth is :mod:`pipeline.formats.coco_write`).

Reading (:func:`read_coco`) accepts what real files do: categories with or without ``keypoints``
names (``K`` then comes from the annotations), several categories sharing one layout (one class
each), keypoints as flat or nested triples or pairs, missing ``bbox`` (derived from the labelled
keypoints), string or integer ids, ``file_name``s with sub-folders. Every annotation is validated,
vectorised over the whole file; what is skipped or repaired is listed in the dataset's report.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.dataset import Dataset, ImageRecord, Instance, Report
from pipeline.errors import FdposeError, printable
from pipeline.formats.reader_log import ReaderLog, top_reasons
from pipeline.images import ImageInfo, image_info, orient_points, safe_relative_name
from pipeline.io import read_json
from pipeline.skeleton import Skeleton
from pipeline.skeleton.shipped import shipped_matching, shipped_name


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
    except (TypeError, ValueError, OverflowError):
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
    except (TypeError, ValueError, OverflowError):  # a non-number somewhere: fall back to row by row
        out = np.full((len(items), width), np.nan)
        for index, row in enumerate(rows):
            try:
                out[index] = np.array(row, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                ok[index] = False
        return out, ok


def _edges(raw_edges: list, names: list[str], source: Path, report: Report) -> list[tuple[int, int]]:
    """A category's ``skeleton`` as 0-based edges. COCO's are 1-based; some files use 0-based indices
    (an index 0 and none equal to K tells them apart). When any edge is not a pair of this layout's
    keypoints, the edges belong to another layout (CrowdPose's files carry COCO's 17-point skeleton):
    all are dropped, with one warning, since the ones in range would join the wrong joints."""
    if not isinstance(raw_edges, list):  # e.g. NaN: the category's skeleton is no list of pairs at all
        report.warn(f"{source}: its skeleton is not a list of keypoint pairs ({type(raw_edges).__name__}); "
                    "the dataset is written without edges")
        return []
    k = len(names)
    pairs = [tuple(e) for e in raw_edges
             if isinstance(e, list) and len(e) == 2 and all(type(v) is int for v in e)]
    flat = [v for pair in pairs for v in pair]
    base = 0 if flat and min(flat) == 0 and max(flat) < k else 1
    foreign = [e for e in raw_edges if not (isinstance(e, list) and tuple(e) in pairs
                                            and all(base <= v < k + base for v in e))]
    if foreign:
        match = shipped_matching(names)
        hint = f"; the shipped {shipped_name(match)} has this layout's edges" if match else ""
        report.warn(f"{source}: its skeleton edges do not fit its {k} keypoints (e.g. {foreign[0]!r}): "
                    f"a skeleton of another layout, all {len(raw_edges)} edges dropped{hint}")
        return []
    if base == 0 and pairs:
        report.warn(f"{source}: the categories' skeleton edges are 0-based (COCO's are 1-based); "
                    "read as 0-based")
    return [(a - base, b - base) for a, b in pairs]


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
    source, images_root = Path(json_path), Path(images_root)
    images, annotations, categories = _coco_lists(read_json(source), source)
    if not images_root.is_dir():
        raise FdposeError("images folder not found", path=images_root)
    report = Report()
    report.count_read("annotations", len(annotations))
    log = ReaderLog(report, source, strict)
    layout = _layout(categories, annotations, source, skeleton, skeleton_source, report)
    found = _read_images(images, annotations, images_root, log, progress)
    del images
    batch = _select_annotations(annotations, found, layout, skeleton, log)
    # Every number goes into arrays now: the parsed file is let go, so the rest runs in their memory.
    del annotations
    _read_keypoints(batch, layout, log)
    _read_visibility(batch, log)
    _read_boxes(batch, found, log)
    _clip_to_images(batch, found, log)
    if drop_unlabelled:
        for index in np.flatnonzero(batch.keep & ~batch.labelled.any(axis=1)):
            batch.keep[index] = False
            log.skip(batch.items[index], "no labelled keypoints (--drop-unlabelled)", problem=False, units=1)
    return _to_hub(batch, found, layout.skeleton, log)


@dataclass
class _Layout:
    """Keypoints and classes of a file: the output skeleton, the file's keypoint count and order."""

    skeleton: Skeleton
    k: int
    permutation: np.ndarray | None  # file order -> skeleton order, when they differ
    class_of: dict[str, int]  # category id key -> class id
    by_category: bool  # False when the file has no categories: every annotation is class 0


@dataclass
class _Images:
    """The usable images of a file, by id key, and why the others were dropped."""

    records: list[ImageRecord] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # id key -> position in records
    turns: list[tuple[int, int, int]] = field(default_factory=list)  # EXIF orientation to apply, stored w, h
    dropped: dict[str, str] = field(default_factory=dict)  # id key -> reason, to attribute annotations


@dataclass
class _Batch:
    """The annotations that passed the per-item checks, as arrays filled phase by phase."""

    kept: list[dict] | None  # the raw annotations, until their numbers are in the arrays
    items: list[str]  # report names
    classes: np.ndarray
    owner: np.ndarray  # position of each annotation's image in _Images.records
    keep: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3)))  # (n, K, 3)
    labelled: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x0, y0, x1, y1


def _coco_lists(data: Any, source: Path) -> tuple[list, list, list[dict]]:
    """``images``, ``annotations`` and the usable ``categories`` of a parsed file, checked for shape."""
    if isinstance(data, list):
        raise FdposeError("not a COCO keypoint file: the top level is a list (detection results or "
                          "another format), expected an object with 'images' and 'annotations'", path=source)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        keys = ", ".join(list(map(printable, data))[:6]) if isinstance(data, dict) else type(data).__name__
        raise FdposeError(f"not a COCO keypoint file: no 'images' and 'annotations' (found {keys})",
                          path=source)
    images, annotations = data["images"], data["annotations"]
    categories = data.get("categories") or []
    if not isinstance(images, list) or not isinstance(annotations, list) or not isinstance(categories, list):
        raise FdposeError("'images', 'annotations' and 'categories' must be lists", path=source)
    if not any(isinstance(a, dict) and isinstance(a.get("keypoints"), list) and a["keypoints"]
               for a in annotations):
        raise FdposeError("no 2-D keypoints in any annotation (a detection, 3-D or other file)", path=source)
    categories = [c for c in categories if isinstance(c, dict) and _id_key(c.get("id")) is not None]
    return images, annotations, categories


def _keypoint_order(names: list[str] | None, k: int, source: Path, skeleton: Skeleton,
                    skeleton_source: object) -> np.ndarray | None:
    """The permutation from the file's keypoint order to the skeleton's (None when they agree); an
    error naming both when they name different keypoints."""
    if names is None:
        if k != skeleton.num_keypoints:
            raise FdposeError(f"{source} has {k} keypoints per annotation but {skeleton_source} names "
                              f"{skeleton.num_keypoints}", path=skeleton_source)
        return None
    if names == skeleton.keypoint_names:
        return None
    if sorted(names) != sorted(skeleton.keypoint_names):
        missing = [n for n in skeleton.keypoint_names if n not in names][:5]
        extra = [n for n in names if n not in skeleton.keypoint_names][:5]
        raise FdposeError(
            f"keypoints disagree with {source}: the file has {len(names)} ({', '.join(names[:5])}, ...) "
            f"and the skeleton {skeleton.num_keypoints}; only in the skeleton {missing}, "
            f"only in the file {extra}", path=skeleton_source)
    return np.array([names.index(n) for n in skeleton.keypoint_names])


def _layout(categories: list[dict], annotations: list[Any], source: Path, skeleton: Skeleton | None,
            skeleton_source: object, report: Report) -> _Layout:
    """Keypoint names and count, classes and edges, from the categories (or the annotations) and the
    skeleton."""
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
        permutation = _keypoint_order(names, k, source, skeleton, skeleton_source)
        if permutation is not None:
            report.warn(f"keypoints reordered from {source}'s order to {skeleton_source}'s")
        keypoint_names, k = list(skeleton.keypoint_names), skeleton.num_keypoints
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
    try:
        if skeleton is not None:
            out_skeleton = replace(skeleton, class_names=class_names, keypoint_names=keypoint_names)
        else:
            raw_edges = (class_categories[0].get("skeleton") if class_categories else None) or []
            edges = _edges(raw_edges, keypoint_names, source, report)
            out_skeleton = Skeleton(keypoint_names, class_names=class_names, edges=edges,
                                    edges_source=f"file {source}" if edges else "none")
    except FdposeError as error:  # e.g. a keypoint named twice: the file's categories are at fault
        raise FdposeError(str(error).removeprefix("skeleton: "), path=source, item="categories") from None
    return _Layout(out_skeleton, k, permutation, class_of, bool(class_categories))


def _image_size_check(entry: dict, info: ImageInfo, item: str, suffix: str, log: ReaderLog) -> int | str:
    """The EXIF orientation to apply to the entry's coordinates (1: none), or the reason it is dropped,
    from the size the file states and the image's own."""
    width, height = info.size
    stated = (entry.get("width"), entry.get("height"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stated):
        log.repair(item, "width/height missing; taken from the image file", problem=False)
        return 1
    if stated == (width, height):
        return 1
    if info.orientation in (5, 6, 7, 8) and stated == (info.stored_width, info.stored_height):
        log.repair(item, f"annotated on the stored image; coordinates turned by its EXIF "
                   f"orientation {info.orientation}", problem=False)
        return info.orientation
    log.skip(item, f"size {stated[0]}x{stated[1]} in the file differs from the image's "
             f"{width}x{height}{suffix}")
    return "size mismatch"


def _read_images(images: list[Any], annotations: list[Any], images_root: Path, log: ReaderLog,
                 progress: bool) -> _Images:
    """Check every image entry (id, file name, the file's header and size); keep the usable ones."""
    found = _Images()
    seen_ids: Counter[str] = Counter(_id_key(im.get("id")) for im in images if isinstance(im, dict))
    seen_names: set[str] = set()
    annotation_count: Counter[str] = Counter(_id_key(a.get("image_id")) for a in annotations
                                             if isinstance(a, dict))
    for position, entry in enumerate(tqdm(images, desc="images", unit="img", disable=not progress, delay=1,
                                          leave=False)):
        if not isinstance(entry, dict):
            log.skip(f"images[{position}]", "not an object")
            continue
        key = _id_key(entry.get("id"))
        raw_name = entry.get("file_name")
        item = f"image {entry.get('id')!r} ({printable(raw_name)})"
        attached = annotation_count.get(key, 0)
        suffix = f" ({attached} annotations)" if attached else ""
        if key is None:
            log.skip(item, f"missing or invalid image id{suffix}")
            continue
        name = safe_relative_name(raw_name)
        if seen_ids[key] > 1:
            reason, message = "duplicate image id", f"duplicate image id: {seen_ids[key]} images share it"
        elif name is None:
            reason = "bad file_name"
            message = "file_name escapes the images root (absolute, URL or '..') or is empty"
        elif name in seen_names:
            reason, message = "duplicate file_name", "duplicate file_name"
        else:
            reason = message = None
        if reason is not None:
            found.dropped[key] = reason
            log.skip(item, f"{message}{suffix}")
            continue
        seen_names.add(name)
        path = images_root / name
        try:
            info = image_info(path)
        except FdposeError as error:
            found.dropped[key] = "image unusable"
            log.skip(item, f"{str(error).removeprefix(f'{path}: ')}{suffix}")
            continue
        turn = _image_size_check(entry, info, item, suffix, log)
        if isinstance(turn, str):
            found.dropped[key] = turn
            continue
        found.index[key] = len(found.records)
        found.turns.append((turn, info.stored_width, info.stored_height))
        found.records.append(ImageRecord(path, name, *info.size, image_id=entry.get("id")))
    if not found.records:
        raise FdposeError(f"no usable images: {len(images)} listed, all skipped ({top_reasons(log.report)})",
                          path=log.source)
    return found


def _class_of(ann: dict, layout: _Layout, skeleton: Skeleton | None, item: str, log: ReaderLog) -> int | None:
    """The class of an annotation by its ``category_id`` (0 in a file without categories); None, and
    the skip reported, when the category is not one of the classes."""
    if not layout.by_category:
        return 0
    class_id = layout.class_of.get(_id_key(ann.get("category_id")))
    if class_id is None:
        if skeleton is None or skeleton.class_names == ["object"]:
            known = f"among the file's keypoint categories {sorted(layout.class_of, key=str)}"
        else:
            known = f"one of the skeleton's classes {skeleton.class_names}"
        log.skip(item, f"category_id {ann.get('category_id')!r} is not {known}", units=1)
    return class_id


def _select_annotations(annotations: list[Any], found: _Images, layout: _Layout, skeleton: Skeleton | None,
                        log: ReaderLog) -> _Batch:
    """The cheap per-item checks (object, image, crowd, keypoints present, unique id, category)."""
    kept: list[dict] = []
    items: list[str] = []
    classes: list[int] = []
    owner: list[int] = []
    seen_ids: set[str] = set()
    for position, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            log.skip(f"annotations[{position}]", "not an object", units=1)
            continue
        ann_key = _id_key(ann.get("id"))
        item = f"annotation {ann.get('id')!r}" if ann_key is not None else f"annotations[{position}]"
        image_key = _id_key(ann.get("image_id"))
        record_index = found.index.get(image_key)
        if record_index is None:
            if image_key in found.dropped:  # reported with its image
                log.report.count_skipped(1)
            else:
                log.skip(item, f"image_id {ann.get('image_id')!r} is not among the images", units=1)
            continue
        if ann.get("iscrowd"):
            log.skip(item, "iscrowd (a crowd region, not one instance)", problem=False, units=1)
            continue
        if not isinstance(ann.get("keypoints"), list) or not ann["keypoints"]:
            log.skip(item, "no keypoints", units=1)
            continue
        if ann_key is not None:
            if ann_key in seen_ids:
                log.skip(item, "duplicate annotation id", units=1)
                continue
            seen_ids.add(ann_key)
        class_id = _class_of(ann, layout, skeleton, item, log)
        if class_id is None:
            continue
        kept.append(ann)
        items.append(item)
        classes.append(class_id)
        owner.append(record_index)
    return _Batch(kept, items, np.array(classes, dtype=np.int64), np.array(owner, dtype=np.int64),
                  np.ones(len(kept), dtype=bool))


def _read_keypoints(batch: _Batch, layout: _Layout, log: ReaderLog) -> None:
    """Keypoints as ``(n, K, 3)``: flat triples of the right length in one array, other shapes one by one."""
    k, n = layout.k, len(batch.items)
    raw = [a["keypoints"] for a in batch.kept]
    fast = np.array([len(kp) == 3 * k and not isinstance(kp[0], list) for kp in raw], dtype=bool)
    points, fast_ok = _rows([kp if good else None for kp, good in zip(raw, fast, strict=True)], 3 * k)
    points = points.reshape(n, k, 3)
    pairs = 0
    for index in np.flatnonzero(~(fast & fast_ok)):
        values, reason = _keypoints_slow(raw[index], k)
        if values is None:
            batch.keep[index] = False
            log.skip(batch.items[index], reason, units=1)
        else:
            points[index] = values
            pairs += _shape(raw[index])[1] == 2 or len(raw[index]) == 2 * k
    if pairs:
        log.report.warn(f"{pairs} annotations give keypoints as (x, y) pairs: visibility 2 assumed, "
                        "(0, 0) read as unlabelled")
    batch.points = points if layout.permutation is None else points[:, layout.permutation]


def _read_visibility(batch: _Batch, log: ReaderLog) -> None:
    """Visibility 0 unlabelled, 1 occluded, 2 visible; other values are rounded into that range, and
    labelled points with NaN or infinite coordinates become unlabelled."""
    points, keep = batch.points, batch.keep
    visibility = points[:, :, 2]
    finite_v = np.isfinite(visibility)
    odd = keep & ~(finite_v & np.isin(visibility, (0.0, 1.0, 2.0))).all(axis=1)
    visibility[:] = np.where(~finite_v | (visibility <= 0), 0, np.where(visibility < 1.5, 1, 2))
    for index in np.flatnonzero(odd):
        log.repair(batch.items[index], "visibility values other than 0, 1, 2; read as 0 (<= 0), 1 (< 1.5) "
                   "or 2", problem=False)
    labelled = visibility > 0
    nan_points = labelled & ~np.isfinite(points[:, :, :2]).all(axis=2)
    for index in np.flatnonzero(keep & nan_points.any(axis=1)):
        log.repair(batch.items[index], f"keypoints {_format_indices(np.flatnonzero(nan_points[index]))} have "
                   "NaN or infinite coordinates; marked unlabelled")
    labelled &= ~nan_points
    visibility[~labelled] = 0
    points[~labelled, :2] = 0.0
    batch.labelled = labelled


def _read_boxes(batch: _Batch, found: _Images, log: ReaderLog) -> None:
    """Boxes from COCO ``[x, y, w, h]``, turned with their image's EXIF orientation; a missing or
    degenerate one is derived from the labelled keypoints."""
    raw_boxes = [a.get("bbox") for a in batch.kept]
    batch.kept = None
    boxes, box_ok = _rows(raw_boxes, 4)
    box_ok &= np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    bad_boxes = {index: raw_boxes[index] for index in np.flatnonzero(~box_ok).tolist()}
    del raw_boxes
    boxes[:, 2:] += boxes[:, :2]
    points, labelled, owner = batch.points, batch.labelled, batch.owner
    turned = np.array([turn for turn, _, _ in found.turns], dtype=np.int64)[owner] != 1
    for index in np.flatnonzero(turned):
        turn, stored_w, stored_h = found.turns[owner[index]]
        mask = labelled[index]
        points[index, mask, :2] = orient_points(points[index, mask, :2], turn, stored_w, stored_h)
        corners = orient_points(boxes[index].reshape(2, 2), turn, stored_w, stored_h)
        boxes[index] = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
    masked_x = np.where(labelled, points[:, :, 0], np.nan)
    masked_y = np.where(labelled, points[:, :, 1], np.nan)
    has_points = labelled.any(axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no labelled point
        derived = np.stack([np.nanmin(masked_x, axis=1), np.nanmin(masked_y, axis=1),
                            np.nanmax(masked_x, axis=1), np.nanmax(masked_y, axis=1)], axis=1)
    for index in np.flatnonzero(batch.keep & ~box_ok):
        missing = bad_boxes[index] is None
        what = "no bbox" if missing else f"bbox {bad_boxes[index]!r} is not 4 numbers with w, h > 0"
        x0, y0, x1, y1 = derived[index]
        if has_points[index] and x1 > x0 and y1 > y0:
            boxes[index] = derived[index]
            log.repair(batch.items[index], f"{what}; derived from the labelled keypoints",
                       problem=not missing)
        else:
            batch.keep[index] = False
            log.skip(batch.items[index], f"{what}, and too few labelled keypoints to derive one", units=1)
    batch.boxes = boxes


def _clip_to_images(batch: _Batch, found: _Images, log: ReaderLog) -> None:
    """Keypoints outside the image are clipped and reported (an error with strict); boxes past the
    image edge are clipped (ultralytics does the same), reported beyond one pixel."""
    points, labelled, keep = batch.points, batch.labelled, batch.keep
    widths = np.array([r.width for r in found.records], dtype=np.float64)[batch.owner]
    heights = np.array([r.height for r in found.records], dtype=np.float64)[batch.owner]
    outside = labelled & ((points[:, :, 0] < 0) | (points[:, :, 0] > widths[:, None])
                          | (points[:, :, 1] < 0) | (points[:, :, 1] > heights[:, None]))
    for index in np.flatnonzero(keep & outside.any(axis=1)):
        image = found.records[batch.owner[index]]
        log.repair(batch.items[index], f"keypoints {_format_indices(np.flatnonzero(outside[index]))} outside "
                   f"the {image.width}x{image.height} image ({image.file_name}); clipped")
    points[:, :, 0] = np.clip(points[:, :, 0], 0, widths[:, None])
    points[:, :, 1] = np.clip(points[:, :, 1], 0, heights[:, None])
    limits = np.stack([widths, heights, widths, heights], axis=1)
    clipped = np.clip(batch.boxes, 0, limits)
    moved = keep & (np.abs(clipped - batch.boxes) > 1).any(axis=1)
    empty = keep & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    for index in np.flatnonzero(moved & ~empty):
        log.repair(batch.items[index], "bbox extends more than 1 px past the image; clipped", problem=False)
    for index in np.flatnonzero(empty):
        keep[index] = False
        log.skip(batch.items[index], "bbox lies outside the image", units=1)
    batch.boxes = clipped


def _to_hub(batch: _Batch, found: _Images, skeleton: Skeleton, log: ReaderLog) -> Dataset:
    """The kept annotations as instances of their images; images whose annotations were all skipped
    are left out (and reported)."""
    lost = Counter(batch.owner[~batch.keep].tolist())
    owner, classes = batch.owner.tolist(), batch.classes.tolist()
    for index in np.flatnonzero(batch.keep).tolist():
        found.records[owner[index]].instances.append(
            Instance.from_arrays(classes[index], batch.boxes[index], batch.points[index], batch.items[index]))
    dataset = Dataset(skeleton, report=log.report)
    for position, record in enumerate(found.records):
        if lost.get(position) and not record.instances:
            log.skip(f"image {record.image_id!r} ({record.file_name})",
                     f"all of its annotations were skipped ({lost[position]})", problem=False)
            continue
        dataset.images.append(record)
    if not any(record.instances for record in dataset.images):
        raise FdposeError(f"no usable annotations ({top_reasons(log.report)})", path=log.source)
    return dataset
