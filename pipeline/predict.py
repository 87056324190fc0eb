"""``fdpose predict``: run a packaged (or plain ultralytics) pose model on images, folders and videos.

One inference path serves every model form. A *runner* turns a letterboxed ``(1, 3, S, S)`` float
batch into the Pose head's raw inference output ``(1, 4 + nc + K * dims, N)`` (boxes as centre/size
in input pixels, class scores after sigmoid, keypoints decoded to input pixels): PyTorch for
``model.safetensors`` (rebuilt from ``model.yaml``, no unpickling) and ``.pt`` checkpoints, onnxruntime
for ``model.onnx``. :func:`decode` then applies the confidence threshold, class-aware NMS and the
letterbox undo the same way for all of them, so the ONNX and PyTorch forms can only differ by their
raw outputs, which packaging checks.

Outputs in ``--out``: ``predictions.json`` (COCO results: ``image_id``, 1-based ``category_id``,
``bbox`` as x, y, w, h, ``score``, ``keypoints`` as x, y, confidence triples), ``images.json`` (the COCO
``images`` and ``categories`` those ids refer to, video frames included) and ``drawn/`` (every image or
frame with boxes, keypoints and skeleton edges drawn with OpenCV primitives; no fonts are loaded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.config import load_params
from pipeline.errors import FdposeError
from pipeline.io import atomic_dir

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv"}
PAD_VALUE = 114  # ultralytics' letterbox grey, so our inputs match what the model saw in training
NMS_CLASS_OFFSET = 7680.0  # per-class box offset that makes one NMS pass class-aware (ultralytics' max_wh)
# kpt_conf 0.5 is ultralytics' drawing default: less confident keypoints are neither drawn nor uploaded.
DEFAULT_PREDICT = {"conf": 0.25, "iou": 0.7, "max_det": 300, "kpt_conf": 0.5}


# --- model metadata ------------------------------------------------------------------------------


@dataclass
class ModelMeta:
    """What inference needs besides the weights: classes, keypoint layout and the input size."""

    class_names: list[str]
    keypoint_names: list[str]
    kpt_shape: list[int]
    edges: list[list[int]] = field(default_factory=list)
    flip_idx: list[int] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)
    imgsz: int = 640
    stride: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "keypoint_names": list(self.keypoint_names),
            "kpt_shape": list(self.kpt_shape),
            "edges": [list(e) for e in self.edges],
            "flip_idx": list(self.flip_idx),
            "sigmas": list(self.sigmas),
            "imgsz": int(self.imgsz),
            "stride": int(self.stride),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: object) -> ModelMeta:
        try:
            meta = cls(
                class_names=[str(n) for n in data["class_names"]],
                keypoint_names=[str(n) for n in data["keypoint_names"]],
                kpt_shape=[int(v) for v in data["kpt_shape"]],
                edges=[[int(a), int(b)] for a, b in data.get("edges") or []],
                flip_idx=[int(i) for i in data.get("flip_idx") or []],
                sigmas=[float(s) for s in data.get("sigmas") or []],
                imgsz=int(data.get("imgsz", 640)),
                stride=int(data.get("stride", 32)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise FdposeError(f"malformed model metadata ({error!r})", path=source) from None
        if len(meta.kpt_shape) != 2 or meta.kpt_shape[0] != len(meta.keypoint_names):
            raise FdposeError(f"kpt_shape {meta.kpt_shape} does not match {len(meta.keypoint_names)} "
                              "keypoint names", path=source)
        return meta

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- runners: letterboxed batch in, raw Pose output out ------------------------------------------


class TorchRunner:
    """A PyTorch pose model in eval mode; returns the raw inference tensor as numpy."""

    def __init__(self, model: Any, meta: ModelMeta, kind: str):
        self.model = model.float().eval()
        self.meta = meta
        self.kind = kind
        self.fixed_imgsz: int | None = None  # convolutional: any multiple of the stride works

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = self.model(torch.from_numpy(batch))
        # In eval mode ultralytics heads return (decoded, raw feature dict); export mode returns decoded.
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.numpy()


class OnnxRunner:
    """An ONNX model under onnxruntime (CPU); the input size is fixed by the export."""

    def __init__(self, path: Path, meta: ModelMeta, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.fixed_imgsz = int(shape[2]) if isinstance(shape[2], int) else None
        self.meta = meta
        self.kind = "onnx"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def read_onnx_meta(path: Path) -> ModelMeta:
    """The :class:`ModelMeta` that packaging stores in the ONNX file's ``fdpose`` metadata property."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends for a corrupt file
        raise FdposeError(f"not a readable ONNX model ({error})", path=path) from None
    props = {p.key: p.value for p in model.metadata_props}
    if "fdpose" not in props:
        raise FdposeError("no 'fdpose' metadata (not exported by fdpose package)", path=path)
    return ModelMeta.from_dict(json.loads(props["fdpose"]), path)


