"""``fdpose convert``: Label Studio, COCO or YOLO-pose keypoints in, a YOLO-pose dataset (or COCO) out.

One reader fills the hub (:class:`pipeline.dataset.Dataset`), splits are assigned by a stable hash
(:mod:`pipeline.split`) or a split file, and one writer produces the output, atomically: a failed
run leaves the previous output untouched. Everything skipped or repaired on the way is counted in
``report.json`` (beside ``data.yaml``; ``FILE.report.json`` beside a COCO output) and the summary.

Conventions:
- Output image names are flat: sub-folders are joined with ``__`` (``seq1/0001.jpg`` ->
  ``seq1__0001.jpg``), since ultralytics maps ``images/`` to ``labels/`` by the last ``/images/`` of
  a path, which a source folder named ``images`` would break; names that still collide (also by
  case) get 8 hex digits of their source name's hash. ``report.json`` lists every renamed image.
- Splits hash the source name (``file_name`` as the input gives it), so renaming rules never move
  an image between splits. ``--from yolo`` keeps the dataset's splits unless ``--split`` is given.
- ``--to coco`` writes ``file_name``s relative to ``--images`` (or, from a YOLO dataset, to the
  images' common folder); the report names that folder as ``images_root``. Areas are box areas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from pipeline.classes import map_classes, parse_classes
from pipeline.config import PARAMS_FILE, ConvertParams, load_section, overridden
from pipeline.dataset import Dataset, ImageRecord, enforce_invariant
from pipeline.errors import FdposeError
from pipeline.io import write_json
from pipeline.skeleton import Skeleton
from pipeline.split import apply_split_file, assign_splits, empty_splits, fill_empty_splits, parse_ratios

SOURCES = ("coco", "label-studio", "yolo")
TARGETS = ("yolo", "coco")
# Fields of the params' ``convert:`` section that describe the input (what to read, its layout and its
# classes); taken from the params only when the command names no input format itself (the DVC pipeline's
# way: cfg/params.yaml alone).
INPUT_FIELDS = ("from_", "input", "images", "label_config", "url", "project", "skeleton", "classes",
                "merge_classes")


@dataclass
class ConvertResult:
    """What a conversion wrote and what it found."""

    out: Path  # the dataset folder (yolo) or the JSON file (coco)
    to: str
    report_path: Path
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, items: bool = True) -> str:
        """The printed summary: counts, then every skipped or repaired item (unless ``items`` is
        False) and every warning."""
        summary = self.report["summary"]
        visibility = summary["keypoints_by_visibility"]
        classes = self.report["classes"]
        lines = [
            f"wrote {self.out} ({self.to})",
            f"images {summary['images']}, instances {summary['instances']}, "
            f"kpt_shape {summary['kpt_shape']}, "
            f"classes {len(classes['output'])}: {', '.join(classes['output'][:8])}"
            + (", ..." if len(classes["output"]) > 8 else ""),
            "splits " + ", ".join(f"{name} {s['images']} images / {s['instances']} instances"
                                  for name, s in summary["splits"].items()),
            f"keypoints: {visibility['2']} visible, {visibility['1']} occluded, {visibility['0']} unlabelled",
            *self.report["layout"],
        ]
        if classes["dropped_unused"]:
            lines.append(f"{len(classes['dropped_unused'])} classes without instances dropped (see report)")
        details = self.report["details"]
        for reason, count in details["counts"].items():
            lines.append(f"{count} x {reason}")
        if items:
            lines.extend(f"  {item['action']}: {item['file']}: {item['item']}: {item['reason']}"
                         for item in details["items"])
        lines.extend(f"warning: {warning}" for warning in details["warnings"])
        lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def _read(source: str, *, input_path: Path | None, images: Path | None, url: str | None, project: int | None,
          label_config: Path | None, skeleton: Skeleton | None, skeleton_source: object, annotation: str,
          drop_unlabelled: bool, strict: bool, progress: bool, download_dir: Path | None) -> Dataset:
    if source == "coco":
        from pipeline.formats.coco import read_coco

        if input_path is None or images is None:
            raise FdposeError("--from coco needs --input FILE.json and --images DIR", item="convert")
        return read_coco(input_path, images, skeleton=skeleton, skeleton_source=skeleton_source,
                         drop_unlabelled=drop_unlabelled, strict=strict, progress=progress)
    if source == "yolo":
        from pipeline.formats.yolo import read_yolo

        if input_path is None:
            raise FdposeError("--from yolo needs --input data.yaml", item="convert")
        dataset = read_yolo(input_path)
        if skeleton is not None and skeleton.keypoint_names != dataset.skeleton.keypoint_names:
            raise FdposeError(f"keypoints disagree with {input_path}: the dataset has "
                              f"{dataset.skeleton.keypoint_names} and the skeleton {skeleton.keypoint_names}",
                              path=skeleton_source)
        if drop_unlabelled:
            _drop_unlabelled(dataset, input_path)
        return dataset
    # Label Studio: the reader lives in its own package, imported only for this source.
    from pipeline.labelstudio import reader

    if url is not None:
        if project is None or download_dir is None:
            raise FdposeError("--url needs --project ID", item="convert")
        dataset = reader.read_labelstudio_live(url, project, download_dir, skeleton=skeleton,
                                               annotation=annotation, strict=strict)
    else:
        if input_path is None or images is None:
            raise FdposeError("--from label-studio needs --input EXPORT.json and --images DIR, "
                              "or --url URL --project ID", item="convert")
        dataset = reader.read_labelstudio_export(input_path, images, label_config=label_config,
                                                 skeleton=skeleton, annotation=annotation, strict=strict)
    if drop_unlabelled:
        _drop_unlabelled(dataset, input_path or url)
    return dataset


def _drop_unlabelled(dataset: Dataset, source: object) -> None:
    for image in dataset.images:
        kept = []
        for instance in image.instances:
            if instance.num_labelled:
                kept.append(instance)
            else:
                # An instance: for Label Studio its task still converts (as an image without it).
                units = 0 if dataset.report.tally.get("unit") == "tasks" else 1
                dataset.report.skip(source, instance.source or image.file_name,
                                    "no labelled keypoints (--drop-unlabelled)", units=units)
        image.instances = kept


def _images_root(dataset: Dataset, given: Path | None) -> Path:
    """The folder COCO ``file_name``s are written relative to: ``--images`` when every image lies
    under it, else the images' deepest common folder."""
    paths = [os.path.abspath(image.path) for image in dataset.images]
    if given is not None:
        root = os.path.abspath(given)
        if all(p.startswith(root + os.sep) for p in paths):
            return Path(given)
    if not paths:
        return Path(".")
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def with_input(params: ConvertParams, source: str | None, **inputs: Any) -> ConvertParams:
    """``params`` with the input given (``inputs``: :data:`INPUT_FIELDS` but ``from_``; None: not given)
    in place, checked as the params file is. Without ``source`` each input field comes from ``params``
    unless given; with it the input is exactly what is given, so a params file set up for other data
    never leaks into it."""
    if source is None:
        return overridden(params, **inputs)
    cleared = dataclasses.replace(params, **dict.fromkeys(INPUT_FIELDS))
    return overridden(cleared, from_=source, **inputs)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Conversion allocates millions of small objects and no cycles: the cyclic collector's rescans
    of them would cost seconds on large inputs."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _download_dir(out: Path, to: str) -> Path:
    """Where live Label Studio images go: a temporary folder beside a YOLO dataset (its images are then
    linked into it), ``FILE_images/`` beside a COCO file (its file_names point there)."""
    if to == "coco":
        return out.with_name(f"{out.stem}_images")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.download-", dir=out.parent))


