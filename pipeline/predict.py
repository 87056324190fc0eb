"""``fdpose predict``: run a packaged (or plain ultralytics) pose model on images, folders and videos.

The model is loaded by :func:`pipeline.model_io.load_runner` (a package directory or ``.zip``,
``model.safetensors``, ``model.onnx``, ``model.xml`` (OpenVINO) or a ``.pt``; ``--backend`` picks a
package's format) and run through :mod:`pipeline.inference`, the path every model form shares.

Outputs in ``--out``: ``predictions.json`` (COCO results: ``image_id``, 1-based ``category_id``,
``bbox`` as x, y, w, h, ``score``, ``keypoints`` as x, y, confidence triples), ``images.json`` (the COCO
``images`` and ``categories`` those ids refer to, video frames included) and ``drawn/`` (every image or
frame with boxes, keypoints and skeleton edges drawn with OpenCV primitives; no fonts are loaded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.config import PARAMS_FILE, PredictParams, load_section, overridden
from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.formats.coco_results import coco_categories, coco_result
from pipeline.images import IMAGE_SUFFIXES
from pipeline.inference import ModelMeta, Runner, input_size, run_image
from pipeline.io import atomic_dir
from pipeline.model_io import BACKENDS, load_runner, model_version
from pipeline.video.videoio import VIDEO_SUFFIXES

# --- drawing -------------------------------------------------------------------------------------


def draw(image: np.ndarray, detections: list[Instance], meta: ModelMeta,
         kpt_conf: float = 0.5) -> np.ndarray:
    """Boxes, skeleton edges and keypoints (those at least ``kpt_conf`` confident) drawn on a copy of
    ``image`` with OpenCV primitives."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for det in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in det.bbox)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 128, 0), thickness)
        label = f"{meta.skeleton.class_names[det.class_id]} {det.score:.2f}"
        cv2.putText(canvas, label, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness,
                    (255, 128, 0), max(1, thickness - 1), cv2.LINE_AA)
        visible = det.keypoints[:, 2] >= kpt_conf
        points = [(int(round(x)), int(round(y))) for x, y in det.keypoints[:, :2]]
        for a, b in meta.skeleton.edges:
            if visible[a] and visible[b]:
                cv2.line(canvas, points[a], points[b], (0, 200, 255), thickness, cv2.LINE_AA)
        for index, point in enumerate(points):
            if visible[index]:
                cv2.circle(canvas, point, thickness + 2, (0, 0, 255), -1, cv2.LINE_AA)
    return canvas


# --- sources -------------------------------------------------------------------------------------


@dataclass
class Frame:
    """One image to predict on: from an image file, or frame ``frame_index`` of a video."""

    file_name: str  # relative to the source (its name for a single file)
    image: np.ndarray | None  # None when the file could not be decoded
    frame_index: int | None = None


def iter_frames(source: Path) -> Iterator[Frame]:
    """Frames of an image, a video or every image/video in a folder (recursively, sorted)."""
    import cv2

    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if not files:
            raise FdposeError("no images or videos in the folder", path=source)
        base = source
    elif source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise FdposeError(f"unsupported file type '{source.suffix}' (images: "
                              f"{sorted(IMAGE_SUFFIXES)}, videos: {sorted(VIDEO_SUFFIXES)})", path=source)
        files, base = [source], source.parent
    else:
        raise FdposeError("source not found", path=source)
    for path in files:
        name = path.relative_to(base).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield Frame(name, cv2.imread(str(path), cv2.IMREAD_COLOR))
            continue
        capture = cv2.VideoCapture(str(path))
        index = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                yield Frame(name, image, index)
                index += 1
        finally:
            capture.release()
        if index == 0:
            yield Frame(name, None, None)


# --- the stage -----------------------------------------------------------------------------------


@dataclass
class PredictResult:
    """What ``predict`` wrote and counted."""

    out: Path
    model_kind: str
    images: int
    detections: int
    skipped: list[str]
    uploaded: int | None = None

    def summary(self) -> str:
        line = (f"{self.images} images/frames, {self.detections} detections ({self.model_kind}) -> "
                f"{self.out}")
        if self.skipped:
            line += f"; skipped {len(self.skipped)} unreadable: {', '.join(self.skipped)}"
        if self.uploaded is not None:
            line += f"; uploaded {self.uploaded} predictions to Label Studio"
        return line


