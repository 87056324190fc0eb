"""One inference path for every model form: letterbox, runners, decoding with NMS.

A *runner* turns a letterboxed ``(B, 3, S, S)`` float batch into the Pose head's raw inference output
``(B, 4 + nc + K * dims, N)`` (boxes as centre/size in input pixels, class scores after sigmoid,
keypoints decoded to input pixels): :class:`TorchRunner` for a PyTorch model (rebuilt from a package's
safetensors, or from a ``.pt`` checkpoint), :class:`OnnxRunner` for an ONNX file under onnxruntime,
:class:`OpenVinoRunner` for an OpenVINO IR (``model.xml`` + ``model.bin``, optional extra
``fdpose[openvino]``). :func:`decode` then applies the confidence threshold, class-aware NMS and the
letterbox undo the same way for all of them, so the forms can only differ by their raw outputs.
Predictions are the hub's :class:`~pipeline.dataset.Instance` with a ``score`` (keypoints ``x, y,
confidence``). :class:`ModelMeta` is what inference needs besides the weights. Images are OpenCV's BGR
arrays. ``fdpose eval``, ``predict``, ``serve`` and the package checks all run through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.skeleton import Skeleton

PAD_VALUE = 114  # ultralytics' letterbox grey, so our inputs match what the model saw in training
NMS_CLASS_OFFSET = 7680.0  # per-class box offset that makes one NMS pass class-aware (ultralytics' max_wh)


@dataclass
class ModelMeta:
    """A model's keypoint layout and classes (its :class:`Skeleton`) plus its input size and stride."""

    skeleton: Skeleton
    imgsz: int = 640
    stride: int = 32

    @property
    def num_classes(self) -> int:
        return len(self.skeleton.class_names)

    def to_dict(self) -> dict[str, Any]:
        """The form ``model.yaml`` and the ONNX metadata store."""
        skeleton = self.skeleton
        return {
            "class_names": list(skeleton.class_names),
            "keypoint_names": list(skeleton.keypoint_names),
            "kpt_shape": list(skeleton.kpt_shape),
            "edges": [list(e) for e in skeleton.edges],
            "flip_idx": list(skeleton.flip_permutation),
            "sigmas": list(skeleton.sigmas),
            "imgsz": int(self.imgsz),
            "stride": int(self.stride),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: object) -> ModelMeta:
        """Read :meth:`to_dict`'s form; a malformed one is an error naming ``source``."""
        try:
            keypoint_names = [str(n) for n in data["keypoint_names"]]
            kpt_shape = [int(v) for v in data["kpt_shape"]]
            fields = {"class_names": [str(n) for n in data["class_names"]],
                      "flip_permutation": [int(i) for i in data.get("flip_idx") or []] or None,
                      "sigmas": [float(s) for s in data.get("sigmas") or []] or None,
                      "edges": [(int(a), int(b)) for a, b in data.get("edges") or []]}
            imgsz, stride = int(data.get("imgsz", 640)), int(data.get("stride", 32))
        except (KeyError, TypeError, ValueError) as error:
            raise FdposeError(f"malformed model metadata ({error!r})", path=source) from None
        if len(kpt_shape) != 2 or kpt_shape[0] != len(keypoint_names):
            raise FdposeError(f"kpt_shape {kpt_shape} does not match {len(keypoint_names)} keypoint names",
                              path=source)
        try:
            skeleton = Skeleton(keypoint_names=keypoint_names, kpt_dims=kpt_shape[1], **fields)
        except FdposeError as error:
            raise FdposeError(f"malformed model metadata ({error})", path=source) from None
        return cls(skeleton, imgsz=imgsz, stride=stride)


# --- runners: letterboxed batch in, raw Pose output out ------------------------------------------