def _assign_splits(dataset: Dataset, split_file: str | Path | None, ratios: tuple[float, float, float] | None,
                   seed: int, fill: bool) -> dict[str, Any]:
    """Set every image's split; returns how, for the report. A split asked for (a non-zero fraction)
    that comes out empty is filled (``fill``) or warned about: training needs train and val images."""
    if split_file is not None:
        apply_split_file(dataset, split_file)
        return {"file": str(split_file)}
    if ratios is None:
        return {"kept": "the input dataset's splits"}
    assign_splits(dataset, ratios, seed)
    info: dict[str, Any] = {"ratios": list(ratios), "seed": seed}
    if fill:
        info["moved"] = fill_empty_splits(dataset, ratios, seed)
    hint = ("too few images to fill every split" if fill else
            "set convert.fill_splits (--fill-splits), or give a split file")
    for name in empty_splits(dataset, ratios):
        dataset.report.warn(f"split '{name}' is empty: none of the {len(dataset.images)} images fell in it "
                            f"(fractions {list(ratios)}); training needs train and val images: {hint}")
    return info


def convert(out: str | Path, params: ConvertParams, *, to: str = "yolo", split_file: str | Path | None = None,
            keep_splits: bool = False, progress: bool = False) -> ConvertResult:
    """Convert the keypoint labels ``params`` (the ``convert:`` section) describes to ``to`` at ``out``.

    The input: ``params.from_`` (the format) with ``input`` or, for a live Label Studio, ``url`` and
    ``project``; ``images``, ``label_config`` and ``skeleton`` (see :func:`with_input`).

    Classes (:func:`pipeline.classes.map_classes`): ``params.classes`` (``"a=x,b=x,c"``, a mapping or a
    list) keeps, renames or merges; ``merge_classes`` puts every class into one; classes without
    instances are dropped unless ``keep_unused_classes``.

    Splits: a ``split_file`` wins; else ``keep_splits`` keeps the input dataset's own (a YOLO input);
    else the ``params.split`` ratios. Raises :class:`FdposeError` for unusable input, before anything at
    ``out`` is replaced.
    """
    if to not in TARGETS:
        raise FdposeError(f"unknown target {to!r}; expected one of {', '.join(TARGETS)}", item="--to")
    source = params.from_
    if source not in SOURCES:
        raise FdposeError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}", item="--from")
    out = Path(out)
    input_path = Path(params.input) if params.input is not None else None
    images = Path(params.images) if params.images is not None else None
    url, skeleton = params.url, params.skeleton
    skeleton_obj = Skeleton.load(skeleton) if skeleton else None
    # Settings are checked before any input is read: a typo fails at once.
    ratios = None if split_file is not None or keep_splits else parse_ratios(params.split)
    download_dir = _download_dir(out, to) if source == "label-studio" and url is not None else None
    if download_dir is not None and to == "coco":
        images = download_dir
    try:
        with _collector_paused():
            dataset = _read(
                source, input_path=input_path, images=images, url=url, project=params.project,
                label_config=Path(params.label_config) if params.label_config else None,
                skeleton=skeleton_obj, skeleton_source=skeleton, annotation=params.annotation,
                drop_unlabelled=params.drop_unlabelled, strict=params.strict,
                progress=progress, download_dir=download_dir)
            class_info = map_classes(dataset, input_path or url, mapping=parse_classes(params.classes),
                                     merge=params.merge_classes, keep_unused=params.keep_unused_classes)
            if not dataset.skeleton.mirror:
                dataset.report.warn(f"{dataset.skeleton.flip_problem}: the dataset is written without "
                                    "flip_idx, so training and augment never mirror it; give a skeleton "
                                    "with flip_pairs (fdpose skeleton infer, then edit) to allow it")
            # The hub's invariant, once for every reader: what a reader let through is skipped here.
            enforce_invariant(dataset, input_path or url, strict=params.strict)
            split_info = _assign_splits(dataset, split_file, ratios, params.seed, params.fill_splits)
            if not any(image.instances for image in dataset.images):
                raise FdposeError("no instances to write", path=input_path or url)
            return _write(dataset, out, to, source=source, input_path=input_path or url, images=images,
                          split_info=split_info, class_info=class_info, progress=progress)
    finally:
        if download_dir is not None and to == "yolo":
            shutil.rmtree(download_dir, ignore_errors=True)


