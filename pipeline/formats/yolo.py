"""The YOLO-pose edge of the hub: ``data.yaml``, ``images/<split>/``, ``labels/<split>/*.txt``.

A label line is ``class cx cy w h`` then ``K`` keypoints as ``x y`` or ``x y v``, all normalised by
the image size and clipped to ``[0, 1]`` as ultralytics expects; an unlabelled keypoint is ``0 0 0``.
``data.yaml`` carries ultralytics' keys (``train``, ``val``, ``test``, ``names``, ``kpt_shape``,
``flip_idx``, ``kpt_names``, and ``kpt_oks_sigmas``, which its pose loss and validation read) and
ours (``skeleton`` edges). It has no ``path`` key on purpose: ultralytics then resolves the splits
against the file's own folder, so a dataset can be moved or cached by DVC without rewriting it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from pipeline.dataset import SPLITS, Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError, printable
from pipeline.images import IMAGE_SUFFIXES, image_size
from pipeline.io import atomic_dir, read_yaml_mapping
from pipeline.skeleton import Skeleton


def _word(text: str) -> int:
    """Four ASCII bytes as the native-endian uint32 whose memory holds them."""
    return int(np.frombuffer(text.encode("ascii"), dtype=np.uint32)[0])


# "d.dd" for 0..299 (the integer digit and the first two decimals) and "dddd" for 0..9999 (the last
# four): two table look-ups write a whole 8-byte number.
_HEAD_WORDS = np.array([_word(f"{i // 100}.{i % 100:02d}") for i in range(300)], dtype=np.uint32)
_TAIL_WORDS = np.array([_word(f"{i:04d}") for i in range(10000)], dtype=np.uint32)


def _fixed6(values: np.ndarray) -> np.ndarray:
    """``values`` in ``[0, 3)`` as ``d.dddddd`` ASCII, ``(..., 8)`` uint8: the ``%.6f`` text of each
    number (to within one unit in the last place where the product by 1e6 rounds the other way),
    built from table look-ups, so a whole dataset is formatted without a per-number Python call."""
    micro = np.clip(np.rint(values * 1e6), 0, 2_999_999).astype(np.int32)
    head, tail = np.divmod(micro, 10000)
    words = np.empty(values.shape + (2,), dtype=np.uint32)
    np.take(_HEAD_WORDS, head, out=words[..., 0])
    np.take(_TAIL_WORDS, tail, out=words[..., 1])
    return words.view(np.uint8)


def label_values(boxes: np.ndarray, keypoints: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                 kpt_dims: int) -> np.ndarray:
    """``(N, 4 + K * dims)`` normalised label values for ``N`` instances: ``cx cy w h`` of the box
    clipped to the image, then each keypoint clipped to ``[0, 1]`` (``0 0`` when unlabelled), with its
    visibility when ``kpt_dims == 3``."""
    widths = np.asarray(widths, dtype=np.float64).reshape(-1, 1)
    heights = np.asarray(heights, dtype=np.float64).reshape(-1, 1)
    x = np.clip(boxes[:, [0, 2]], 0, widths) / widths
    y = np.clip(boxes[:, [1, 3]], 0, heights) / heights
    head = np.stack([(x[:, 0] + x[:, 1]) / 2, (y[:, 0] + y[:, 1]) / 2, x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]],
                    axis=1)
    labelled = keypoints[:, :, 2] > 0
    points = np.empty(keypoints.shape[:2] + (kpt_dims,))
    points[:, :, 0] = np.where(labelled, np.clip(keypoints[:, :, 0] / widths, 0.0, 1.0), 0.0)
    points[:, :, 1] = np.where(labelled, np.clip(keypoints[:, :, 1] / heights, 0.0, 1.0), 0.0)
    if kpt_dims == 3:
        points[:, :, 2] = np.where(labelled, np.rint(keypoints[:, :, 2]), 0.0)
    return np.concatenate([head, points.reshape(len(points), keypoints.shape[1] * kpt_dims)], axis=1)


def label_text(class_ids: np.ndarray, values: np.ndarray) -> tuple[bytes, list[int]]:
    """All label lines for rows of :func:`label_values` (class, then values at 6 decimals, one line
    each) as one bytes object, and the offset where each row starts (plus the end). Built as one
    array when every class id is one digit (then every row has the same width)."""
    n, columns = values.shape
    class_ids = np.asarray(class_ids, dtype=np.int64)
    single_digit = bool(n == 0 or (class_ids.min() >= 0 and class_ids.max() <= 9))
    prefix = 2 if single_digit else 0
    text = np.empty((n, prefix + columns * 9), dtype=np.uint8)
    numbers = text[:, prefix:].reshape(n, columns, 9)
    numbers[:, :, :8] = _fixed6(values)
    numbers[:, :, 8] = 32  # " "
    numbers[:, -1, 8] = 10  # "\n"
    if single_digit:
        text[:, 0] = class_ids + 48
        text[:, 1] = 32
        return text.tobytes(), list(range(0, (n + 1) * text.shape[1], text.shape[1]))
    width = columns * 9
    body = text.tobytes()
    lines = [b"%d " % c + body[i * width:(i + 1) * width] for i, c in enumerate(class_ids.tolist())]
    offsets = np.concatenate([[0], np.cumsum([len(line) for line in lines])]).tolist()
    return b"".join(lines), offsets


def output_names(file_names: list[str]) -> list[str]:
    """Unique flat output names for source names that may carry sub-folders.

    Sub-folders are kept in the name, joined by ``__`` (``seq1/000001.jpg`` -> ``seq1__000001.jpg``),
    because ultralytics finds a label by replacing the last ``/images/`` of an image path, which a
    source folder named ``images`` would break. Names that still collide (also case-insensitively,
    for case-insensitive filesystems) all get ``-`` and 8 hex digits of their source name's SHA-1.
    """
    flat = [name.replace("/", "__") for name in file_names]
    counts = Counter(name.lower() for name in flat)
    out = []
    for source, name in zip(file_names, flat, strict=True):
        if counts[name.lower()] > 1:
            stem, dot, suffix = name.rpartition(".")
            tag = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
            name = f"{stem}-{tag}.{suffix}" if dot else f"{name}-{tag}"
        out.append(name)
    return out


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
    _check_normalised(values, k, dims, source, line_number)
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


def _check_normalised(values: np.ndarray, k: int, dims: int, source: object, line_number: int) -> None:
    """What ultralytics requires of a label line: coordinates in [0, 1], a box with a width and a height,
    visibility 0, 1 or 2."""
    points = values[4:].reshape(k, dims)
    coordinates = np.concatenate([values[:4], points[:, :2].reshape(-1)])
    problem = None
    if ((coordinates < 0) | (coordinates > 1)).any():
        problem = "coordinates outside [0, 1] (labels are normalised by the image size)"
    elif values[2] <= 0 or values[3] <= 0:
        problem = "box without a width or a height"
    elif dims == 3 and not np.isin(points[:, 2], (0.0, 1.0, 2.0)).all():
        problem = "keypoint visibility other than 0, 1 or 2"
    if problem is not None:
        raise FdposeError(problem, path=source, item=f"line {line_number}")


def _label_lines(label_file: Path) -> list[str]:
    """The lines of a label file (UTF-8, with or without a byte-order mark)."""
    try:
        return label_file.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise FdposeError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=label_file) from None
    except OSError as error:
        raise FdposeError(f"unreadable label file ({error.strerror})", path=label_file) from None


def _split_folders(data: dict[str, Any], split: str, root: Path, data_yaml: object) -> list[Path]:
    """The image folders a split of ``data.yaml`` names (one or a list, relative to the root)."""
    entry = data.get(split)
    if not entry:
        return []
    folders = entry if isinstance(entry, list) else [entry]
    if not all(isinstance(folder, str) and folder and "\0" not in folder for folder in folders):
        raise FdposeError(f"split '{split}' must name a folder or a list of folders, got {entry!r}",
                          path=data_yaml)
    found = []
    for folder in folders:
        folder = (root / folder).resolve()
        if not folder.is_dir():
            raise FdposeError(f"split '{split}' folder {printable(folder)} does not exist", path=data_yaml)
        found.append(folder)
    return found


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
    data = read_yaml_mapping(data_yaml, "data.yaml")
    # Without a `path` key the splits are relative to the yaml's folder (ultralytics' rule); a relative
    # `path` is taken relative to that folder too. (Joining the folder twice broke relative yaml paths.)
    path = data.get("path") or "."
    if not isinstance(path, str) or "\0" in path:
        raise FdposeError(f"'path' must be a folder, got {path!r}", path=data_yaml)
    root = Path(path)
    if not root.is_absolute():
        root = data_yaml.parent / root
    return data, root.resolve()


def read_yolo(data_yaml: str | Path) -> Dataset:
    """Read a YOLO-pose dataset (``train``/``val``/``test`` as folders of images) into the hub."""
    data, root = load_data_yaml(data_yaml)
    skeleton = Skeleton.from_data_yaml(data, source=data_yaml)
    dataset = Dataset(skeleton)
    for split in SPLITS:
        for folder in _split_folders(data, split, root, data_yaml):
            for image_path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                width, height = image_size(image_path)
                record = ImageRecord(image_path, image_path.relative_to(folder).as_posix(), width, height,
                                     split=split, image_id=image_path.relative_to(root).as_posix())
                label_file = label_path_for(image_path)
                if label_file.exists():
                    for number, line in enumerate(_label_lines(label_file), start=1):
                        if line.strip():
                            record.instances.append(
                                parse_label_line(line, width, height, skeleton, label_file, number))
                dataset.images.append(record)
    dataset.report.count_read("label lines", sum(len(image.instances) for image in dataset.images))
    return dataset


def data_yaml_text(skeleton: Skeleton, splits: list[str], extra: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {split: f"images/{split}" for split in splits}
    data.update(skeleton.data_yaml_fields())
    if extra:
        data.update(extra)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (which must not exist) holding ``data``."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view):]
    finally:
        os.close(descriptor)


def write_yolo(dataset: Dataset, out_dir: str | Path, extra: dict[str, Any] | None = None, *,
               progress: bool = False, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the dataset as a YOLO-pose folder, atomically (the previous ``out_dir`` survives a failure).

    Images are hard-linked or copied, never re-encoded, under the flat names of :func:`output_names`.
    ``train`` and ``val`` are always declared (ultralytics requires both); ``test`` only when it has
    images. Label text for the whole dataset is formatted at once (:func:`label_text`).
    ``extra_files`` (name -> bytes, e.g. a report) are written into the folder before it replaces
    the previous one.
    """
    out_dir = Path(out_dir)
    skeleton = dataset.skeleton
    k = skeleton.num_keypoints
    splits = dataset.splits()
    names = dict(zip(map(id, dataset.images), output_names([im.file_name for im in dataset.images]),
                     strict=True))
    instances = [(position, inst) for position, image in enumerate(dataset.images)
                 for inst in image.instances]
    owner = np.array([position for position, _ in instances], dtype=np.int64)
    boxes = np.array([inst.bbox for _, inst in instances], dtype=np.float64).reshape(-1, 4)
    keypoints = np.array([inst.keypoints for _, inst in instances], dtype=np.float64).reshape(-1, k, 3)
    class_ids = np.array([inst.class_id for _, inst in instances], dtype=np.int64)
    widths = np.array([im.width for im in dataset.images], dtype=np.float64)[owner]
    heights = np.array([im.height for im in dataset.images], dtype=np.float64)[owner]
    text, offsets = label_text(class_ids, label_values(boxes, keypoints, widths, heights, skeleton.kpt_dims))
    del boxes, keypoints, widths, heights  # the text is all that is needed from here on
    first_line = np.searchsorted(owner, np.arange(len(dataset.images) + 1)).tolist()
    position_of = {id(im): position for position, im in enumerate(dataset.images)}
    declared = [s for s in SPLITS if s in ("train", "val") or s in splits]
    with atomic_dir(out_dir) as tmp:
        for split in declared:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
        bar = tqdm(total=len(dataset.images), desc="writing", unit="img", disable=not progress, leave=False,
                   delay=1)
        # Plain string paths and os-level writes: one system call per step, for tens of thousands of files.
        for split, images in splits.items():
            image_dir, label_dir = os.path.join(tmp, "images", split), os.path.join(tmp, "labels", split)
            for image in images:
                name = names[id(image)]
                target = os.path.join(image_dir, name)
                try:
                    os.link(image.path, target)
                except OSError:  # another filesystem, or links not allowed: copy the bytes
                    shutil.copyfile(image.path, target)
                position = position_of[id(image)]
                label = text[offsets[first_line[position]]:offsets[first_line[position + 1]]]
                _write_new(os.path.join(label_dir, os.path.splitext(name)[0] + ".txt"), label)
                bar.update()
        bar.close()
        (tmp / "data.yaml").write_text(data_yaml_text(skeleton, declared, extra), encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
    return out_dir / "data.yaml"
