"""``fdpose eval``: OKS mAP by the COCO protocol, per-keypoint accuracy, and a report.

The score is measured on the path that ships: :func:`predict_coco` runs any model form (a ``.pt``
checkpoint, a package folder or zip, ``model.onnx``, the OpenVINO ``model.xml``) through the runners of
:func:`pipeline.model_io.load_runner` and the letterbox, decoding and NMS of :mod:`pipeline.inference`,
exactly as ``fdpose predict`` and ``fdpose serve`` do, and writes COCO results with the one writer
(:mod:`pipeline.formats.coco_results`). :func:`pipeline.metrics.score_predictions` scores them against
the split's ground truth (the protocol is stated there). :func:`cross_check` runs ultralytics' own val
on the same weights and images and fails the evaluation when the two OKS mAPs disagree by more than
``eval.crosscheck_tolerance``; :func:`evaluate` writes the files and the report (:mod:`pipeline.report`).
:func:`score_artifact` is the plain "OKS mAP of this file on this split" for other stages.
"""

from __future__ import annotations

import copy
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import click

from pipeline import report
from pipeline.config import PARAMS_FILE, EvalParams, as_dict, load_section, overridden
from pipeline.dataset import Dataset, ImageRecord
from pipeline.errors import FdposeError
from pipeline.formats.coco_results import coco_result
from pipeline.formats.yolo import read_yolo, write_yolo
from pipeline.inference import Runner, input_size, run_image
from pipeline.io import atomic_dir, write_json
from pipeline.metrics import EvalResult, ModelEvaluation, data_fingerprint, ground_truth
from pipeline.model_io import Layout, check_fits, load_runner, load_yolo, weights_sha256


def _split_images(dataset: Dataset, split: str, data_yaml: Path) -> list[ImageRecord]:
    images = dataset.splits().get(split, [])
    if not images:
        raise FdposeError(f"split '{split}' has no images", path=data_yaml)
    return images


# --- the model part: any artifact in, COCO results out ------------------------------------------


def torch_device(device: str | int) -> str:
    """The torch device for ``device`` (``cpu``, ``0``, ``0,1`` ...) as ultralytics selects it; a device this
    machine does not have (e.g. ``0`` without CUDA) is one line."""
    from ultralytics.utils.torch_utils import select_device

    try:
        return str(select_device(str(device), verbose=False))
    except ValueError as error:
        raise FdposeError(str(error).splitlines()[0], item="--device") from None


def predict_coco(runner: Runner, images: list[ImageRecord], gt: dict, params: EvalParams, imgsz: int,
                 ) -> list[dict]:
    """Run ``runner`` on each image through fdpose's own letterbox, decoding and NMS (batch 1, so the
    result of an image never depends on its neighbours), as ``predict`` and ``serve`` do, and return COCO
    results (:func:`pipeline.formats.coco_results.coco_result`)."""
    import cv2

    image_ids = {image["file_name"]: image["id"] for image in gt["images"]}
    results: list[dict] = []
    for image in images:
        pixels = cv2.imread(str(image.path), cv2.IMREAD_COLOR)  # EXIF orientation applied, as by the labels
        if pixels is None:
            raise FdposeError("unreadable image", path=image.path)
        if pixels.shape[:2] != (image.height, image.width):
            # Predictions and labels must share one pixel frame.
            raise FdposeError(f"OpenCV reads it as {pixels.shape[1]}x{pixels.shape[0]}, the labels as "
                              f"{image.width}x{image.height}", path=image.path)
        instances = run_image(runner, pixels, imgsz, params.conf, params.iou, params.max_det)
        results.extend(coco_result(instance, image_ids[image.file_name]) for instance in instances)
    return results


def checkpoint_beside(weights: Path, tmp: Path) -> Path | None:
    """The ultralytics checkpoint holding the same weights as ``weights``: itself for a ``.pt``, a
    package's ``model.pt`` (beside its ``model.onnx``, ``model.xml`` or ``model.safetensors``, in its
    folder, or extracted from its ``.zip`` into ``tmp``); None when there is none."""
    if weights.suffix == ".pt":
        return weights
    if weights.suffix == ".zip":
        with zipfile.ZipFile(weights) as archive:
            members = [name for name in archive.namelist() if name.count("/") == 1
                       and name.endswith("/model.pt")]
            if not members:
                return None
            target = tmp / "model.pt"
            target.write_bytes(archive.read(members[0]))
            return target
    candidate = (weights if weights.is_dir() else weights.parent) / "model.pt"
    return candidate if candidate.is_file() else None


