"""``fdpose eval``: OKS mAP by the COCO protocol, per-keypoint accuracy, and a report.

The metric part works from two COCO documents and nothing else: the ground truth (a COCO keypoints
dict, as written to ``ground_truth.json``) and the predictions (a COCO results list, as written to
``predictions.json``). :func:`score_predictions` runs faster-coco-eval's ``COCOeval_faster`` on them
(iouType ``keypoints`` with the dataset's OKS sigmas, and ``bbox`` on the same predictions), so anyone
can recompute the headline numbers from the written files with pycocotools.

The model part (:func:`predict_coco`) runs an ultralytics pose checkpoint (ours with ``C2f_FDConv`` or
a stock one) image by image and turns its output into COCO results; :func:`evaluate` ties both together,
adds ultralytics' own validation numbers for comparison and writes the files and the report.

Protocol choices, stated in the report as well:

- OKS area of a ground-truth instance is ``0.53 x box area`` (ultralytics' rule, after xtcocotools),
  so the COCO evaluation and ultralytics' validator see the same scale.
- COCO keeps the 20 highest-scoring detections per image for keypoints and 100 for boxes.
- Per-keypoint accuracy (PCK and pixel error) is measured over *matched* instances: predictions are
  matched to ground truth per image and class greedily by descending score, each taking the unmatched
  ground truth of highest OKS at or above ``match_oks`` (COCO's rule at one threshold).
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.config import load_params
from pipeline.dataset import SPLITS, Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import label_path_for, read_yolo, write_yolo
from pipeline.io import atomic_dir, write_json

AREA_FACTOR = 0.53  # ultralytics' OKS area: 0.53 x box area (pose validator, after xtcocotools)
AREA_RULE = "area = 0.53 x ground-truth box area (ultralytics' OKS area rule)"
KEYPOINT_MAX_DETS = 20  # COCO's keypoint protocol keeps the top 20 detections per image
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points

DEFAULTS: dict[str, Any] = {
    "split": "val",
    "conf": 0.001,  # COCO practice: keep nearly every detection, AP integrates over the scores
    "iou": 0.7,  # NMS IoU, ultralytics' validation default
    "imgsz": 640,
    "max_det": 300,
    "device": "cpu",
    "match_oks": 0.5,
    "pck_thresholds": [0.05, 0.1],
    "grid_images": 4,
    "draw_conf": 0.25,
}

# metrics.json names of COCOeval's ten keypoint statistics, in COCOeval's order.
OKS_STAT_NAMES = [
    "oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large",
    "oks_ar", "oks_ar50", "oks_ar75", "oks_ar_medium", "oks_ar_large",
]
# metrics.json names of the first COCOeval bbox statistics used here (AP, AP50, AP75).
BOX_STAT_NAMES = ["box_map", "box_map50", "box_map75"]


# --- the metric part: COCO documents in, numbers out -------------------------------------------


@dataclass
class ModelScores:
    """Everything measured for one model's predictions on one split."""

    metrics: dict[str, float | None]  # OKS_STAT_NAMES + BOX_STAT_NAMES; None where COCO has no data (-1)
    pr_curves: dict[str, list[float | None]]  # precision at RECALL_POINTS, per curve name
    keypoints: list[dict[str, Any]]  # per class (and "all" when several) and keypoint: PCK, pixel error
    per_class: dict[str, dict[str, float | None]]  # OKS AP per class name; empty with a single class
    matched_instances: int
    labelled_instances: int
    image_scores: dict[int, float]  # mean matched OKS of an image's labelled instances (0 if unmatched)
    matched: dict[int, list[dict]]  # per image, the predictions matched to its ground truth
    num_predictions: int


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """COCOeval prints its tables through this; the report shows the numbers instead."""


def _coco_eval(gt: dict, predictions: list[dict], iou_type: str, sigmas: list[float] | None):
    """Run faster-coco-eval's COCOeval_faster (evaluate, accumulate, summarize) on copies of the inputs:
    COCO and loadRes annotate the dicts they are given (``ignore``, ``area``, ids)."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(copy.deepcopy(gt))
    coco_gt.print_function = _quiet
    coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, kpt_oks_sigmas=sigmas, print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def _stat(value: float) -> float | None:
    """COCOeval's -1 means "no ground truth in this range"; JSON gets null instead of a fake number."""
    return None if value < 0 else float(value)