def meta_from_ultralytics(model: Any, imgsz: int) -> ModelMeta:
    """Metadata from the attributes ultralytics' pose trainer sets on the model."""
    from pipeline.skeleton import Skeleton

    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    class_names = [str(names[i]) for i in sorted(names)]
    kpt_shape = [int(v) for v in model.kpt_shape]
    kpt_names = getattr(model, "kpt_names", None) or {}
    keypoint_names = list(kpt_names[sorted(kpt_names)[0]]) if kpt_names else [f"kp{i}" for i in
                                                                            range(kpt_shape[0])]
    skeleton = Skeleton(keypoint_names=keypoint_names, class_names=class_names, kpt_dims=kpt_shape[1],
                        sigmas=getattr(model, "kpt_oks_sigmas", None))
    return ModelMeta(class_names=class_names, keypoint_names=skeleton.keypoint_names, kpt_shape=kpt_shape,
                     edges=[list(e) for e in skeleton.edges], flip_idx=list(skeleton.flip_permutation),
                     sigmas=list(skeleton.sigmas), imgsz=imgsz, stride=int(max(model.stride)))


def load_runner(model_path: str | Path, backend: str = "auto", threads: int | None = None
                ) -> TorchRunner | OnnxRunner:
    """A runner for a package directory, ``model.safetensors``, ``model.onnx`` or an ultralytics ``.pt``.

    Package directories and ``.safetensors`` load without unpickling (``backend`` ``onnx`` picks the
    package's ONNX file instead). A ``.pt`` checkpoint is a pickle: only load checkpoints you trust.
    """
    from pipeline.package import load_packaged_model, read_model_yaml

    path = Path(model_path)
    if not path.exists():
        raise FdposeError("model not found", path=path)
    if path.is_dir() or path.suffix == ".safetensors":
        directory = path if path.is_dir() else path.parent
        if backend == "onnx":
            return OnnxRunner(directory / "model.onnx", read_onnx_meta(directory / "model.onnx"), threads)
        return TorchRunner(load_packaged_model(directory), read_model_yaml(directory), "safetensors")
    if path.suffix == ".onnx":
        return OnnxRunner(path, read_onnx_meta(path), threads)
    if path.suffix == ".pt":
        from pipeline.package import _checkpoint_model, load_checkpoint

        checkpoint = load_checkpoint(path)
        model = _checkpoint_model(checkpoint)
        imgsz = int((checkpoint.get("train_args") or {}).get("imgsz") or 640)
        return TorchRunner(model, meta_from_ultralytics(model, imgsz), "pt")
    raise FdposeError("expected a package directory, model.safetensors, model.onnx or a .pt checkpoint",
                      path=path)


# --- pre- and post-processing (shared by every runner) -------------------------------------------


@dataclass
class Letterbox:
    """How an image was fitted into the square model input: scale per axis and the padding added."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (BGR, HxWx3) to fit ``size`` x ``size`` keeping its aspect, pad with grey, centred.

    Returns the ``(1, 3, size, size)`` float32 RGB batch in [0, 1] and the transform to undo; the
    arithmetic follows ultralytics' ``LetterBox`` so models see what they saw in training.
    """
    import cv2

    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                               value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    batch = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    return batch, Letterbox(new_w / width, new_h / height, left, top, width, height)


