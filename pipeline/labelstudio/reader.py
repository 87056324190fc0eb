"""Label Studio JSON exports (a file, or a project read live from its server) into the hub:
:func:`read_labelstudio_export`, :func:`read_labelstudio_live`.

* **Instances.** ``keypointlabels`` regions join the ``rectanglelabels`` region their ``parentID``
  names. A keypoint without a parent (or whose parent is missing) joins the one rectangle that
  contains it (rotated rectangles tested as polygons); inside several or none it is skipped and
  reported. In an annotation with no rectangle at all, the keypoints form one instance of the first
  class whose box is their extent plus ``KEYPOINT_BOX_MARGIN`` of that extent on each side (at
  least ``MIN_BOX_MARGIN`` of the image's longer side; both in :mod:`pipeline.labelstudio.instances`),
  clipped to the image.
* **Keypoint order.** ``model_index`` on the ``<Label>`` tags of the label config (a file for an
  export, the project's for a live read); a config without ``model_index`` gives its labels' document
  order (with a warning). Else the skeleton file's order. With neither, names are ordered as they
  first appear in the export and a warning says so (it reaches ``report.json``). Config and skeleton
  together must agree on names and order. Class names are the ``RectangleLabels`` labels (config
  order; else the skeleton's ``classes``; else first appearance).
* **Coordinates** are percentages of ``original_width``/``original_height``, applied to the image
  file's own size, so a re-scaled copy of the image still lines up.
* **Orientation.** Hub pixels are those of the image as displayed after its EXIF orientation (what
  browsers, hence Label Studio, show). Three frames are told apart by the size a result records:
  (1) the EXIF-oriented size (or a proportional one): coordinates are used as they are. Label
  Studio (checked in 1.23) turns the canvas (``image_rotation``) without touching coordinates, so this holds
  for any ``image_rotation``; (2) the oriented size with width and height swapped while
  ``image_rotation`` is 90 or 270: older Label Studio rotated the regions with the view, so points
  are rotated back (clockwise angles, as Label Studio's canvas uses); (3) the raw, pre-EXIF size of a
  file whose EXIF orientation swaps the axes (5-8): the labeller's browser ignored EXIF, so points
  are mapped through the EXIF transform (reported as repaired). Any other size with another aspect
  ratio skips the task: the labels belong to a different image. Rectangles carry ``rotation``
  (degrees clockwise about their top-left corner, in pixels); their corners are mapped, and the
  hub box is the corners' axis-aligned extent.
* **Visibility** 2 for a labelled point; 1 when a per-region ``<Choices>`` on the point carries the
  skeleton's ``occlusion_choice``; 0 when the point is absent.
* **Annotations.** Cancelled ones are skipped and counted, as are tasks with no (usable) annotation
  or an empty result. ``annotation="latest"`` keeps the most recently updated annotation of a task,
  ``"ground-truth"`` the latest one marked ground truth, ``"all"`` every one (an image record per
  annotation, file names suffixed ``__ann<id>`` when a task has several), ``"predictions"`` the
  task's most recent model prediction instead of human annotations.
* **Bad input** (reported, the rest converts): unknown labels, NaN coordinates, keypoints outside
  the image (clipped; an :class:`FdposeError` with ``strict``), unresolvable images (see
  :mod:`pipeline.labelstudio.images`), duplicate images. Invalid JSON or a label config without
  keypoints is an :class:`FdposeError`.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.dataset import Dataset, ImageRecord, Report
from pipeline.errors import FdposeError, printable
from pipeline.images import image_size
from pipeline.io import parse_json, read_json
from pipeline.labelstudio.client import (
    ImageFetcher,
    api_key,
    export_snapshot,
    project_label_config,
    sdk_client,
)
from pipeline.labelstudio.config import LabelConfig, parse_label_config
from pipeline.labelstudio.images import FolderImages, ServerImages, UnresolvedImage, parse_image_ref
from pipeline.labelstudio.instances import InstanceBuilder
from pipeline.labelstudio.results import check_mode, group_regions, select_results
from pipeline.skeleton import Skeleton


class _Reader:
    """One pass over an export's tasks, filling a report as it goes."""

    def __init__(self, tasks: list[Any], source: str, images: Any, config: LabelConfig | None,
                 skeleton: Skeleton | None, annotation: str, strict: bool, progress: bool = False):
        self.tasks = tasks
        self.source = source
        self.images = images  # resolves image references: FolderImages or ServerImages
        self.config = config
        self.skeleton = skeleton
        self.mode = check_mode(annotation)
        self.strict = strict
        self.progress = progress
        self.report = Report()
        self.aliases = dict(config.aliases) if config else {}
        self._superseded = 0
        self._ignored_types: dict[str, int] = {}

    # -- first pass: names ------------------------------------------------------------------------

    def _names_in_order(self) -> tuple[list[str], list[str]]:
        """Keypoint and rectangle labels in order of first appearance (counted annotations only)."""
        keypoints: dict[str, None] = {}
        classes: dict[str, None] = {}
        probe = Report()  # this pass only looks: what it leaves out is reported by the second
        for index, task in enumerate(self.tasks):
            if not isinstance(task, dict):
                continue
            where = f"task {printable(task.get('id', index))}"
            for label, result in select_results(task, where, self.mode, self.source, probe)[0]:
                for region in group_regions(result, label, self.source, probe, {}):
                    for name in region.labels:
                        name = self.aliases.get(name, name)
                        (keypoints if region.kind == "keypoint" else classes).setdefault(name, None)
        return list(keypoints), list(classes)

    def _layout(self) -> Skeleton:
        """The skeleton: keypoint order and class names (module docstring, "Keypoint order")."""
        seen_keypoints, seen_classes = ([], [])
        if self.config is None or self.skeleton is None:
            seen_keypoints, seen_classes = self._names_in_order()
        skeleton = self.skeleton
        config = self.config
        if config is not None:
            self.report.warnings.extend(config.warnings)
            if skeleton is not None:
                if set(skeleton.keypoint_names) != set(config.keypoint_names):
                    raise FdposeError(
                        f"skeleton keypoints {skeleton.keypoint_names} differ from the label config's "
                        f"{config.keypoint_names}", path=self.source)
                if skeleton.keypoint_names != config.keypoint_names:
                    raise FdposeError(
                        f"skeleton keypoint order {skeleton.keypoint_names} disagrees with the label "
                        f"config's model_index order {config.keypoint_names}", path=self.source)
                classes = config.class_names or skeleton.class_names
                if (config.class_names and skeleton.class_names != ["object"]
                        and skeleton.class_names != config.class_names):
                    raise FdposeError(f"skeleton classes {skeleton.class_names} differ from the label "
                                      f"config's rectangle labels {config.class_names}", path=self.source)
                return replace(skeleton, class_names=list(classes))
            return Skeleton(keypoint_names=list(config.keypoint_names),
                            class_names=list(config.class_names) or ["object"])
        if skeleton is not None:
            if skeleton.class_names == ["object"] and seen_classes and seen_classes != ["object"]:
                return replace(skeleton, class_names=seen_classes)
            return skeleton
        if not seen_keypoints:
            raise FdposeError("no keypoint labels in the export (and no label config or skeleton to "
                              "name them)", path=self.source)
        self.report.warn(f"{self.source}: no label config or skeleton: keypoint order taken from first "
                         f"appearance {seen_keypoints}; pass a label config (model_index) or a skeleton "
                         "to fix it")
        return Skeleton(keypoint_names=seen_keypoints, class_names=seen_classes or ["object"])

    # -- second pass: images ----------------------------------------------------------------------

    def _image_key(self, data: dict[str, Any]) -> str | None:
        if self.config is not None and self.config.image_key:
            return self.config.image_key
        if isinstance(data.get("image"), str):
            return "image"
        strings = [key for key, value in data.items() if isinstance(value, str)]
        return strings[0] if len(strings) == 1 else None

    def _task_images(self, index: int, task: Any, skeleton: Skeleton, builder: InstanceBuilder,
                     used: dict[str, str]) -> list[ImageRecord]:
        """The image records of one task (one per selected annotation); none when it is skipped."""
        if not isinstance(task, dict):
            self.report.skip(self.source, f"task #{index}", "not a Label Studio task (not an object)")
            return []
        where = f"task {printable(task.get('id', f'#{index}'))}"
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        selected, superseded = select_results(task, where, self.mode, self.source, self.report)
        self._superseded += superseded
        if not selected:
            return []
        key = self._image_key(data)
        reference = data.get(key) if key else None
        if not isinstance(reference, str) or not reference.strip():
            self.report.skip(self.source, where, "no image reference in the task data")
            return []
        try:
            path, name = self.images.resolve(parse_image_ref(reference))
            width, height = image_size(path)
        except UnresolvedImage as error:
            self.report.skip(self.source, where, str(error))
            return []
        except FdposeError as error:
            self.report.skip(self.source, where, f"unreadable image ({error})")
            return []
        except ValueError as error:  # e.g. a URL with a malformed host
            self.report.skip(self.source, where, f"invalid image reference {reference!r} ({error})")
            return []
        several = len(selected) > 1
        images = []
        for label, result in selected:
            file_name = name
            if several:
                stem, suffix = posixpath.splitext(name)
                file_name = f"{stem}__ann{label.split()[-1]}{suffix}"
            item = f"{where} {label}"
            if file_name in used:
                self.report.skip(self.source, item, f"image {file_name} already used by {used[file_name]}")
                continue
            regions = group_regions(result, item, self.source, self.report, self._ignored_types)
            instances = builder.instances(regions, path, width, height, skeleton, item)
            if instances is None:
                continue
            used[file_name] = item
            task_id = task.get("id", index)
            image_id = f"{task_id}:{label.split()[-1]}" if several else task_id
            images.append(ImageRecord(path=path, file_name=file_name, width=width, height=height,
                                      instances=instances, image_id=image_id))
        return images

    def read(self) -> Dataset:
        """The hub dataset of every task, with the report of what was skipped or repaired."""
        skeleton = self._layout()
        builder = InstanceBuilder(self.source, self.report, self.aliases, self.strict)
        self.report.count_read("tasks", len(self.tasks))
        self.report.tally["converted"] = 0
        images: list[ImageRecord] = []
        used: dict[str, str] = {}
        # Live reads download an image per task: the bar shows it (convert --quiet turns it off).
        for index, task in enumerate(tqdm(self.tasks, desc="label studio tasks", unit="task",
                                          disable=not self.progress)):
            found = self._task_images(index, task, skeleton, builder, used)
            if found:
                images += found
                self.report.tally["converted"] += 1
            else:
                self.report.count_skipped(1)
        if self._superseded:
            self.report.warn(f"{self.source}: {self._superseded} older annotation(s) superseded by the most "
                             f"recent one of their task (annotation={self.mode})")
        if builder.unknown_choices:
            self.report.warn(f"{self.source}: per-region choices {sorted(builder.unknown_choices)} on "
                             "keypoints ignored: the skeleton names no occlusion_choice")
        for kind, count in sorted(self._ignored_types.items()):
            self.report.warn(f"{self.source}: ignored {count} result(s) of type {kind!r}")
        return Dataset(skeleton=skeleton, images=images, report=self.report)