def ultralytics_val(checkpoint: Path, dataset: Dataset, images: list[ImageRecord], params: EvalParams,
                    imgsz: int, tmp: Path) -> dict[str, float]:
    """ultralytics' own validation numbers of ``checkpoint`` on the same images, for comparison.

    It runs on a temporary copy of the split (images hard-linked) declared as ``val`` with
    ``kpt_oks_sigmas`` set to our sigmas, so it neither writes its label cache into the dataset nor
    uses different sigmas; its letterbox (padded rectangles), matching and AP interpolation are its own.
    """
    from ultralytics.utils import LOGGER

    model = load_yolo(checkpoint)
    subset = Dataset(dataset.skeleton, [copy.copy(image) for image in images])
    for image in subset.images:
        image.split = "val"
    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # its progress table would bury fdpose's own summary
    try:
        data_yaml = write_yolo(subset, tmp / "data", extra={"kpt_oks_sigmas": dataset.skeleton.sigmas})
        metrics = model.val(data=str(data_yaml), split="val", imgsz=imgsz, conf=params.conf, iou=params.iou,
                            max_det=params.max_det, device=params.device, batch=1, workers=0, plots=False,
                            save_json=False, verbose=False, project=str(tmp / "runs"), name="val",
                            exist_ok=True)
    finally:
        LOGGER.setLevel(level)
    return {
        "pose_map": float(metrics.pose.map),
        "pose_map50": float(metrics.pose.map50),
        "box_map": float(metrics.box.map),
        "box_map50": float(metrics.box.map50),
    }


def cross_check(evaluation: ModelEvaluation, result: EvalResult, params: EvalParams) -> None:
    """Run ultralytics' val on the checkpoint behind ``evaluation``'s weights and record whether its pose
    mAP agrees with fdpose's OKS mAP within ``params.crosscheck_tolerance`` (``evaluation.crosscheck``).

    The two can differ a little for sound reasons (ultralytics letterboxes to padded rectangles instead
    of squares, keeps every detection instead of COCO's top 20, matches and interpolates its own way);
    a larger gap means one of the two pipelines reads, decodes or scores the model wrongly. Measured on a
    generated set with a model trained 20 epochs at 64 px: 0.0001 on square images (both letterbox
    alike), 0.002 to 0.046 on nine sets of 20 non-square images (96x48, 48x80, 128x64; fdpose higher each
    time), hence the default tolerance 0.1. Without a checkpoint (an ONNX or OpenVINO file outside its
    package) the check is skipped, with the reason."""
    ours = evaluation.scores.metrics["oks_map"] or 0.0
    record: dict[str, Any] = {"tolerance": params.crosscheck_tolerance, "fdpose_oks_map": ours}
    with tempfile.TemporaryDirectory(prefix="fdpose-eval-") as tmp:
        checkpoint = checkpoint_beside(evaluation.weights, Path(tmp))
        if checkpoint is None:
            reason = f"no ultralytics checkpoint (model.pt) with {evaluation.weights}"
            evaluation.crosscheck = {**record, "status": "skipped", "reason": reason}
            return
        evaluation.ultralytics = ultralytics_val(checkpoint, result.dataset, result.images, params,
                                                 evaluation.imgsz, Path(tmp))
    theirs = evaluation.ultralytics["pose_map"]
    difference = abs(ours - theirs)
    evaluation.crosscheck = {**record, "ultralytics_pose_map": theirs, "difference": difference,
                             "checkpoint": checkpoint.name,
                             "status": "agrees" if difference <= params.crosscheck_tolerance else "disagrees"}


def _disagreement(evaluation: ModelEvaluation, images: int) -> FdposeError:
    check = evaluation.crosscheck
    return FdposeError(
        f"OKS mAP {check['fdpose_oks_map']:.4f} (fdpose, {evaluation.kind}) and ultralytics val pose mAP "
        f"{check['ultralytics_pose_map']:.4f} differ by {check['difference']:.4f} on the same {images} "
        f"images, more than eval.crosscheck_tolerance {check['tolerance']:g}", path=evaluation.weights)


# --- the command ---------------------------------------------------------------------------------


def _counts(gt: dict) -> dict[str, int]:
    annotations = gt["annotations"]
    return {
        "num_images": len(gt["images"]),
        "num_instances": len(annotations),
        "num_labelled_instances": sum(1 for a in annotations if a.get("num_keypoints", 0) > 0),
        "num_labelled_keypoints": sum(int(a.get("num_keypoints", 0)) for a in annotations),
    }


def prepare(data: str | Path, out: str | Path, params: EvalParams) -> EvalResult:
    """Read the dataset, take the split's ground truth, counts and fingerprint; no model involved."""
    data_yaml = Path(data)
    dataset = read_yolo(data_yaml)
    images = _split_images(dataset, params.split, data_yaml)
    gt = ground_truth(dataset, params.split)
    skeleton = dataset.skeleton
    return EvalResult(
        out=Path(out), data_yaml=data_yaml, split=params.split, settings=as_dict(params),
        dataset=dataset, images=images, gt=gt, counts=_counts(gt), data_fingerprint=data_fingerprint(images),
        keypoint_names=list(skeleton.keypoint_names), class_names=list(skeleton.class_names),
        sigmas=list(skeleton.sigmas), edges=list(skeleton.edges),
    )