@dataclass
class Detection:
    """One pose instance in original image pixels."""

    class_id: int
    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (K, 3) x, y, confidence (1.0 when the model has no visibility channel)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int) -> list[int]:
    """Greedy non-maximum suppression on xyxy boxes; indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def decode(raw: np.ndarray, meta: ModelMeta, transform: Letterbox, conf: float = 0.25, iou: float = 0.7,
           max_det: int = 300) -> list[Detection]:
    """Raw Pose output of one image ``(4 + nc + K * dims, N)`` to detections in original pixels."""
    nc = meta.num_classes
    k, dims = meta.kpt_shape
    if raw.ndim == 3:
        raw = raw[0]
    if raw.shape[0] != 4 + nc + k * dims:
        raise FdposeError(f"model output has {raw.shape[0]} channels, expected 4 + {nc} + {k}*{dims} "
                          "for its metadata", item="model output")
    scores_all = raw[4:4 + nc]
    class_ids = scores_all.argmax(0)
    scores = scores_all.max(0)
    candidates = np.flatnonzero(scores > conf)
    cx, cy, w, h = raw[:4, candidates]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float64)
    offsets = class_ids[candidates, None] * NMS_CLASS_OFFSET
    keep = nms(boxes + offsets, scores[candidates], iou, max_det)
    detections = []
    for index in keep:
        anchor = candidates[index]
        box = boxes[index].copy()
        box[[0, 2]] = np.clip((box[[0, 2]] - transform.pad_x) / transform.gain_x, 0, transform.width)
        box[[1, 3]] = np.clip((box[[1, 3]] - transform.pad_y) / transform.gain_y, 0, transform.height)
        points = raw[4 + nc:, anchor].reshape(k, dims).astype(np.float64)
        keypoints = np.ones((k, 3))
        keypoints[:, 0] = np.clip((points[:, 0] - transform.pad_x) / transform.gain_x, 0, transform.width)
        keypoints[:, 1] = np.clip((points[:, 1] - transform.pad_y) / transform.gain_y, 0, transform.height)
        if dims == 3:
            keypoints[:, 2] = points[:, 2]
        detections.append(Detection(int(class_ids[anchor]), float(scores[anchor]), box, keypoints))
    return detections


def run_image(runner: TorchRunner | OnnxRunner, image: np.ndarray, imgsz: int, conf: float, iou: float,
              max_det: int) -> list[Detection]:
    """Letterbox, run and decode one BGR image."""
    batch, transform = letterbox(image, imgsz)
    return decode(runner(batch), runner.meta, transform, conf, iou, max_det)


def draw(image: np.ndarray, detections: list[Detection], meta: ModelMeta,
         kpt_conf: float = 0.5) -> np.ndarray:
    """Boxes, skeleton edges and keypoints (those at least ``kpt_conf`` confident) drawn on a copy of
    ``image`` with OpenCV primitives."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for det in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 128, 0), thickness)
        label = f"{meta.class_names[det.class_id]} {det.score:.2f}"
        cv2.putText(canvas, label, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness,
                    (255, 128, 0), max(1, thickness - 1), cv2.LINE_AA)
        visible = det.keypoints[:, 2] >= kpt_conf
        points = [(int(round(x)), int(round(y))) for x, y in det.keypoints[:, :2]]
        for a, b in meta.edges:
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


def coco_categories(meta: ModelMeta) -> list[dict[str, Any]]:
    """COCO keypoint categories (1-based ids and skeleton, as COCO writes them)."""
    return [{"id": i + 1, "name": name, "keypoints": list(meta.keypoint_names),
             "skeleton": [[a + 1, b + 1] for a, b in meta.edges]} for i, name in enumerate(meta.class_names)]


