"""Scores of pose predictions by the COCO protocol, and the result types of an evaluation.

Everything here works from two COCO documents: the ground truth (a COCO keypoints dict, as
:func:`ground_truth` builds it from a dataset split) and the predictions (a COCO results list).
:func:`score_predictions` runs faster-coco-eval's ``COCOeval_faster`` on them (iouType ``keypoints``
with the dataset's OKS sigmas, and ``bbox`` on the same predictions), so anyone can recompute the
headline numbers from the written files with pycocotools.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import section_defaults
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import label_path_for
from pipeline.io import files_fingerprint, sha256_file

AREA_FACTOR = 0.53  # ultralytics' OKS area: 0.53 x box area (pose validator, after xtcocotools)
AREA_RULE = "area = 0.53 x ground-truth box area (ultralytics' OKS area rule)"
KEYPOINT_MAX_DETS = 20  # COCO's keypoint protocol keeps the top 20 detections per image
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
_EVAL_DEFAULTS = section_defaults("eval")

# metrics.json names of COCOeval's ten keypoint statistics, in COCOeval's order.
OKS_STAT_NAMES = [
    "oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large",
    "oks_ar", "oks_ar50", "oks_ar75", "oks_ar_medium", "oks_ar_large",
]
# metrics.json names of the first COCOeval bbox statistics used here (AP, AP50, AP75).
BOX_STAT_NAMES = ["box_map", "box_map50", "box_map75"]


# --- COCO documents in, numbers out --------------------------------------------------------------


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
                      *, match_oks: float = _EVAL_DEFAULTS["match_oks"],
                      pck_thresholds: list[float] = _EVAL_DEFAULTS["pck_thresholds"]) -> ModelScores:
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


# --- ground truth and fingerprints --------------------------------------------------------------


def oks_area(instance: Instance) -> float:
    """The COCO ``area`` of a ground-truth instance for OKS: 0.53 x box area, as ultralytics computes it."""
    x0, y0, x1, y1 = instance.bbox
    return AREA_FACTOR * float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))


def ground_truth(dataset: Dataset, split: str) -> dict:
    """The split's labels as a COCO keypoints dict (1-based ids, area by :func:`oks_area`)."""
    from pipeline.formats.coco_write import dataset_to_coco

    return dataset_to_coco(dataset, split=split, area_fn=oks_area)


def data_fingerprint(images: list[ImageRecord]) -> str:
    """sha256 over the split's image and label files: one ``name, image hash, label hash`` line per image
    in name order, so renaming, editing or re-labelling any file changes it."""
    return files_fingerprint((image.file_name, [image.path, label_path_for(image.path)]) for image in images)


# --- results -------------------------------------------------------------------------------------


@dataclass
class ModelEvaluation:
    """One model's evaluation: where it came from, its predictions and its scores."""

    label: str  # "model" or "baseline"
    weights: Path
    fingerprint: str  # sha256 of the weights file that ran (pipeline.model_io.weights_sha256)
    predictions: list[dict]
    scores: ModelScores
    ultralytics: dict[str, float] | None = None  # ultralytics' own validation numbers; None when not run
    kind: str = ""  # the runner: pt, safetensors, onnx, openvino
    imgsz: int | None = None  # the input size it ran at
    crosscheck: dict[str, Any] | None = None  # pipeline.evaluate.cross_check's record

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
            "runner": self.kind,
            "imgsz": self.imgsz,
            "crosscheck": dict(self.crosscheck) if self.crosscheck is not None else None,
        })
        return out


@dataclass
class EvalResult:
    """What ``fdpose eval`` measured and where it wrote it."""

    out: Path  # the output folder
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

    def add_model(self, label: str, weights: Path, predictions: list[dict], *, kind: str = "",
                  imgsz: int | None = None, fingerprint: str | None = None) -> ModelEvaluation:
        """Score ``predictions`` (COCO results on :attr:`gt`) and keep them under ``label``; ``fingerprint``
        defaults to the sha256 of the ``weights`` file."""
        scores = score_predictions(self.gt, predictions, self.sigmas, self.keypoint_names,
                                   match_oks=self.settings["match_oks"],
                                   pck_thresholds=self.settings["pck_thresholds"])
        evaluation = ModelEvaluation(label, Path(weights), fingerprint or sha256_file(weights), predictions,
                                     scores, kind=kind, imgsz=imgsz)
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
            "sigma_sources": list(self.dataset.skeleton.sigma_sources),
            "area_rule": AREA_RULE,
            "match_oks": self.settings["match_oks"],
            "settings": {k: self.settings[k] for k in ("conf", "iou", "imgsz", "max_det")},
            "data_sha256": self.data_fingerprint,
            **self.counts,
        })
        return out

    def summary(self) -> str:
        """What ``fdpose eval`` prints: each model's headline numbers, then where the files are."""
        lines = []
        for evaluation in self.models:
            m = evaluation.scores.metrics
            lines.append(f"{evaluation.label}: OKS mAP {format_number(m['oks_map'])}  mAP50 "
                         f"{format_number(m['oks_map50'])}  box mAP {format_number(m['box_map'])}  "
                         f"({evaluation.weights}, {evaluation.kind or 'predictions'} at "
                         f"{evaluation.imgsz} px)")
            if evaluation.crosscheck is not None:
                lines.append(f"  {crosscheck_line(evaluation.crosscheck)}")
        lines.append(f"wrote {self.out}/report.html, report.md, metrics.json")
        return "\n".join(lines)


def crosscheck_line(check: dict[str, Any]) -> str:
    """The cross-check with ultralytics' val in one line, as the summary and the report show it."""
    if check["status"] == "skipped":
        return f"ultralytics val cross-check skipped: {check['reason']}"
    return (f"ultralytics val pose mAP {check['ultralytics_pose_map']:.4f} ({check['checkpoint']}): "
            f"difference {check['difference']:.4f}, {check['status']} within {check['tolerance']:g}")


def format_number(value: Any, spec: str = ".4f") -> str:
    """A number as reports and cards show it: ``n/a`` for None (COCO has no data for it, e.g. no large
    objects), floats by ``spec``, anything else as text."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