def _counts(dataset: Dataset) -> dict[str, Any]:
    """What the reader read, in its unit, and how much of it was converted and skipped
    (``read = converted + skipped``)."""
    tally = dataset.report.tally
    if not tally:
        return {}
    converted = tally.get("converted", sum(len(image.instances) for image in dataset.images))
    return {"unit": tally["unit"], "read": tally["read"], "converted": converted, "skipped": tally["skipped"]}


def _write(dataset: Dataset, out: Path, to: str, *, source: str, input_path: object, images: Path | None,
           split_info: dict[str, Any], class_info: dict[str, Any], progress: bool) -> ConvertResult:
    report: dict[str, Any] = {
        "source": {"format": source, "input": str(input_path)},
        "split": split_info,
        "classes": class_info,
        "skeleton": dataset.skeleton.to_dict(),
        "layout": dataset.skeleton.describe(),
        "summary": dataset.summary(),
        "details": dataset.report.to_dict(),
        "counts": _counts(dataset),
    }
    if to == "yolo":
        from pipeline.formats.yolo import output_names, write_yolo

        renamed = {image.file_name: name for image, name in
                   zip(dataset.images, output_names([im.file_name for im in dataset.images]), strict=True)
                   if image.file_name != name}
        report["renamed"] = renamed
        text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        write_yolo(dataset, out, progress=progress, extra_files={"report.json": text.encode("utf-8")})
        return ConvertResult(out, to, out / "report.json", report)
    from pipeline.formats.coco_write import write_coco

    root = _images_root(dataset, images)
    report["images_root"] = str(root)

    def file_name(image: ImageRecord) -> str:
        return Path(os.path.relpath(image.path, root)).as_posix()

    report_path = out.with_name(f"{out.stem}.report.json")
    write_coco(dataset, out, file_name_fn=file_name)
    write_json(report_path, report)
    return ConvertResult(out, to, report_path, report)