def detection_to_coco(det: Detection, image_id: int) -> dict[str, Any]:
    x0, y0, x1, y1 = det.box
    return {
        "image_id": image_id,
        "category_id": det.class_id + 1,
        "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
        "score": round(det.score, 6),
        "keypoints": [round(float(v), 3 if i % 3 < 2 else 6) for i, v in enumerate(det.keypoints.ravel())],
    }


def predict(model: str | Path, source: str | Path, out: str | Path, *, conf: float | None = None,
            iou: float | None = None, imgsz: int | None = None, max_det: int | None = None,
            kpt_conf: float | None = None, backend: str = "auto", to_label_studio: str | None = None,
            project: int | None = None, params_path: str | Path = "cfg/params.yaml") -> PredictResult:
    """Predict poses on ``source`` (image, video or folder); write drawn images and COCO results to ``out``.

    ``conf``/``iou``/``max_det``/``kpt_conf`` default to ``package.predict`` in the params file;
    ``imgsz`` to the model's training size (an ONNX model only runs at its exported size). With
    ``to_label_studio`` and ``project``, the predictions are also uploaded as Label Studio
    pre-annotations (keypoints at least ``kpt_conf`` confident, as drawn)."""
    import cv2

    settings = {**DEFAULT_PREDICT, **(load_params("package", params_path).get("predict") or {})}
    conf = float(settings["conf"] if conf is None else conf)
    iou = float(settings["iou"] if iou is None else iou)
    max_det = int(settings["max_det"] if max_det is None else max_det)
    kpt_conf = float(settings["kpt_conf"] if kpt_conf is None else kpt_conf)
    if (to_label_studio is None) != (project is None):
        raise FdposeError("--to-label-studio and --project go together", item="options")
    runner = load_runner(model, backend)
    meta = runner.meta
    if runner.fixed_imgsz is not None:
        if imgsz not in (None, runner.fixed_imgsz):
            raise FdposeError(f"the ONNX model was exported for {runner.fixed_imgsz}x{runner.fixed_imgsz} "
                              f"inputs; --imgsz {imgsz} is not possible", path=model)
        imgsz = runner.fixed_imgsz
    imgsz = int(imgsz or meta.imgsz)
    if imgsz <= 0 or imgsz % meta.stride:
        raise FdposeError(f"--imgsz {imgsz} must be a positive multiple of the model stride {meta.stride}",
                          item="imgsz")

    source = Path(source)
    uploads: list[tuple[Frame, list[Detection]]] = []  # still images only: Label Studio tasks show images
    images: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    with atomic_dir(out) as tmp:
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
            detections = run_image(runner, frame.image, imgsz, conf, iou, max_det)
            results.extend(detection_to_coco(det, image_id) for det in detections)
            if to_label_studio is not None and frame.frame_index is None:
                uploads.append((Frame(frame.file_name, None), detections))
            target = tmp / record["drawn"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), draw(frame.image, detections, meta, kpt_conf)):
                raise FdposeError("could not write the drawn image", path=target)
        if not images:
            raise FdposeError(f"no readable image or video frame (unreadable: {', '.join(skipped)})",
                              path=source)
        _write_json(tmp / "predictions.json", results)
        _write_json(tmp / "images.json", {"images": images, "categories": coco_categories(meta),
                                          "skipped": skipped, "source": str(source), "model": str(model),
                                          "settings": {"conf": conf, "iou": iou, "imgsz": imgsz,
                                                       "max_det": max_det, "kpt_conf": kpt_conf,
                                                       "backend": runner.kind}})
        os.chmod(tmp, 0o755)
    result = PredictResult(Path(out), runner.kind, len(images), len(results), skipped)
    if to_label_studio is not None:
        result.uploaded = upload_to_label_studio(uploads, images, meta, to_label_studio, int(project),
                                                 kpt_conf, _model_version(Path(model), runner.kind))
    return result