def predict(model: str | Path, source: str | Path, out: str | Path, params: PredictParams, *,
            imgsz: int | None = None, backend: str = "auto", to_label_studio: str | None = None,
            project: int | None = None) -> PredictResult:
    """Predict poses on ``source`` (image, video or folder); write drawn images and COCO results to ``out``.

    ``params`` holds the thresholds (``package.predict`` in the params file); ``imgsz`` defaults to the
    model's recorded size (an ONNX or OpenVINO model only runs at its exported size). With
    ``to_label_studio`` and ``project``, the predictions are also uploaded as Label Studio
    pre-annotations (keypoints at least ``params.kpt_conf`` confident, as drawn)."""
    settings: dict[str, Any] = {"conf": float(params.conf), "iou": float(params.iou),
                                "max_det": int(params.max_det), "kpt_conf": float(params.kpt_conf)}
    if (to_label_studio is None) != (project is None):
        raise FdposeError("--to-label-studio and --project go together", item="options")
    runner = load_runner(model, backend)
    settings["imgsz"] = input_size(runner, imgsz, model)
    source = Path(source)
    uploads: list[tuple[Frame, list[Instance]]] = []  # still images only: Label Studio tasks show images
    with atomic_dir(out) as tmp:
        images, results, skipped = _predict_frames(runner, source, tmp, settings, uploads,
                                                   upload=to_label_studio is not None)
        _write_json(tmp / "predictions.json", results)
        _write_json(tmp / "images.json", {"images": images,
                                          "categories": coco_categories(runner.meta.skeleton),
                                          "skipped": skipped, "source": str(source), "model": str(model),
                                          "settings": {**settings, "backend": runner.kind}})
        os.chmod(tmp, 0o755)
    result = PredictResult(Path(out), runner.kind, len(images), len(results), skipped)
    if to_label_studio is not None:
        version = model_version(model, runner.kind)
        result.uploaded = upload_to_label_studio(uploads, images, runner.meta, to_label_studio, int(project),
                                                 settings["kpt_conf"], version)
    return result


def _predict_frames(runner: Runner, source: Path, tmp: Path, settings: dict[str, Any],
                    uploads: list[tuple[Frame, list[Instance]]], upload: bool,
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Run every frame of ``source``, drawing each into ``tmp/drawn``; returns the COCO images, the COCO
    results and the unreadable files. Still images' detections go to ``uploads`` when ``upload``."""
    import cv2

    images: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    for frame in iter_frames(source):
        if frame.image is None:
            skipped.append(frame.file_name)
            continue
        image_id = len(images) + 1
        record: dict[str, Any] = {"id": image_id, "file_name": frame.file_name,
                                  "height": int(frame.image.shape[0]), "width": int(frame.image.shape[1])}
        drawn_name = frame.file_name
        if frame.frame_index is not None:
            record["frame_index"] = frame.frame_index
            drawn_name = f"{Path(frame.file_name).with_suffix('').as_posix()}/{frame.frame_index:06d}.jpg"
        record["drawn"] = f"drawn/{drawn_name}"
        images.append(record)
        detections = run_image(runner, frame.image, settings["imgsz"], settings["conf"], settings["iou"],
                               settings["max_det"])
        results.extend(coco_result(det, image_id) for det in detections)
        if upload and frame.frame_index is None:
            uploads.append((Frame(frame.file_name, None), detections))
        target = tmp / record["drawn"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), draw(frame.image, detections, runner.meta, settings["kpt_conf"])):
            raise FdposeError("could not write the drawn image", path=target)
    if not images:
        raise FdposeError(f"no readable image or video frame (unreadable: {', '.join(skipped)})", path=source)
    return images, results, skipped


def upload_to_label_studio(uploads: list[tuple[Frame, list[Instance]]], images: list[dict[str, Any]],
                           meta: ModelMeta, url: str, project: int, kpt_conf: float,
                           model_version: str) -> int:
    """Upload still-image predictions as Label Studio pre-annotations; returns how many were created.

    Keypoints at least ``kpt_conf`` confident become labelled points (v=2), the
    others are left out, as in the drawings; the image's prediction score is
    :func:`pipeline.uncertainty.task_score` (what ``fdpose serve`` sends: sort ascending to label first
    what the model is least sure of).
    Images matching no task (or several) are skipped by the uploader and listed on stderr.
    """
    from pipeline.dataset import ImageRecord, Report
    from pipeline.labelstudio.predictions import upload_predictions
    from pipeline.uncertainty import task_score

    if not uploads:
        raise FdposeError("nothing to upload: Label Studio tasks show images, and the source had none",
                          path=url)
    sizes = {record["file_name"]: (record["width"], record["height"]) for record in images}
    records, scores = [], []
    for frame, detections in uploads:
        width, height = sizes[frame.file_name]
        instances = []
        for det in detections:
            keypoints = det.keypoints.copy()
            keypoints[:, 2] = np.where(keypoints[:, 2] >= kpt_conf, 2, 0)
            instances.append(Instance(det.class_id, det.bbox.copy(), keypoints))
        records.append(ImageRecord(path=Path(frame.file_name), file_name=frame.file_name, width=width,
                                   height=height, instances=instances))
        scores.append(task_score(detections))
    report = Report()
    created = upload_predictions(url, project, records, model_version=model_version, skeleton=meta.skeleton,
                                 scores=scores, report=report)
    for item in report.items:
        click.echo(f"label studio: {item.action} {item.file}: {item.item}: {item.reason}", err=True)
    return created