class TorchRunner:
    """A PyTorch pose model in eval mode on ``device`` (a torch device name, default CPU); returns the raw
    inference tensor as numpy."""

    def __init__(self, model: Any, meta: ModelMeta, kind: str, device: str = "cpu"):
        self.device = device
        self.model = model.float().eval().to(device)
        self.meta = meta
        self.kind = kind
        self.fixed_imgsz: int | None = None  # convolutional: any multiple of the stride works

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = self.model(torch.from_numpy(batch).to(self.device))
        # In eval mode ultralytics heads return (decoded, raw feature dict); export mode returns decoded.
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.float().cpu().numpy()


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


def import_openvino() -> Any:
    """The ``openvino`` module, or one error saying how to install it."""
    try:
        import openvino
    except ImportError as error:
        raise FdposeError(f"OpenVINO is not installed ({error}); pip install 'fdpose[openvino]'",
                          item="openvino") from None
    return openvino


class OpenVinoRunner:
    """An OpenVINO IR on the CPU plugin in float32; the input size is fixed by the export.

    The IR keeps the ONNX file's dynamic batch; each batch size met is compiled once with a static
    shape (OpenVINO optimises static shapes best) and kept.
    """

    def __init__(self, path: Path, meta: ModelMeta, threads: int | None = None):
        openvino = import_openvino()
        self.core = openvino.Core()
        # Read the weights into memory: a package archive is run from a temporary copy of its files.
        self.core.set_property({"ENABLE_MMAP": False})
        self.model = self.core.read_model(str(path))
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        shape = self.model.inputs[0].get_partial_shape()
        self.fixed_imgsz = shape[2].get_length() if shape[2].is_static else None
        self.compiled: dict[tuple[int, ...], Any] = {}
        self.meta = meta
        self.kind = "openvino"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        compiled = self.compiled.get(batch.shape)
        if compiled is None:
            model = self.model.clone()
            model.reshape(list(batch.shape))
            compiled = self.compiled[batch.shape] = self.core.compile_model(model, "CPU", self.config)
        return compiled(batch)[0]


Runner = TorchRunner | OnnxRunner | OpenVinoRunner


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
           max_det: int = 300) -> list[Instance]:
    """Raw Pose output of one image ``(4 + nc + K * dims, N)`` to scored instances in original pixels,
    best first."""
    nc = meta.num_classes
    k, dims = meta.skeleton.kpt_shape
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
        detections.append(Instance(int(class_ids[anchor]), box, keypoints, score=float(scores[anchor])))
    return detections


def input_size(runner: Runner, imgsz: int | None, model: object) -> int:
    """The input size to run ``runner`` at: ``imgsz`` when given, else the size its metadata records (the
    training size of a checkpoint, the export size of a package); an ONNX or OpenVINO model only runs at
    its exported size, and any size must be a positive multiple of the stride. ``model`` names it in
    errors."""
    meta = runner.meta
    if runner.fixed_imgsz is not None:
        if imgsz not in (None, runner.fixed_imgsz):
            kind = {"onnx": "ONNX", "openvino": "OpenVINO"}.get(runner.kind, runner.kind)
            raise FdposeError(f"the {kind} model was exported for {runner.fixed_imgsz}x{runner.fixed_imgsz} "
                              f"inputs; --imgsz {imgsz} is not possible", path=model)
        imgsz = runner.fixed_imgsz
    imgsz = int(imgsz or meta.imgsz)
    if imgsz <= 0 or imgsz % meta.stride:
        raise FdposeError(f"--imgsz {imgsz} must be a positive multiple of the model stride {meta.stride}",
                          item="imgsz")
    return imgsz


def run_image(runner: Runner, image: np.ndarray, imgsz: int, conf: float, iou: float,
              max_det: int) -> list[Instance]:
    """Letterbox, run and decode one image (BGR, HxWx3, as ``cv2.imread`` and ``cv2.imdecode`` give it)."""
    batch, transform = letterbox(image, imgsz)
    return decode(runner(batch), runner.meta, transform, conf, iou, max_det)