def _model_version(model: Path, kind: str) -> str:
    """``fdpose-<kind>-<sha256 prefix of the weights file>``: names exactly the weights that predicted."""
    import hashlib

    weights = {"safetensors": "model.safetensors", "onnx": "model.onnx"}.get(kind) if model.is_dir() else None
    path = model / weights if weights else model
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"fdpose-{kind}-{digest}"


def upload_to_label_studio(uploads: list[tuple[Frame, list[Detection]]], images: list[dict[str, Any]],
                           meta: ModelMeta, url: str, project: int, kpt_conf: float,
                           model_version: str) -> int:
    """Upload still-image predictions as Label Studio pre-annotations; returns how many were created.

    Keypoints at least ``kpt_conf`` confident become labelled points (v=2), the
    others are left out, as in the drawings; the image's prediction score is the mean detection score.
    Images matching no task (or several) are skipped by the uploader and listed on stderr.
    """
    from pipeline.dataset import ImageRecord, Instance, Report
    from pipeline.formats.labelstudio import upload_predictions
    from pipeline.skeleton import Skeleton

    if not uploads:
        raise FdposeError("nothing to upload: Label Studio tasks show images, and the source had none",
                          path=url)
    sizes = {record["file_name"]: (record["width"], record["height"]) for record in images}
    skeleton = Skeleton(keypoint_names=meta.keypoint_names, class_names=meta.class_names,
                        kpt_dims=meta.kpt_shape[1], flip_permutation=meta.flip_idx or None,
                        sigmas=meta.sigmas or None, edges=[tuple(e) for e in meta.edges])
    records, scores = [], []
    for frame, detections in uploads:
        width, height = sizes[frame.file_name]
        instances = []
        for det in detections:
            keypoints = det.keypoints.copy()
            keypoints[:, 2] = np.where(keypoints[:, 2] >= kpt_conf, 2, 0)
            instances.append(Instance(det.class_id, det.box.copy(), keypoints))
        records.append(ImageRecord(path=Path(frame.file_name), file_name=frame.file_name, width=width,
                                   height=height, instances=instances))
        scores.append(float(np.mean([d.score for d in detections])) if detections else None)
    report = Report()
    created = upload_predictions(url, project, records, model_version=model_version, skeleton=skeleton,
                                 scores=scores, report=report)
    for item in report.items:
        click.echo(f"label studio: {item.action} {item.file}: {item.item}: {item.reason}", err=True)
    return created


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@click.command("predict")
@click.option("--model", "model", required=True, type=click.Path(path_type=Path),
              help="Package directory (loads model.safetensors), model.safetensors, model.onnx or a .pt.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/predict"), show_default=True,
              help="Output folder: predictions.json, images.json, drawn/.")
@click.option("--conf", type=float, default=None, help="Confidence threshold (params: package.predict.conf).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (params: package.predict.iou).")
@click.option("--imgsz", type=int, default=None, help="Input size (default: the model's; fixed for ONNX).")
@click.option("--max-det", type=int, default=None, help="Most detections per image.")
@click.option("--kpt-conf", type=float, default=None,
              help="Keypoints at least this confident are drawn and uploaded (params: package.predict).")
@click.option("--backend", type=click.Choice(["auto", "onnx"]), default="auto", show_default=True,
              help="For a package directory: 'auto' runs model.safetensors in PyTorch, 'onnx' model.onnx.")
@click.option("--to-label-studio", "to_label_studio", metavar="URL", default=None,
              help="Upload predictions to this Label Studio server (key: LABEL_STUDIO_API_KEY).")
@click.option("--project", type=int, default=None, help="Label Studio project id for --to-label-studio.")
def predict_command(model: Path, source: Path, out: Path, conf: float | None, iou: float | None,
                    imgsz: int | None, max_det: int | None, kpt_conf: float | None, backend: str,
                    to_label_studio: str | None, project: int | None) -> None:
    """Run a model on an image, a folder or a video: drawn images and COCO results in --out."""
    result = predict(model, source, out, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, kpt_conf=kpt_conf,
                     backend=backend,
                     to_label_studio=to_label_studio, project=project)
    click.echo(result.summary())