def predict_tracked(model: Path, source: Path, out: Path, params: PredictParams, *, tracker: str,
                    smooth: bool, backend: str, imgsz: int | None) -> str:
    """``--track``: poses linked into tracks and smoothed per track (:mod:`pipeline.video.analyse`)."""
    from pipeline.video.analyse import TrackSettings, check_sources, predict_tracks
    from pipeline.video.smooth import SmoothParams

    sources = check_sources(source)  # unusable videos fail before the model loads
    runner = load_runner(model, backend)
    smoothing = SmoothParams(kpt_conf=params.kpt_conf) if smooth else None
    settings = TrackSettings(input_size(runner, imgsz, model), params.conf, params.iou, params.max_det,
                             params.kpt_conf, tracker, smoothing)
    return predict_tracks(runner, sources, out, settings, model,
                          coco_categories(runner.meta.skeleton)).summary()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@click.command("predict")
@click.option("--model", "model", required=True, type=click.Path(path_type=Path),
              help="Package directory or .zip (runs model.safetensors), model.safetensors, model.onnx, "
                   "model.xml (OpenVINO) or a .pt.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/predict"), show_default=True,
              help="Output folder: predictions.json, images.json, drawn/.")
@click.option("--conf", type=float, default=None, help="Confidence threshold (params: package.predict.conf).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (params: package.predict.iou).")
@click.option("--imgsz", type=int, default=None, help="Input size (default: the model's; fixed for ONNX).")
@click.option("--max-det", type=int, default=None, help="Most detections per image.")
@click.option("--kpt-conf", type=float, default=None,
              help="Keypoints at least this confident are drawn and uploaded (params: package.predict).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="For a package: 'auto' and 'torch' run model.safetensors in PyTorch, 'onnx' model.onnx "
                   "under onnxruntime, 'openvino' model.xml under OpenVINO (fdpose[openvino]).")
@click.option("--to-label-studio", "to_label_studio", metavar="URL", default=None,
              help="Upload predictions to this Label Studio server (key: LABEL_STUDIO_API_KEY).")
@click.option("--project", type=int, default=None, help="Label Studio project id for --to-label-studio.")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Parameters file (section package.predict).")
@click.option("--track", is_flag=True,
              help="Videos: link poses into tracks, smooth keypoints per track (One Euro); writes tracks.csv/"
                   ".parquet, COCO results with track_id and drawn/*.mp4 (pipeline.video.analyse).")
@click.option("--tracker", default="bytetrack", show_default=True,
              help="With --track: bytetrack, botsort, ocsort (ultralytics' trackers) or a tracker YAML.")
@click.option("--smooth/--no-smooth", default=True, show_default=True, help="With --track: smooth keypoints.")
def predict_command(model: Path, source: Path, out: Path, conf: float | None, iou: float | None,
                    imgsz: int | None, max_det: int | None, kpt_conf: float | None, backend: str,
                    to_label_studio: str | None, project: int | None, params_path: Path, track: bool,
                    tracker: str, smooth: bool) -> None:
    """Run a model on an image, a folder or a video: drawn images and COCO results in --out."""
    params = overridden(load_section("package", params_path).predict, None, conf=conf, iou=iou,
                        max_det=max_det, kpt_conf=kpt_conf)
    if track:
        if to_label_studio is not None:
            raise FdposeError("--to-label-studio uploads still images; for video frames use fdpose outliers "
                              "or fdpose frames", item="--track")
        click.echo(predict_tracked(model, source, out, params, tracker=tracker, smooth=smooth,
                                   backend=backend, imgsz=imgsz))
        return
    result = predict(model, source, out, params, imgsz=imgsz, backend=backend,
                     to_label_studio=to_label_studio, project=project)
    click.echo(result.summary())