def _pr_curve(evaluator, oks_index: int | None) -> list[float | None]:
    """Precision at the 101 recall points (area "all", largest maxDets), averaged over classes;
    ``oks_index`` None averages over all thresholds as well (the curve behind mAP@.50:.95)."""
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]  # [T, R, K]
    if oks_index is not None:
        precision = precision[oks_index : oks_index + 1]
    curve: list[float | None] = []
    for r in range(precision.shape[1]):
        values = precision[:, r, :]
        values = values[values > -1]
        curve.append(float(values.mean()) if values.size else None)
    return curve


def _per_class_ap(evaluator, names: dict[int, str]) -> dict[str, dict[str, float | None]]:
    """OKS AP@[.50:.95] and AP@.50 of each class (area "all", largest maxDets), by class name."""
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]  # [T, R, K]
    out = {}
    for index, category_id in enumerate(evaluator.params.catIds):
        values = {"oks_map": precision[:, :, index], "oks_map50": precision[0, :, index]}
        out[names[category_id]] = {key: float(v[v > -1].mean()) if (v > -1).any() else None
                                   for key, v in values.items()}
    return out


def oks(gt_keypoints: np.ndarray, area: float, predicted: np.ndarray, sigmas: np.ndarray) -> float:
    """Object keypoint similarity of one prediction with one ground truth, COCO's formula:
    mean over labelled keypoints of ``exp(-d^2 / (2 * area * (2 sigma)^2))``."""
    labelled = gt_keypoints[:, 2] > 0
    d2 = ((predicted[:, :2] - gt_keypoints[:, :2]) ** 2).sum(axis=1)
    e = d2 / (2.0 * (2.0 * sigmas) ** 2 * (area + np.spacing(1)))
    return float(np.exp(-e[labelled]).mean())


def match_predictions(gt: dict, predictions: list[dict], sigmas: list[float], match_oks: float,
                      ) -> dict[int, list[tuple[dict, dict | None, float]]]:
    """Greedy COCO-style matching at one OKS threshold, per image and class.

    Returns for every image id the list of ``(ground truth, matched prediction or None, OKS)`` over its
    labelled ground-truth instances (those with at least one labelled keypoint; COCO ignores the rest).
    Predictions are taken by descending score (stable order), at most ``KEYPOINT_MAX_DETS`` per image and
    class as COCO does; each takes the unmatched ground truth of highest OKS that reaches ``match_oks``.
    """
    sigma = np.asarray(sigmas, dtype=np.float64)
    gts_by_key: dict[tuple[int, int], list[dict]] = {}
    for ann in gt["annotations"]:
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd", 0):
            gts_by_key.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    dts_by_key: dict[tuple[int, int], list[dict]] = {}
    for prediction in predictions:
        dts_by_key.setdefault((prediction["image_id"], prediction["category_id"]), []).append(prediction)

    result: dict[int, list[tuple[dict, dict | None, float]]] = {image["id"]: [] for image in gt["images"]}
    for key, gts in gts_by_key.items():
        order = np.argsort([-d["score"] for d in dts_by_key.get(key, [])], kind="mergesort")
        dts = [dts_by_key[key][i] for i in order[:KEYPOINT_MAX_DETS]]
        gt_points = [np.asarray(g["keypoints"], dtype=np.float64).reshape(-1, 3) for g in gts]
        matched: dict[int, tuple[dict, float]] = {}
        for dt in dts:
            points = np.asarray(dt["keypoints"], dtype=np.float64).reshape(-1, 3)
            best, best_index = min(match_oks, 1 - 1e-10), -1
            for index, g in enumerate(gts):
                if index in matched:
                    continue
                value = oks(gt_points[index], g["area"], points, sigma)
                if value >= best:
                    best, best_index = value, index
            if best_index >= 0:
                matched[best_index] = (dt, best)
        for index, g in enumerate(gts):
            dt, value = matched.get(index, (None, 0.0))
            result[key[0]].append((g, dt, value))
    return result