@click.command("convert")
@click.option("--from", "source", type=click.Choice(SOURCES),
              help="Input format. Without it, the input (format, input, images, label config, url, project, "
                   "skeleton) comes from the params' convert: section, each unless given here.")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="COCO JSON, Label Studio export JSON, or YOLO data.yaml.")
@click.option("--images", type=click.Path(path_type=Path), help="Folder the input's image names resolve in.")
@click.option("--url", help="Label Studio server URL (live; API key from LABEL_STUDIO_API_KEY).")
@click.option("--project", type=int, help="Label Studio project id (with --url).")
@click.option("--label-config", type=click.Path(path_type=Path),
              help="Label Studio labeling config XML (keypoint order from model_index).")
@click.option("--to", "to", type=click.Choice(TARGETS), default="yolo", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output dataset folder (yolo) or FILE.json (coco).")
@click.option("--split", help="train,val[,test] fractions, e.g. 0.8,0.2 (default from params).")
@click.option("--split-file", type=click.Path(path_type=Path), help="YAML/JSON {train: [names], val: [...]}.")
@click.option("--seed", type=int, help="Seed of the split hash (default from params).")
@click.option("--fill-splits/--no-fill-splits", default=None,
              help="A split with a non-zero fraction that the hash leaves empty (a handful of images) gets "
                   "the one image whose hash lies nearest it (default from params).")
@click.option("--skeleton", type=click.Path(path_type=Path), help="Skeleton file cfg/skeletons/NAME.yaml.")
@click.option("--drop-unlabelled/--keep-unlabelled", default=None,
              help="Drop instances with no labelled keypoint (kept as boxes by default).")
@click.option("--strict/--no-strict", default=None, help="Fail on the first problem instead of repairing it.")
@click.option("--annotation", type=click.Choice(["latest", "ground-truth", "all", "predictions"]),
              help="Label Studio: which annotation of a task counts (predictions: the model's "
                   "pre-annotations, e.g. to check an upload).")
@click.option("--classes", help="Classes to keep, rename or merge: NAME[=CLASS],... (e.g. "
                                "cat=animal,dog=animal,horse); instances of other classes are skipped and "
                                "counted.")
@click.option("--merge-classes", metavar="NAME", help="Put every class into one class NAME.")
@click.option("--keep-unused-classes/--drop-unused-classes", default=None,
              help="Keep classes no instance uses (dropped and listed in report.json by default).")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=PARAMS_FILE,
              show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar and no per-item listing.")
def convert_command(quiet: bool, source: str | None, input_path: Path | None, images: Path | None,
                    url: str | None, project: int | None, label_config: Path | None, skeleton: Path | None,
                    classes: str | None, merge_classes: str | None, to: str, out: Path, split: str | None,
                    split_file: Path | None, params_path: Path, **options: Any) -> None:
    """Label Studio / COCO / YOLO keypoints to a YOLO-pose dataset (or COCO)."""
    params = load_section("convert", params_path)
    if source is None and params.from_ is None:
        raise FdposeError("no input format: give --from, or set convert.from in the params file",
                          path=params_path)
    params = with_input(params, source, input=_text(input_path), images=_text(images), url=url,
                        project=project, label_config=_text(label_config), skeleton=_text(skeleton),
                        classes=parse_classes(classes), merge_classes=merge_classes)
    params = overridden(params, split=split, **options)
    # A YOLO dataset keeps its own splits unless --split is given.
    keep_splits = split is None and params.from_ == "yolo"
    result = convert(out, params, to=to, split_file=split_file, keep_splits=keep_splits, progress=not quiet)
    click.echo(result.summary(items=not quiet))


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
