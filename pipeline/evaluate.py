"""``fdpose eval``: OKS mAP by the COCO protocol, per-keypoint accuracy, and a report.

:func:`predict_coco` runs an ultralytics pose checkpoint (ours with ``C2f_FDConv`` or a stock one)
image by image through ultralytics' predictor and turns its output into COCO results;
:func:`pipeline.metrics.score_predictions` scores them against the split's ground truth (the protocol
is stated there); :func:`evaluate` ties both together, adds ultralytics' own validation numbers for
comparison and writes the files and the report (:mod:`pipeline.report`).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline import report
from pipeline.config import PARAMS_FILE, apply_overrides, as_dict, load_section, validate_section
from pipeline.dataset import Dataset, ImageRecord
from pipeline.errors import FdposeError
from pipeline.formats.yolo import read_yolo, write_yolo
from pipeline.io import atomic_dir, write_json
from pipeline.metrics import EvalResult, data_fingerprint, ground_truth
from pipeline.model_io import Layout, check_fits, load_yolo


def _split_images(dataset: Dataset, split: str, data_yaml: Path) -> list[ImageRecord]:
    images = dataset.splits().get(split, [])
    if not images:
        raise FdposeError(f"split '{split}' has no images", path=data_yaml)
    return images


# --- the model part: ultralytics in, COCO results out -------------------------------------------


def check_device(device: str | int) -> None:
    """Refuse a device this machine does not have (e.g. ``0`` without CUDA) with one line."""
    from ultralytics.utils.torch_utils import select_device

    try:
        select_device(str(device), verbose=False)
    except ValueError as error:
        raise FdposeError(str(error).splitlines()[0], item="--device") from None


def predict_coco(model, images: list[ImageRecord], gt: dict, settings: dict[str, Any]) -> list[dict]:
    """Run the model on each image (batch 1, so the result of an image never depends on its
    neighbours) and return COCO results: boxes ``x, y, w, h``, keypoints ``x, y, score`` in pixels.

    Values are rounded (4 decimals for pixels, 6 for scores) so the written file is stable across
    runs instead of carrying float noise.
    """
    image_ids = {image["file_name"]: image["id"] for image in gt["images"]}
    category_ids = [c["id"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    results: list[dict] = []
    for image in images:
        output = model.predict(str(image.path), conf=settings["conf"], iou=settings["iou"],
                               imgsz=settings["imgsz"], max_det=settings["max_det"],
                               device=settings["device"], verbose=False, save=False)[0]
        if tuple(output.orig_shape) != (image.height, image.width):
            # Predictions and labels must share one pixel frame (EXIF orientation applied by both).
            height, width = output.orig_shape
            raise FdposeError(f"ultralytics reads it as {width}x{height}, the labels as {image.width}x"
                              f"{image.height}", path=image.path)
        boxes = output.boxes.xyxy.cpu().numpy().astype(np.float64)
        scores = output.boxes.conf.cpu().numpy().astype(np.float64)
        classes = output.boxes.cls.cpu().numpy().astype(int)
        points = output.keypoints.data.cpu().numpy().astype(np.float64)
        if points.shape[-1] == 2:  # a 2-D keypoint model gives no keypoint scores; COCO's slot gets 1
            points = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
        for box, score, cls, kpts in zip(boxes, scores, classes, points, strict=True):
            x0, y0, x1, y1 = box
            results.append({
                "image_id": image_ids[image.file_name],
                "category_id": category_ids[cls],
                "bbox": [round(float(v), 4) for v in (x0, y0, x1 - x0, y1 - y0)],
                "keypoints": [round(float(v), 4) if i % 3 < 2 else round(float(v), 6)
                              for i, v in enumerate(kpts.reshape(-1))],
                "score": round(float(score), 6),
            })
    return results


def ultralytics_val(model, dataset: Dataset, images: list[ImageRecord], settings: dict[str, Any],
                    ) -> dict[str, float]:
    """ultralytics' own validation numbers on the same images, for comparison.

    It runs on a temporary copy of the split (images hard-linked) declared as ``val`` with
    ``kpt_oks_sigmas`` set to our sigmas, so it neither writes its label cache into the dataset nor
    uses different sigmas; its matching and AP interpolation are its own.
    """
    from ultralytics.utils import LOGGER

    subset = Dataset(dataset.skeleton, [copy.copy(image) for image in images])
    for image in subset.images:
        image.split = "val"
    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # its progress table would bury fdpose's own summary
    try:
        with tempfile.TemporaryDirectory(prefix="fdpose-eval-") as tmp:
            data_yaml = write_yolo(subset, Path(tmp) / "data",
                                   extra={"kpt_oks_sigmas": dataset.skeleton.sigmas})
            metrics = model.val(data=str(data_yaml), split="val", imgsz=settings["imgsz"],
                                conf=settings["conf"], iou=settings["iou"], max_det=settings["max_det"],
                                device=settings["device"],
                                batch=1, workers=0, plots=False, save_json=False, verbose=False,
                                project=str(Path(tmp) / "runs"), name="val", exist_ok=True)
    finally:
        LOGGER.setLevel(level)
    return {
        "pose_map": float(metrics.pose.map),
        "pose_map50": float(metrics.pose.map50),
        "box_map": float(metrics.box.map),
        "box_map50": float(metrics.box.map50),
    }


# --- the command ---------------------------------------------------------------------------------


def _counts(gt: dict) -> dict[str, int]:
    annotations = gt["annotations"]
    return {
        "num_images": len(gt["images"]),
        "num_instances": len(annotations),
        "num_labelled_instances": sum(1 for a in annotations if a.get("num_keypoints", 0) > 0),
        "num_labelled_keypoints": sum(int(a.get("num_keypoints", 0)) for a in annotations),
    }


def resolve_settings(params: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``eval`` section's defaults (:mod:`pipeline.config`), then ``params`` (the section as a params
    file holds it), then the ``overrides`` that are not None; an unknown key or a value of the wrong kind
    is one error naming ``eval.<key>``."""
    settings = as_dict(validate_section("eval", apply_overrides(dict(params or {}), **overrides), None))
    settings["pck_thresholds"] = [float(t) for t in settings["pck_thresholds"]]
    return settings