def keypoint_accuracy(gt: dict, matches: dict[int, list[tuple[dict, dict | None, float]]],
                      keypoint_names: list[str], pck_thresholds: list[float]) -> list[dict[str, Any]]:
    """PCK (error within ``t x`` the ground-truth box diagonal) and mean pixel error per keypoint,
    over the labelled keypoints of matched instances; one table per class, plus ``all`` when the
    ground truth has several classes."""
    category_names = {c["id"]: c["name"] for c in gt["categories"]}
    errors: dict[str, list[list[tuple[float, float]]]] = {}  # class -> keypoint -> (error, diagonal)
    for pairs in matches.values():
        for g, dt, _ in pairs:
            if dt is None:
                continue
            gt_points = np.asarray(g["keypoints"], dtype=np.float64).reshape(-1, 3)
            points = np.asarray(dt["keypoints"], dtype=np.float64).reshape(-1, 3)
            diagonal = float(np.hypot(g["bbox"][2], g["bbox"][3]))
            distance = np.hypot(points[:, 0] - gt_points[:, 0], points[:, 1] - gt_points[:, 1])
            names = [category_names[g["category_id"]]]
            if len(category_names) > 1:
                names.append("all")
            for name in names:
                table = errors.setdefault(name, [[] for _ in keypoint_names])
                for k in np.flatnonzero(gt_points[:, 2] > 0):
                    table[k].append((float(distance[k]), diagonal))
    rows = []
    class_order = [category_names[c] for c in sorted(category_names)] + ["all"]
    for name in [n for n in class_order if n in errors]:
        for k, keypoint in enumerate(keypoint_names):
            pairs = np.asarray(errors[name][k], dtype=np.float64).reshape(-1, 2)
            row: dict[str, Any] = {"class": name, "keypoint": keypoint, "count": int(len(pairs))}
            for t in pck_thresholds:
                row[f"pck@{t:g}"] = float((pairs[:, 0] <= t * pairs[:, 1]).mean()) if len(pairs) else None
            row["mean_px_error"] = float(pairs[:, 0].mean()) if len(pairs) else None
            rows.append(row)
    return rows


def score_predictions(gt: dict, predictions: list[dict], sigmas: list[float], keypoint_names: list[str],
                      *, match_oks: float = DEFAULTS["match_oks"],
                      pck_thresholds: list[float] = DEFAULTS["pck_thresholds"]) -> ModelScores:
    """All numbers for one set of predictions: COCO OKS and box statistics, PR curves, per-keypoint
    accuracy and per-image scores. Needs no model: ``gt`` is a COCO keypoints dict, ``predictions`` a
    COCO results list."""
    if not any(ann.get("num_keypoints", 0) > 0 for ann in gt["annotations"]):
        raise FdposeError("no instance with a labelled keypoint: OKS mAP is undefined", item="ground truth")
    if len(sigmas) != len(keypoint_names):
        raise FdposeError(f"{len(sigmas)} sigmas for {len(keypoint_names)} keypoints", item="sigmas")
    keypoint_eval = _coco_eval(gt, predictions, "keypoints", sigmas)
    box_eval = _coco_eval(gt, predictions, "bbox", None)
    metrics = {name: _stat(v) for name, v in zip(OKS_STAT_NAMES, keypoint_eval.stats[:10], strict=True)}
    metrics.update({name: _stat(v) for name, v in zip(BOX_STAT_NAMES, box_eval.stats[:3], strict=True)})
    curves = {
        "oks@[.50:.95]": _pr_curve(keypoint_eval, None),
        "oks@.50": _pr_curve(keypoint_eval, 0),
        "oks@.75": _pr_curve(keypoint_eval, 5),
        "box@[.50:.95]": _pr_curve(box_eval, None),
        "box@.50": _pr_curve(box_eval, 0),
    }
    matches = match_predictions(gt, predictions, sigmas, match_oks)
    image_scores = {
        image_id: float(np.mean([value for _, _, value in pairs]))
        for image_id, pairs in matches.items() if pairs
    }
    return ModelScores(
        metrics=metrics,
        pr_curves=curves,
        keypoints=keypoint_accuracy(gt, matches, keypoint_names, pck_thresholds),
        per_class=_per_class_ap(keypoint_eval, {c["id"]: c["name"] for c in gt["categories"]})
        if len(gt["categories"]) > 1 else {},
        matched_instances=sum(dt is not None for pairs in matches.values() for _, dt, _ in pairs),
        labelled_instances=sum(len(pairs) for pairs in matches.values()),
        image_scores=image_scores,
        matched={image_id: [dt for _, dt, _ in pairs if dt is not None]
                 for image_id, pairs in matches.items()},
        num_predictions=len(predictions),
    )


# --- the data part: dataset, ground truth, fingerprints -----------------------------------------


def oks_area(instance: Instance) -> float:
    """The COCO ``area`` of a ground-truth instance for OKS: 0.53 x box area, as ultralytics computes it."""
    x0, y0, x1, y1 = instance.bbox
    return AREA_FACTOR * float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))


