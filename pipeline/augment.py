"""``fdpose augment``: keypoint-aware offline augmentation of a YOLO-pose dataset's training split.

The transforms come from a config file (``cfg/augment.yaml``) as an ordered list of albumentations
transforms, ``- ClassName: {keyword: value}``. Keypoints and boxes move with the image; what
albumentations 2.0.8 leaves to us is done here:

* **Left/right semantics.** A mirroring transform (horizontal or vertical flip, transpose, a mirroring
  D4 element, an affine matrix with negative determinant) makes the left wrist look like a right one.
  Every variant counts the mirrors it went through; an odd count permutes the keypoints through the
  dataset's flip permutation (two flips are a 180-degree rotation and swap nothing).
* **Aligned keypoints.** Keypoints are never dropped (``remove_invisible=False``): a point outside the
  frame becomes visibility 0 with coordinates 0, so keypoint ``i`` stays keypoint ``i``.
* **Instances.** The box is albumentations' transformed box, clipped to the frame; an instance whose
  box leaves the frame entirely is removed and counted.
* **Pixel conventions.** Our keypoints are continuous pixel coordinates (the centre of pixel ``i`` is
  ``i + 0.5``, as YOLO's normalised coordinates imply); albumentations' flips and rotations treat a
  keypoint as a pixel index (``x -> W - 1 - x``). Keypoints are shifted by half a pixel on the way in
  and out so that a flip is exactly ``x -> W - x``. Boxes are already continuous in both.

Determinism: each variant's random state is seeded from ``(seed, image file name, copy number)``
alone, so the output bytes do not depend on the number of worker processes or the order they finish.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

# albumentations asks PyPI for a newer version on import unless told not to; runs must stay offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import click  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import MAX_COPIES, PARAMS_FILE, AugmentParams, load_section, overridden  # noqa: E402
from pipeline.dataset import Dataset, ImageRecord, Instance  # noqa: E402
from pipeline.errors import FdposeError, printable  # noqa: E402
from pipeline.formats.yolo import read_yolo, write_yolo  # noqa: E402
from pipeline.io import read_yaml_mapping  # noqa: E402
from pipeline.skeleton import Skeleton  # noqa: E402

JPEG_QUALITY = 95  # fixed, so that re-running gives the same bytes
PNG_COMPRESSION = 3
# D4 / SquareSymmetry group elements that are reflections (the others are rotations).
_MIRROR_GROUP_ELEMENTS = {"h", "v", "t", "hvt"}
_MIRROR_TRANSFORMS = {"HorizontalFlip", "VerticalFlip", "Transpose"}


# --- configuration -------------------------------------------------------------------------------

def load_transforms(config: str | Path) -> list[dict[str, Any]]:
    """The ``transforms:`` list of an augment config, each entry ``{ClassName: {kw: value}}``.

    Structure only; :func:`build_pipeline` checks the names and parameters against albumentations.
    """
    config = Path(config)
    raw = read_yaml_mapping(config, "augment config", expected="a mapping with a 'transforms' list")
    if not isinstance(raw.get("transforms"), list):
        raise FdposeError("expected a mapping with a 'transforms' list", path=config)
    return raw["transforms"]


def _entry_label(entry: Any, where: str) -> str:
    name = next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else None
    return f"{where} ({printable(name)})" if name else where


def _build_transform(entry: Any, where: str, source: Path | str) -> A.BasicTransform | A.BaseCompose:
    """One config entry as an albumentations object; compositions (``OneOf``, ``SomeOf``...) recurse
    through their ``transforms`` list."""
    label = _entry_label(entry, where)
    if not (isinstance(entry, dict) and len(entry) == 1):
        raise FdposeError("each transform must be written '- ClassName: {keyword: value}'", path=source,
                          item=label)
    name, kwargs = next(iter(entry.items()))
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise FdposeError(f"parameters must be a mapping, got {kwargs!r}", path=source, item=label)
    cls = getattr(A, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise FdposeError(f"unknown albumentations transform {name!r}", path=source, item=label)
    kwargs = dict(kwargs)
    if issubclass(cls, A.BaseCompose):
        children = kwargs.get("transforms")
        if not isinstance(children, list):
            raise FdposeError("a composition needs a 'transforms' list", path=source, item=label)
        kwargs["transforms"] = [_build_transform(child, f"{where}.transforms[{i}]", source)
                                for i, child in enumerate(children)]
    # albumentations only *warns* about unknown keyword arguments: check them against the signature.
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            raise FdposeError(f"unknown parameter(s) {unknown} for {name}; valid: {sorted(parameters)}",
                              path=source, item=label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning at construction means an ignored setting
            transform = cls(**kwargs)
    except Exception as error:  # pydantic ValidationError, ValueError, TypeError, UserWarning...
        reason = printable(" ".join(str(error).split()))
        raise FdposeError(f"invalid parameters for {name}: {reason}", path=source, item=label) from None
    if getattr(transform, "invalid_args", None):
        raise FdposeError(f"unknown parameter(s) {transform.invalid_args} for {name}", path=source,
                          item=label)
    return transform


def build_pipeline(transforms: list[dict[str, Any]], source: Path | str = "augment config") -> A.Compose:
    """An albumentations ``Compose`` over the config entries, with keypoints (kept even when outside
    the frame), boxes (clipped) and the record of applied transforms that mirror detection reads."""
    built = [_build_transform(entry, f"transforms[{i}]", source) for i, entry in enumerate(transforms)]
    with warnings.catch_warnings():
        # A photometric-only pipeline is fine: keypoints and boxes then simply stay where they are.
        warnings.filterwarnings("ignore", message="Got processor for")
        return A.Compose(
            built,
            keypoint_params=A.KeypointParams(format="xy", label_fields=["keypoint_ids"],
                                             remove_invisible=False),
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True,
                                     filter_invalid_bboxes=True),
            save_applied_params=True,
        )


def is_mirror(name: str, params: dict[str, Any]) -> bool:
    """Whether one applied transform reverses orientation (and so swaps left and right)."""
    if name in _MIRROR_TRANSFORMS:
        return True
    if "group_element" in params:  # D4, SquareSymmetry
        return str(params["group_element"]) in _MIRROR_GROUP_ELEMENTS
    matrix = params.get("matrix")
    if matrix is not None and np.shape(matrix) in ((2, 3), (3, 3)):
        with np.errstate(invalid="ignore"):  # a NaN matrix (a broken parameter) mirrors nothing
            return float(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:2, :2])) < 0
    return False


def variant_seed(seed: int, file_name: str, copy: int) -> int:
    """The random seed of one variant, from the run seed, the image's name and the copy number only."""
    digest = hashlib.sha256(f"{seed}\0{file_name}\0{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# --- one image -------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One augmented copy of an image: its file, size and instances, and what changed."""

    file_name: str
    path: Path
    width: int
    height: int
    instances: list[Instance]
    instances_dropped: int
    keypoints_made_invisible: int
    mirrored: bool
    skipped: bool = False  # mirrored, but the dataset's flip is unknown: not written


def augment_instances(compose: A.Compose, image: np.ndarray, instances: list[Instance],
                      flip_permutation: list[int], rng_seed: int
                      ) -> tuple[np.ndarray, list[Instance], int, int, bool]:
    """Apply the pipeline once. Returns the image, the surviving instances, how many instances left the
    frame, how many labelled keypoints became invisible, and whether the result is mirrored."""
    height, width = image.shape[:2]
    num_keypoints = len(flip_permutation)
    points = (np.concatenate([inst.keypoints[:, :2] for inst in instances]) if instances
              else np.zeros((0, 2)))
    boxes = (np.stack([inst.bbox for inst in instances]) if instances else np.zeros((0, 4)))
    boxes = np.clip(boxes, 0, [width, height, width, height])
    compose.set_random_state(np.random.default_rng(rng_seed), random.Random(rng_seed))
    try:
        out = compose(image=image, keypoints=points - 0.5, keypoint_ids=np.arange(len(points)),
                      bboxes=boxes, box_ids=np.arange(len(boxes)))
    except Exception as error:  # e.g. a transform that needs inputs a pose dataset has not (masks)
        reason = printable(" ".join(str(error).split()))
        raise FdposeError(f"augmentation failed: {type(error).__name__}: {reason}") from None
    mirrored = sum(is_mirror(name, params) for name, params in out["applied_transforms"]) % 2 == 1
    new_height, new_width = out["image"].shape[:2]
    moved = np.zeros_like(points)
    moved[np.asarray(out["keypoint_ids"], dtype=int)] = np.asarray(out["keypoints"])[:, :2] + 0.5
    kept = []
    made_invisible = 0
    for box, box_id in zip(np.asarray(out["bboxes"]).reshape(-1, 4), out["box_ids"], strict=True):
        if not np.isfinite(box[:4]).all():
            continue  # a transform with broken parameters: the instance is lost, and counted as dropped
        source = instances[int(box_id)]
        keypoints = np.zeros((num_keypoints, 3))
        keypoints[:, :2] = moved[int(box_id) * num_keypoints:(int(box_id) + 1) * num_keypoints]
        keypoints[:, 2] = source.keypoints[:, 2]
        outside = (~np.isfinite(keypoints[:, :2]).all(axis=1)
                   | (keypoints[:, 0] < 0) | (keypoints[:, 0] > new_width)
                   | (keypoints[:, 1] < 0) | (keypoints[:, 1] > new_height))
        made_invisible += int((outside & (keypoints[:, 2] > 0)).sum())
        keypoints[outside, 2] = 0
        if mirrored:
            # The point that was the left wrist now looks like a right wrist: it takes that index.
            keypoints = keypoints[flip_permutation]
        keypoints[keypoints[:, 2] == 0, :2] = 0
        kept.append(Instance(source.class_id, np.asarray(box[:4], dtype=np.float64), keypoints,
                             source=source.source))
    return out["image"], kept, len(instances) - len(kept), made_invisible, mirrored


def variant_file_name(file_name: str, copy: int) -> str:
    """``dir/name.jpg`` -> ``dir/name_aug1.jpg``; formats other than JPEG and PNG become PNG."""
    path = PurePosixPath(file_name)
    suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    return str(path.with_name(f"{path.stem}_aug{copy}{suffix}"))


def encode_image(image_rgb: np.ndarray, suffix: str) -> bytes:
    """Deterministic encoding: JPEG at a fixed quality, or PNG at a fixed compression level."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if suffix.lower() in (".jpg", ".jpeg"):
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise FdposeError("could not encode image", item=suffix)
    return data.tobytes()


def read_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """The image as RGB pixels, EXIF orientation applied (as the labels assume)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FdposeError("unreadable image", path=path)
    if image.shape[:2] != (height, width):
        raise FdposeError(f"decoded size {image.shape[1]}x{image.shape[0]} differs from the labelled "
                          f"size {width}x{height}", path=path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# Per-process state of the workers, set once by _init_worker (a pipeline is costly to build).
_WORKER: dict[str, Any] = {}


def _init_worker(transforms: list[dict[str, Any]], source: str, flip_permutation: list[int], mirror: bool,
                 staging: str, seed: int, copies: int) -> None:
    cv2.setNumThreads(1)  # parallelism comes from processes; threads would oversubscribe the cores
    # mirror False: the dataset's left/right pairs are unknown, so mirrored variants are skipped.
    _WORKER.update(compose=build_pipeline(transforms, source), mirror=mirror, flip=list(flip_permutation),
                   staging=Path(staging), seed=seed, copies=copies)


def _augment_one(image: ImageRecord) -> list[Variant]:
    state = _WORKER
    pixels = read_rgb(image.path, image.width, image.height)
    variants = []
    for copy in range(1, state["copies"] + 1):
        name = variant_file_name(image.file_name, copy)
        try:
            result, instances, dropped, invisible, mirrored = augment_instances(
                state["compose"], pixels, image.instances, state["flip"],
                variant_seed(state["seed"], image.file_name, copy))
        except FdposeError as error:
            raise FdposeError(str(error), path=image.path, item=f"copy {copy}") from None
        if mirrored and not state["mirror"]:
            variants.append(Variant(name, image.path, 0, 0, [], 0, 0, mirrored, skipped=True))
            continue
        target = state["staging"] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_image(result, PurePosixPath(name).suffix))
        variants.append(Variant(name, target, result.shape[1], result.shape[0], instances, dropped,
                                invisible, mirrored))
    return variants


def _run_all(images: list[ImageRecord], workers: int, init_args: tuple, progress: bool
             ) -> list[list[Variant]]:
    """Variants of every image, in input order (whatever order the workers finish in)."""
    from tqdm import tqdm

    # The bar is closed on a failure too, so that the error starts a line of its own.
    with tqdm(total=len(images), desc="augment", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(images) <= 1:
            return _run_here(images, init_args, bar)
        return _run_pool(images, workers, init_args, bar)


def _run_here(images: list[ImageRecord], init_args: tuple, bar: Any) -> list[list[Variant]]:
    results = []
    threads = cv2.getNumThreads()
    try:
        _init_worker(*init_args)
        for image in images:
            results.append(_augment_one(image))
            bar.update()
    finally:
        cv2.setNumThreads(threads)
        _WORKER.clear()
    return results


def _run_pool(images: list[ImageRecord], workers: int, init_args: tuple, bar: Any) -> list[list[Variant]]:
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers start in milliseconds with albumentations already imported (spawn or forkserver
    # re-import it, about 1.5 s, as long as augmenting a few hundred images). Workers use only
    # numpy/OpenCV, single-threaded (_init_worker), so no thread pool of this process is needed there.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    # Chunks amortise the inter-process round trips; several per worker keep the load balanced.
    chunk = max(1, min(16, len(images) // (workers * 4)))
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=init_args) as pool:
        for variants in pool.map(_augment_one, images, chunksize=chunk):  # yields in input order
            results.append(variants)
            bar.update()
    return results


# --- preview -------------------------------------------------------------------------------------

_CELL = 224
_LEFT, _RIGHT, _CENTRE = (255, 128, 0), (0, 160, 255), (0, 220, 0)  # BGR: blue-ish, orange, green


def _side_colours(skeleton: Skeleton) -> list[tuple[int, int, int]]:
    colours = []
    for name in skeleton.keypoint_names:
        lowered = name.lower()
        if lowered.startswith(("left", "l_")) or "_left" in lowered:
            colours.append(_LEFT)
        elif lowered.startswith(("right", "r_")) or "_right" in lowered:
            colours.append(_RIGHT)
        else:
            colours.append(_CENTRE)
    return colours


def draw_cell(path: Path, instances: list[Instance], skeleton: Skeleton, caption: str) -> np.ndarray:
    """One preview tile: the image fitted into a square, boxes, skeleton edges and keypoints (left
    side blue, right side orange, occluded points hollow), and a caption."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FdposeError("unreadable image", path=path)
    scale = _CELL / max(image.shape[:2])
    image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    cell = np.full((_CELL + 18, _CELL, 3), 40, np.uint8)
    cell[:image.shape[0], :image.shape[1]] = image
    colours = _side_colours(skeleton)
    for instance in instances:
        x0, y0, x1, y1 = (instance.bbox * scale).round().astype(int)
        cv2.rectangle(cell, (x0, y0), (x1, y1), (255, 255, 255), 1)
        points = instance.keypoints
        for a, b in skeleton.edges:
            if points[a, 2] > 0 and points[b, 2] > 0:
                pa = tuple((points[a, :2] * scale).round().astype(int))
                pb = tuple((points[b, :2] * scale).round().astype(int))
                cv2.line(cell, pa, pb, (220, 220, 220), 1, cv2.LINE_AA)
        for index, (x, y, v) in enumerate(points):
            if v > 0:
                centre = (round(x * scale), round(y * scale))
                cv2.circle(cell, centre, 3, colours[index], -1 if v == 2 else 1, cv2.LINE_AA)
    cv2.putText(cell, caption, (3, image.shape[0] + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return cell


def render_preview(rows: list[tuple[ImageRecord, list[Variant]]], skeleton: Skeleton,
                   max_variants: int = 3) -> bytes:
    """A PNG grid: each row an original followed by its first variants."""
    tiles = []
    for original, variants in rows:
        row = [draw_cell(original.path, original.instances, skeleton, "original")]
        for number, variant in enumerate(variants[:max_variants], start=1):
            caption = f"copy {number}" + (" (mirrored)" if variant.mirrored else "")
            row.append(draw_cell(variant.path, variant.instances, skeleton, caption))
        tiles.append(row)
    columns = max(len(row) for row in tiles)
    blank = np.full_like(tiles[0][0], 40)
    grid = np.vstack([np.hstack(row + [blank] * (columns - len(row))) for row in tiles])
    ok, data = cv2.imencode(".png", grid, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise FdposeError("could not encode the preview")
    return data.tobytes()


# --- the stage -----------------------------------------------------------------------------------

@dataclass
class AugmentResult:
    """What ``fdpose augment`` wrote and counted."""

    out: Path  # the augmented dataset folder
    data_yaml: Path
    images_in: int
    images_out: int
    instances_in: int
    instances_out: int
    instances_dropped: int
    keypoints_made_invisible: int
    mirrored_variants: int
    report_path: Path
    preview_path: Path | None
    mirrored_skipped: int = 0  # mirrored variants not written: the dataset's flip is unknown
    dataset: dict[str, Any] = field(default_factory=dict)  # the output's counts (Dataset.summary)

    def summary(self) -> str:
        """What the command prints: the counts, then the files written."""
        files = f"wrote {self.data_yaml}, {self.report_path}" + (f", {self.preview_path}" if self.preview_path
                                                                  else "")
        return (f"images in {self.images_in}, images out {self.images_out}, "
                f"instances dropped {self.instances_dropped}, "
                f"keypoints made invisible {self.keypoints_made_invisible}, "
                f"mirrored variants {self.mirrored_variants}"
                + (f", mirrored variants skipped {self.mirrored_skipped} (the dataset's left/right pairs are "
                   "unknown: no flip_idx)" if self.mirrored_skipped else "") + f"\n{files}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_in": self.images_in,
            "images_out": self.images_out,
            "instances_in": self.instances_in,
            "instances_out": self.instances_out,
            "instances_dropped": self.instances_dropped,
            "keypoints_made_invisible": self.keypoints_made_invisible,
            "mirrored_variants": self.mirrored_variants,
            "mirrored_skipped": self.mirrored_skipped,
        }


def default_workers() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def augment(data: str | Path, out: str | Path, params: AugmentParams | None = None, *,
            workers: int | None = None, progress: bool = True, preview_rows: int = 4) -> AugmentResult:
    """Write at ``out`` the dataset of ``data`` (a ``data.yaml``) with ``params.copies`` augmented variants
    of every training image added (``params``: the ``augment:`` section, its defaults when None: copies,
    seed and the transforms file); validation and test images are linked unchanged.

    Also writes ``out/report.json`` (counts) and ``out/preview.png`` (originals beside variants).
    """
    params = params if params is not None else AugmentParams()
    copies, seed, config = params.copies, params.seed, Path(params.config)
    if not 0 <= copies <= MAX_COPIES:
        raise FdposeError(f"--copies must be between 0 and {MAX_COPIES}, got {copies}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise FdposeError(f"--workers must be 1 or more, got {workers}")
    out = Path(out)
    transforms = load_transforms(config)
    build_pipeline(transforms, config)  # fail on a bad config before reading any image
    dataset = read_yolo(data)
    for split in ("train", "val"):  # what training needs: refused here, not 40 lines into ultralytics
        if not dataset.splits().get(split):
            raise FdposeError(f"split '{split}' has no images (training needs train and val images; for a "
                              "handful of images: convert.fill_splits)", path=data)
    skeleton = dataset.skeleton
    train = [image for image in dataset.images if (image.split or "train") == "train"]
    names = {image.file_name for image in train}
    for image in train:
        for copy in range(1, copies + 1):
            if variant_file_name(image.file_name, copy) in names:
                raise FdposeError(f"the name of its augmented copy {copy} is taken by another training image",
                                  path=image.path)

    # Variants are encoded into a staging folder beside the output (same filesystem, so write_yolo
    # hard-links them like the originals); it goes away whether the run succeeds or not.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        init_args = (transforms, str(config), skeleton.flip_permutation, skeleton.mirror, str(staging), seed,
                     copies)
        drawn = _run_all(train, workers, init_args, progress) if copies else [[] for _ in train]
        variants = [[v for v in per_image if not v.skipped] for per_image in drawn]
        variants_of = {id(image): per_image for image, per_image in zip(train, variants, strict=True)}
        augmented = Dataset(skeleton, report=dataset.report)
        for image in dataset.images:
            augmented.images.append(image)
            for variant in variants_of.get(id(image), []):
                augmented.images.append(ImageRecord(variant.path, variant.file_name, variant.width,
                                                    variant.height, variant.instances, split="train"))
        flat = [variant for per_image in variants for variant in per_image]
        instances_in = sum(len(image.instances) for image in train)
        result = AugmentResult(
            out=out,
            data_yaml=out / "data.yaml",
            images_in=len(train),
            images_out=len(train) + len(flat),
            instances_in=instances_in,
            instances_out=instances_in + sum(len(v.instances) for v in flat),
            instances_dropped=sum(v.instances_dropped for v in flat),
            keypoints_made_invisible=sum(v.keypoints_made_invisible for v in flat),
            mirrored_variants=sum(v.mirrored for v in flat),
            mirrored_skipped=sum(v.skipped for per_image in drawn for v in per_image),
            report_path=out / "report.json",
            preview_path=out / "preview.png" if train else None,
            dataset=augmented.summary(),
        )
        report = {
            **result.to_dict(),
            "copies": copies,
            "seed": seed,
            "config": str(config),
            "transforms": json.loads(json.dumps(transforms, default=str)),
            "dataset": result.dataset,
            "source_report": dataset.report.to_dict(),
        }
        extra_files = {"report.json": (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()}
        if train:
            extra_files["preview.png"] = render_preview(
                list(zip(train, variants, strict=True))[:preview_rows], skeleton)
        write_yolo(augmented, out, extra_files=extra_files, progress=progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


@click.command("augment")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="data.yaml of the YOLO-pose dataset to augment.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the augmented dataset (replaced atomically).")
@click.option("--copies", type=int, default=None, help="Augmented variants per training image "
              "[params.yaml augment.copies, else 1].")
@click.option("--seed", type=int, default=None, help="Random seed [params.yaml augment.seed, else 0].")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Transforms file [params.yaml augment.config, else cfg/augment.yaml].")
@click.option("--workers", type=int, default=None, help="Worker processes [all cores]; the output does "
              "not depend on it.")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path),
              default=PARAMS_FILE, show_default=True, help="Params file for the defaults.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def augment_command(data: Path, out: Path, copies: int | None, seed: int | None, config: Path | None,
                    workers: int | None, params_path: Path, quiet: bool) -> None:
    """Keypoint-aware offline augmentation of a dataset's training split."""
    settings = overridden(load_section("augment", params_path), copies=copies, seed=seed,
                          config=None if config is None else str(config))
    result = augment(data, out, settings, workers=workers, progress=not quiet)
    click.echo(result.summary())