def _check_tasks(tasks: Any, source: object) -> list[Any]:
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]  # a single task
    if not isinstance(tasks, list):
        raise FdposeError("expected a Label Studio JSON export (a list of tasks)", path=source)
    if not tasks:
        raise FdposeError("the export holds no tasks", path=source)
    return tasks


def read_labelstudio_export(export_json: Path, images_root: Path, *, label_config: Path | None = None,
                            skeleton: Skeleton | None = None, annotation: str = "latest",
                            strict: bool = False, progress: bool = False) -> Dataset:
    """Read a Label Studio JSON export with its images under ``images_root`` into the hub.

    ``label_config`` is the project's label config XML (for ``model_index``); ``skeleton`` a
    :class:`Skeleton` (for order, classes and ``occlusion_choice``). See the module docstring for
    every rule. Raises :class:`FdposeError` for an unusable input (unreadable or invalid JSON,
    invalid config, a config and skeleton that disagree). ``progress`` shows a bar over the tasks."""
    export_json = Path(export_json)
    tasks = read_json(export_json, "export file")
    config = None
    if label_config is not None:
        label_config = Path(label_config)
        try:
            config_text = label_config.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise FdposeError(f"unreadable label config ({error})", path=label_config) from None
        config = parse_label_config(config_text, label_config)
    tasks = _check_tasks(tasks, export_json)
    return _Reader(tasks, str(export_json), FolderImages(Path(images_root)), config, skeleton,
                   annotation, strict, progress).read()


def read_labelstudio_live(url: str, project_id: int, out_images_dir: Path, *,
                          skeleton: Skeleton | None = None, annotation: str = "latest",
                          strict: bool = False, progress: bool = False) -> Dataset:
    """Pull a project's JSON export and label config from a Label Studio server and read it like a
    file export; images served by the server are downloaded (with the key, with timeouts) into
    ``out_images_dir``. The key comes from ``LABEL_STUDIO_API_KEY`` only and is never written."""
    client = sdk_client(url)
    source = f"{url.rstrip('/')}/projects/{project_id}"
    config = parse_label_config(project_label_config(client, url, project_id), f"{source} label config")
    tasks = _check_tasks(parse_json(export_snapshot(client, url, project_id), source), source)
    # Downloads follow the environment's proxy settings, as the SDK's API calls do.
    fetcher = ImageFetcher(url, api_key(url), trust_env=True)
    try:
        images = ServerImages(fetcher, Path(out_images_dir))
        return _Reader(tasks, source, images, config, skeleton, annotation, strict, progress).read()
    finally:
        fetcher.close()