def ground_truth(dataset: Dataset, split: str) -> dict:
    """The split's labels as a COCO keypoints dict (1-based ids, area by :func:`oks_area`)."""
    from pipeline.formats.coco import dataset_to_coco

    return dataset_to_coco(dataset, split=split, area_fn=oks_area)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(images: list[ImageRecord]) -> str:
    """sha256 over the split's image and label files: one ``name, image hash, label hash`` line per image
    in name order, so renaming, editing or re-labelling any file changes it."""
    lines = []
    for image in sorted(images, key=lambda im: im.file_name):
        label = label_path_for(image.path)
        label_hash = _sha256_file(label) if label.exists() else "-"
        lines.append(f"{image.file_name}\t{_sha256_file(image.path)}\t{label_hash}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _split_images(dataset: Dataset, split: str, data_yaml: Path) -> list[ImageRecord]:
    images = dataset.splits().get(split, [])
    if not images:
        raise FdposeError(f"split '{split}' has no images", path=data_yaml)
    return images


# --- the model part: ultralytics in, COCO results out -------------------------------------------


def load_model(weights: str | Path):
    """An ultralytics YOLO pose model from a checkpoint: ours (``C2f_FDConv``) or a stock one."""
    weights = Path(weights)
    if not weights.is_file():
        raise FdposeError("weights file not found", path=weights)
    from ultralytics import YOLO

    import pipeline.nn.ultralytics as integration  # makes C2f_FDConv checkpoints loadable

    integration.register()
    try:
        model = YOLO(str(weights))
    except Exception as error:  # a corrupt or foreign file: one line, not ultralytics' traceback
        raise FdposeError(f"cannot load as an ultralytics checkpoint ({type(error).__name__}: {error})",
                          path=weights) from None
    if model.task != "pose":
        raise FdposeError(f"a '{model.task}' model, not a pose model", path=weights)
    return model


def check_device(device: str | int) -> None:
    """Refuse a device this machine does not have (e.g. ``0`` without CUDA) with one line."""
    from ultralytics.utils.torch_utils import select_device

    try:
        select_device(str(device), verbose=False)
    except ValueError as error:
        raise FdposeError(str(error).splitlines()[0], item="--device") from None


def check_compatible(model, dataset: Dataset, weights: Path, data_yaml: Path) -> None:
    """Refuse a model whose keypoint layout or class count differs from the dataset's, before predicting."""
    model_shape = [int(v) for v in model.model.kpt_shape]
    data_shape = dataset.skeleton.kpt_shape
    if model_shape != data_shape:
        raise FdposeError(f"model kpt_shape {model_shape} differs from the dataset's {data_shape} "
                          f"({data_yaml})", path=weights, item="kpt_shape")
    model_classes, data_classes = len(model.names), len(dataset.skeleton.class_names)
    if model_classes != data_classes:
        raise FdposeError(f"model has {model_classes} classes, the dataset {data_classes} ({data_yaml})",
                          path=weights, item="classes")


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


@dataclass
class ModelEvaluation:
    """One model's evaluation: where it came from, its predictions and its scores."""

    label: str  # "model" or "baseline"
    weights: Path
    fingerprint: str
    predictions: list[dict]
    scores: ModelScores
    ultralytics: dict[str, float] | None  # ultralytics' own validation numbers; None when not run

    def metrics(self) -> dict[str, Any]:
        """The scalar numbers of this model as metrics.json holds them."""
        out: dict[str, Any] = dict(self.scores.metrics)
        out.update({
            "weights": str(self.weights),
            "model_sha256": self.fingerprint,
            "num_predictions": self.scores.num_predictions,
            "matched_instances": self.scores.matched_instances,
            **({"per_class": self.scores.per_class} if self.scores.per_class else {}),
            "ultralytics": dict(self.ultralytics) if self.ultralytics is not None else None,
        })
        return out


@dataclass
class EvalResult:
    """What ``fdpose eval`` measured and where it wrote it."""

    out_dir: Path
    data_yaml: Path
    split: str
    settings: dict[str, Any]
    dataset: Dataset
    images: list[ImageRecord]  # the split's images, in dataset order
    gt: dict  # COCO keypoints ground truth of the split
    counts: dict[str, int]
    data_fingerprint: str
    keypoint_names: list[str]
    class_names: list[str]
    sigmas: list[float]
    edges: list[tuple[int, int]]
    models: list[ModelEvaluation] = field(default_factory=list)

    def add_model(self, label: str, weights: Path, predictions: list[dict],
                  ultralytics: dict[str, float] | None = None) -> ModelEvaluation:
        """Score ``predictions`` (COCO results on :attr:`gt`) and keep them under ``label``."""
        scores = score_predictions(self.gt, predictions, self.sigmas, self.keypoint_names,
                                   match_oks=self.settings["match_oks"],
                                   pck_thresholds=self.settings["pck_thresholds"])
        evaluation = ModelEvaluation(label, Path(weights), _sha256_file(Path(weights)), predictions, scores,
                                     ultralytics)
        self.models.append(evaluation)
        return evaluation

    @property
    def model(self) -> ModelEvaluation:
        return self.models[0]

    @property
    def baseline(self) -> ModelEvaluation | None:
        return self.models[1] if len(self.models) > 1 else None

    def metrics(self) -> dict[str, Any]:
        """metrics.json: the model's numbers at the top level (what ``dvc metrics show`` lists), the
        baseline's under ``baseline``, then the settings, counts and fingerprints."""
        out = self.model.metrics()
        if self.baseline is not None:
            out["baseline"] = self.baseline.metrics()
        out.update({
            "split": self.split,
            "sigmas": list(self.sigmas),
            "area_rule": AREA_RULE,
            "match_oks": self.settings["match_oks"],
            "settings": {k: self.settings[k] for k in ("conf", "iou", "imgsz", "max_det")},
            "data_sha256": self.data_fingerprint,
            **self.counts,
        })
        return out


def _counts(gt: dict) -> dict[str, int]:
    annotations = gt["annotations"]
    return {
        "num_images": len(gt["images"]),
        "num_instances": len(annotations),
        "num_labelled_instances": sum(1 for a in annotations if a.get("num_keypoints", 0) > 0),
        "num_labelled_keypoints": sum(int(a.get("num_keypoints", 0)) for a in annotations),
    }


def resolve_settings(params: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``DEFAULTS``, then ``params`` (the ``eval:`` section of cfg/params.yaml), then the ``overrides``
    that are not None; an unknown key or a value of the wrong kind is an error naming the setting."""
    settings = {**DEFAULTS, **(params or {}), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise FdposeError(f"unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}", item="eval")

    def fraction(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    checks = {
        "split": (lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}"),
        "conf": (fraction, "a number in [0, 1]"), "iou": (fraction, "a number in [0, 1]"),
        "match_oks": (fraction, "a number in [0, 1]"), "draw_conf": (fraction, "a number in [0, 1]"),
        "imgsz": (positive_int, "a positive integer"), "max_det": (positive_int, "a positive integer"),
        "grid_images": (positive_int, "a positive integer"),
        "pck_thresholds": (lambda v: isinstance(v, list) and v and all(fraction(t) and t > 0 for t in v),
                           "a non-empty list of numbers in (0, 1]"),
        "device": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "a device name"),
    }
    for key, (valid, expected) in checks.items():
        if not valid(settings[key]):
            raise FdposeError(f"expected {expected}, got {settings[key]!r}", item=f"eval.{key}")
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
        out_dir=Path(out), data_yaml=data_yaml, split=settings["split"], settings=settings,
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
    for label, path in models:
        model = load_model(path)
        check_compatible(model, result.dataset, path, result.data_yaml)
        loaded.append((label, path, model))
    for label, path, model in loaded:
        predictions = predict_coco(model, result.images, result.gt, settings)
        result.add_model(label, path, predictions,
                         ultralytics_val(model, result.dataset, result.images, settings))
    write_outputs(result)
    return result


def write_outputs(result: EvalResult) -> None:
    """All files of an evaluation, built in a temporary sibling and renamed into ``result.out_dir``."""
    from pipeline import report

    with atomic_dir(result.out_dir) as tmp:
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
@click.option("--params", "params_path", default="cfg/params.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (section eval).")
def eval_command(weights: Path, data: Path, split: str | None, out: Path, baseline: Path | None,
                 conf: float | None, iou: float | None, imgsz: int | None, device: str | None,
                 params_path: Path) -> None:
    """OKS mAP by the COCO protocol on a split, with an HTML and Markdown report."""
    result = evaluate(weights, data, out, split=split, baseline=baseline,
                      params=load_params("eval", params_path), conf=conf, iou=iou, imgsz=imgsz, device=device)
    for evaluation in result.models:
        m = evaluation.scores.metrics
        click.echo(f"{evaluation.label}: OKS mAP {_fmt(m['oks_map'])}  mAP50 {_fmt(m['oks_map50'])}  "
                   f"box mAP {_fmt(m['box_map'])}  ({evaluation.weights})")
    click.echo(f"wrote {result.out_dir}/report.html, report.md, metrics.json")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

