"""Models that have learned something, for the tests that judge trained models (see test_learning.py).

A small generated set (``fdpose demo-data``: 64 images of 128 px, converted 0.75/0.25 into 46 training
and 18 validation images) is trained on CPU long enough that every family clearly learns: 40 epochs at
128 px, batch 8, no mosaic (mosaic on a few dozen tiny images teaches nothing in 40 epochs) and a
nominal batch of 8 (one optimizer step per batch). :class:`Models` trains each model once per session,
on first use, and scores it twice: with ``fdpose``'s own evaluation (:func:`pipeline.evaluate.evaluate`,
COCO protocol) and, as an oracle independent of the YOLO label writer and reader that training and that
evaluation share, with pycocotools against the ground truth the COCO writer made from the same export.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SKELETON = REPO / "cfg" / "skeletons" / "coco_person.yaml"
AREA_FACTOR = 0.53  # ultralytics' OKS area rule, which fdpose eval follows
STOCK = "yolov8n-pose.yaml"
FDCONV_FAMILIES = ["yolov8n-pose-C2f_FDConv.yaml", "yolo11n-pose-C3k2_FDConv.yaml",
                   "yolo26n-pose-C3k2_FDConv.yaml"]
SET = {"images": 64, "size": 128, "seed": 1}
SPLIT = {"split": [0.75, 0.25, 0.0], "seed": 0}
EPOCHS = 40
TRAINING = {"imgsz": 128, "batch": 8, "device": "cpu", "plots": False,
            "hyp": {"nbs": 8, "mosaic": 0.0, "close_mosaic": 0}}


@dataclass
class LearningSet:
    """The generated set: its YOLO-pose dataset and the COCO ground truth of its validation images."""

    root: Path
    data: Path  # data.yaml
    coco: dict  # COCO keypoint ground truth (the COCO writer's) of the val images only


@dataclass
class Trained:
    """One trained model and what it scored."""

    model: str
    seed: int
    epochs: int
    weights: Path  # best.pt
    run: Path
    eval_dir: Path  # fdpose eval's output: metrics.json, predictions.json, ground_truth.json
    pose_losses: list[float]  # training pose loss per epoch (results.csv)
    metrics: dict  # fdpose eval's metrics.json
    independent_map50: float  # pycocotools OKS mAP50 against the COCO writer's ground truth

    @property
    def loss_factor(self) -> float:
        """First epoch's training pose loss over the last epoch's."""
        return self.pose_losses[0] / self.pose_losses[-1]


def build_set(root: Path) -> LearningSet:
    """Generate the demo images, convert them to YOLO-pose and (independently) to COCO JSON."""
    from pipeline.config import ConvertParams
    from pipeline.convert import convert
    from pipeline.demo import demo_data

    raw = demo_data(root / "raw", **SET).out
    params = ConvertParams(from_="label-studio", input=str(raw / "export.json"), images=str(raw / "images"),
                           label_config=str(raw / "label_config.xml"), skeleton=str(SKELETON), **SPLIT)
    data = convert(root / "dataset", params).out / "data.yaml"
    coco_file = convert(root / "coco.json", params, to="coco").out
    coco = json.loads(Path(coco_file).read_text(encoding="utf-8"))
    val_names = {path.name for path in (root / "dataset" / "images" / "val").iterdir()}
    images = [image for image in coco["images"] if Path(image["file_name"]).name in val_names]
    assert len(images) == len(val_names) > 0, "the COCO writer and the YOLO writer disagree on the images"
    ids = {image["id"] for image in images}
    # fdpose eval scores OKS with ultralytics' area rule (0.53 x box area, the report states it); the COCO
    # writer keeps the box area. The same rule here, from the COCO writer's own boxes.
    annotations = [{**a, "area": AREA_FACTOR * a["bbox"][2] * a["bbox"][3]}
                   for a in coco["annotations"] if a["image_id"] in ids]
    coco = {**coco, "images": images, "annotations": annotations}
    return LearningSet(root, data, coco)


def pose_losses(results_csv: Path) -> list[float]:
    """The ``train/pose_loss`` column of an ultralytics run's results.csv."""
    with open(results_csv, newline="", encoding="utf-8") as handle:
        return [float(row["train/pose_loss"]) for row in csv.DictReader(handle, skipinitialspace=True)]


def coco_oks_map50(coco_gt: dict, eval_dir: Path, sigmas: list[float]) -> float:
    """pycocotools' OKS mAP50 of fdpose eval's predictions against ``coco_gt``, images matched by file name
    (the evaluation numbers them its own way)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    eval_gt = json.loads((eval_dir / "ground_truth.json").read_text(encoding="utf-8"))
    predictions = json.loads((eval_dir / "predictions.json").read_text(encoding="utf-8"))
    ids = {Path(image["file_name"]).name: image["id"] for image in coco_gt["images"]}
    renumber = {image["id"]: ids[Path(image["file_name"]).name] for image in eval_gt["images"]}
    results = [{**p, "image_id": renumber[p["image_id"]], "category_id": coco_gt["categories"][0]["id"]}
               for p in predictions]
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = coco_gt
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


def shifted_copy(data: Path, out: Path, dx: float) -> Path:
    """A copy of a YOLO-pose dataset whose training keypoints sit ``dx`` (normalised) to the right of where
    they were: labels that are wrong in a way only learning can reveal. Returns the copy's data.yaml."""
    shutil.copytree(data.parent, out)
    k = 17
    for label in (out / "labels" / "train").glob("*.txt"):
        lines = []
        for line in label.read_text(encoding="utf-8").splitlines():
            values = line.split()
            head, points = values[:5], np.array(values[5:], dtype=float).reshape(k, 3)
            labelled = points[:, 2] > 0
            points[labelled, 0] = np.clip(points[labelled, 0] + dx, 0.0, 1.0)
            lines.append(" ".join(head + [f"{v:.6f}" for v in points.ravel()]))
        label.write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = data.read_text(encoding="utf-8").replace(str(data.parent), str(out))
    (out / "data.yaml").write_text(text, encoding="utf-8")
    return out / "data.yaml"


class Models:
    """Trains each (model, seed, epochs, data) once per session, on first request, and scores it."""

    def __init__(self, learning_set: LearningSet) -> None:
        self.set = learning_set
        self.cache: dict[tuple, Trained] = {}

    def get(self, model: str, seed: int = 0, epochs: int = EPOCHS, data: Path | None = None) -> Trained:
        key = (model, seed, epochs, str(data))
        if key not in self.cache:
            self.cache[key] = self._train(model, seed, epochs, data or self.set.data, len(self.cache))
        return self.cache[key]

    def _train(self, model: str, seed: int, epochs: int, data: Path, number: int) -> Trained:
        from pipeline.config import EvalParams, TrainParams, overridden
        from pipeline.evaluate import evaluate
        from pipeline.train import train

        name = f"{number}-{Path(model).stem}-seed{seed}-e{epochs}"
        run = train(data, self.set.root / "runs" / name,
                    TrainParams(model=model, epochs=epochs, seed=seed, **TRAINING))
        # Always scored on the true validation labels, whatever the training data was.
        scored = evaluate(run.best, self.set.data, self.set.root / "eval" / name,
                          overridden(EvalParams(), imgsz=TRAINING["imgsz"]))
        metrics = scored.metrics()
        return Trained(model, seed, epochs, run.best, run.out, scored.out,
                       pose_losses(run.out / "results.csv"), metrics,
                       coco_oks_map50(self.set.coco, scored.out, metrics["sigmas"]))