def load_models(result: EvalResult, models: list[tuple[str, Path]], device: str,
                ) -> list[tuple[str, Path, Runner]]:
    """A runner per ``(label, weights)``, each checked to fit the dataset before any predicts, so a
    mismatched baseline fails fast."""
    data_layout = Layout.of_skeleton(result.dataset.skeleton)
    loaded = []
    for label, path in models:
        runner = load_runner(path, device=device)
        check_fits(Layout.of_skeleton(runner.meta.skeleton), data_layout, role=label, model_path=path,
                   data_path=result.data_yaml)
        loaded.append((label, path, runner))
    return loaded


def score_model(result: EvalResult, label: str, weights: Path, runner: Runner, params: EvalParams,
                ) -> ModelEvaluation:
    """Predict the split with ``runner`` at the size its metadata records (unless ``params.imgsz``) and
    score it into ``result``."""
    imgsz = input_size(runner, params.imgsz, weights)
    predictions = predict_coco(runner, result.images, result.gt, params, imgsz)
    return result.add_model(label, weights, predictions, kind=runner.kind, imgsz=imgsz,
                            fingerprint=weights_sha256(weights, runner.kind))


def score_artifact(weights: str | Path, data: str | Path, params: EvalParams) -> dict[str, Any]:
    """The COCO metrics (``oks_map``, ``oks_map50``, ..., ``box_map``) of any artifact (a ``.pt``, a
    package folder or zip, ``model.onnx``, ``model.xml``) on ``params.split`` of the YOLO-pose dataset
    ``data``, predicted through the runner that ships it; nothing is written and no cross-check runs."""
    result = prepare(data, Path(), params)
    [(label, path, runner)] = load_models(result, [("model", Path(weights))], torch_device(params.device))
    return dict(score_model(result, label, path, runner, params).scores.metrics)


def evaluate(weights: str | Path, data: str | Path, out: str | Path, params: EvalParams, *,
             baseline: str | Path | None = None) -> EvalResult:
    """Evaluate ``weights`` (and ``baseline``): any artifact :func:`pipeline.model_io.load_runner` runs,
    on ``params.split`` of the YOLO-pose dataset ``data``; write ground_truth.json, predictions.json,
    metrics.json, plots/ and the report into ``out``.

    Each model is cross-checked against ultralytics' own val (:func:`cross_check`); a disagreement is one
    :class:`FdposeError` and nothing is written. ``out`` is replaced atomically: a failure leaves the
    previous evaluation in place.
    """
    result = prepare(data, out, params)
    models = [("model", Path(weights))] + ([("baseline", Path(baseline))] if baseline is not None else [])
    for label, path, runner in load_models(result, models, torch_device(params.device)):
        evaluation = score_model(result, label, path, runner, params)
        cross_check(evaluation, result, params)
        if evaluation.crosscheck["status"] == "disagrees":
            raise _disagreement(evaluation, len(result.images))
    result.settings["imgsz"] = result.model.imgsz
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
@click.option("--weights", required=True, type=click.Path(path_type=Path),
              help="The model to evaluate: a checkpoint (.pt), a package folder or .zip (runs "
                   "model.safetensors), model.onnx or model.xml (OpenVINO).")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YOLO-pose data.yaml.")
@click.option("--split", default=None, help="Split to evaluate on (default: params, else val).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (replaced atomically).")
@click.option("--baseline", default=None, type=click.Path(path_type=Path),
              help="A second model (e.g. stock YOLOv8-pose), in any form --weights takes, evaluated "
                   "side by side.")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default 0.001).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (default 0.7).")
@click.option("--imgsz", type=int, default=None,
              help="Inference image size (default: the size the model records; fixed for ONNX/OpenVINO).")
@click.option("--device", default=None, help="cpu, 0, 0,1 ... (default cpu).")
@click.option("--crosscheck-tolerance", type=float, default=None,
              help="Fail when fdpose's OKS mAP and ultralytics' val pose mAP (run on the .pt, or a "
                   "package's model.pt) differ by more (default 0.1: they letterbox non-square images "
                   "differently; measured gaps up to 0.046).")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (section eval).")
def eval_command(weights: Path, data: Path, split: str | None, out: Path, baseline: Path | None,
                 conf: float | None, iou: float | None, imgsz: int | None, device: str | None,
                 crosscheck_tolerance: float | None, params_path: Path) -> None:
    """OKS mAP by the COCO protocol on a split, through the inference path predict and serve use, with
    ultralytics' val as a cross-check and an HTML and Markdown report."""
    params = overridden(load_section("eval", params_path), None, split=split, conf=conf, iou=iou,
                        imgsz=imgsz, device=device, crosscheck_tolerance=crosscheck_tolerance)
    result = evaluate(weights, data, out, params, baseline=baseline)
    click.echo(result.summary())