def prepare(data: str | Path, out: str | Path, settings: dict[str, Any]) -> EvalResult:
    """Read the dataset, take the split's ground truth, counts and fingerprint; no model involved."""
    data_yaml = Path(data)
    dataset = read_yolo(data_yaml)
    images = _split_images(dataset, settings["split"], data_yaml)
    gt = ground_truth(dataset, settings["split"])
    skeleton = dataset.skeleton
    return EvalResult(
        out=Path(out), data_yaml=data_yaml, split=settings["split"], settings=settings,
        dataset=dataset, images=images, gt=gt, counts=_counts(gt), data_fingerprint=data_fingerprint(images),
        keypoint_names=list(skeleton.keypoint_names), class_names=list(skeleton.class_names),
        sigmas=list(skeleton.sigmas), edges=list(skeleton.edges),
    )


def evaluate(weights: str | Path, data: str | Path, out: str | Path, *, split: str | None = None,
             baseline: str | Path | None = None, params: dict[str, Any] | None = None,
             **overrides: Any) -> EvalResult:
    """Evaluate ``weights`` (and ``baseline``) on a split of the YOLO-pose dataset ``data`` and write
    ground_truth.json, predictions.json, metrics.json, plots/ and the report into ``out``.

    Settings: see :func:`resolve_settings` (``overrides``: ``conf``, ``iou``, ``imgsz``, ``device``, ...).
    ``out`` is replaced atomically: a failure leaves the previous evaluation in place.
    """
    settings = resolve_settings(params, split=split, **overrides)
    result = prepare(data, out, settings)
    # Load and check every model before predicting with any, so a mismatched baseline fails fast.
    models = [("model", Path(weights))] + ([("baseline", Path(baseline))] if baseline is not None else [])
    check_device(settings["device"])
    loaded = []
    data_layout = Layout.of_skeleton(result.dataset.skeleton)
    for label, path in models:
        model = load_yolo(path)
        check_fits(Layout.of_model(model.model), data_layout, role=label, model_path=path,
                   data_path=result.data_yaml)
        loaded.append((label, path, model))
    for label, path, model in loaded:
        predictions = predict_coco(model, result.images, result.gt, settings)
        result.add_model(label, path, predictions,
                         ultralytics_val(model, result.dataset, result.images, settings))
    write_outputs(result)
    return result


def write_outputs(result: EvalResult) -> None:
    """All files of an evaluation, built in a temporary sibling and renamed into ``result.out``."""
    with atomic_dir(result.out) as tmp:
        write_json(tmp / "ground_truth.json", result.gt)
        write_json(tmp / "predictions.json", result.model.predictions)
        if result.baseline is not None:
            write_json(tmp / "baseline" / "predictions.json", result.baseline.predictions)
        write_json(tmp / "metrics.json", result.metrics())
        report.write_plots_data(result, tmp / "plots")
        report.write_reports(result, tmp)


@click.command("eval")
@click.option("--weights", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model checkpoint (.pt) to evaluate.")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YOLO-pose data.yaml.")
@click.option("--split", default=None, help="Split to evaluate on (default: params, else val).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (replaced atomically).")
@click.option("--baseline", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="A second checkpoint (e.g. stock YOLOv8-pose) evaluated side by side.")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default 0.001).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (default 0.7).")
@click.option("--imgsz", type=int, default=None, help="Inference image size (default 640).")
@click.option("--device", default=None, help="cpu, 0, 0,1 ... (default cpu).")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (section eval).")
def eval_command(weights: Path, data: Path, split: str | None, out: Path, baseline: Path | None,
                 conf: float | None, iou: float | None, imgsz: int | None, device: str | None,
                 params_path: Path) -> None:
    """OKS mAP by the COCO protocol on a split, with an HTML and Markdown report."""
    result = evaluate(weights, data, out, split=split, baseline=baseline,
                      params=as_dict(load_section("eval", params_path)), conf=conf, iou=iou, imgsz=imgsz,
                      device=device)
    click.echo(result.summary())
