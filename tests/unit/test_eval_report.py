"""The files ``fdpose eval`` writes, from a tiny YOLO-pose dataset on disk and hand-made predictions
(no model): ground truth, predictions, metrics, DVC plot data and the two reports."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.config import EvalParams, overridden, validate_section
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.evaluate import prepare, write_outputs
from pipeline.formats.yolo import write_yolo
from pipeline.report import ranked_images
from pipeline.skeleton import Skeleton

NAMES = ["head", "left_hand", "right_hand", "tail"]
SIGMAS = [0.03, 0.06, 0.06, 0.09]


def build_dataset(root, sizes=((160, 120), (120, 160), (200, 150), (140, 140))) -> str:
    """A YOLO-pose dataset: one train image, the rest val, 1-2 instances each; returns data.yaml."""
    rng = np.random.default_rng(3)
    skeleton = Skeleton(NAMES, class_names=["critter"], sigmas=SIGMAS, edges=[(0, 1), (0, 2), (0, 3)])
    dataset = Dataset(skeleton)
    (root / "src").mkdir()
    for index, (width, height) in enumerate(sizes):
        path = root / "src" / f"img{index}.png"
        image = Image.new("RGB", (width, height), (30 + 40 * index, 90, 120))
        ImageDraw.Draw(image).ellipse([10, 10, width // 2, height // 2], fill=(200, 180, 40))
        image.save(path)
        instances = []
        for _ in range(1 + index % 2):
            x0, y0 = rng.uniform(0, width / 3), rng.uniform(0, height / 3)
            x1, y1 = x0 + rng.uniform(width / 3, width / 2), y0 + rng.uniform(height / 3, height / 2)
            keypoints = np.c_[rng.uniform(x0, x1, 4), rng.uniform(y0, y1, 4), [2, 2, 1, 2]]
            instances.append(Instance(0, [x0, y0, x1, y1], keypoints))
        instances[0].keypoints[3] = [0, 0, 0]  # one unlabelled keypoint
        dataset.images.append(ImageRecord(path, path.name, width, height, instances,
                                          split="train" if index == 0 else "val"))
    return str(write_yolo(dataset, root / "data"))


def noisy_predictions(gt: dict, scale: float, seed: int) -> list[dict]:
    """Ground truth moved by Gaussian noise of ``scale`` px, with scores, plus one false positive."""
    rng = np.random.default_rng(seed)
    predictions = []
    for ann in gt["annotations"]:
        keypoints = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        keypoints[:, :2] += rng.normal(0, scale, (len(keypoints), 2))
        keypoints[:, 2] = 0.8
        predictions.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                            "bbox": list(np.add(ann["bbox"], rng.normal(0, scale / 2, 4))),
                            "keypoints": keypoints.reshape(-1).tolist(), "score": float(rng.uniform(0.3, 1))})
    predictions.append({"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 20.0, 20.0], "score": 0.5,
                        "keypoints": [5.0, 5.0, 0.5] * len(NAMES)})
    return predictions


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An evaluation of two hand-made prediction sets (model and a noisier baseline), written out
    once for the module (the tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("evaluated")
    data_yaml = build_dataset(tmp_path)
    result = prepare(data_yaml, tmp_path / "eval", overridden(EvalParams(), grid_images=2))
    for label, scale in (("model", 1.0), ("baseline", 3.0)):
        weights = tmp_path / f"{label}.pt"
        weights.write_bytes(label.encode())  # only fingerprinted here: these predictions come from no model
        result.add_model(label, weights, noisy_predictions(result.gt, scale, seed=len(label)))
    write_outputs(result)
    return result


def test_ground_truth_file_is_coco_with_the_oks_area_rule(evaluated):
    gt = json.loads((evaluated.out / "ground_truth.json").read_text())
    assert [a["id"] for a in gt["annotations"]] == list(range(1, len(gt["annotations"]) + 1))
    assert len(gt["images"]) == 3  # the val split only
    for ann in gt["annotations"]:
        assert ann["area"] == pytest.approx(0.53 * ann["bbox"][2] * ann["bbox"][3])
    assert gt["categories"][0]["keypoints"] == NAMES


def test_metrics_recomputed_with_pycocotools_from_the_written_files(evaluated):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = evaluated.out
    metrics = json.loads((out / "metrics.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(out / "ground_truth.json"))
        for predictions, numbers in ((out / "predictions.json", metrics),
                                     (out / "baseline" / "predictions.json", metrics["baseline"])):
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(predictions)), "keypoints")
            evaluator.params.kpt_oks_sigmas = np.array(metrics["sigmas"])
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert numbers["oks_map"] == pytest.approx(evaluator.stats[0], abs=1e-6)
            assert numbers["oks_map50"] == pytest.approx(evaluator.stats[1], abs=1e-6)
            assert numbers["oks_ar"] == pytest.approx(evaluator.stats[5], abs=1e-6)
    assert metrics["sigmas"] == SIGMAS
    assert 0 < metrics["baseline"]["oks_map"] < metrics["oks_map"] < 1  # noisier baseline scores lower


def test_metrics_file_holds_counts_settings_and_fingerprints(evaluated):
    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    for key in ("oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large", "oks_ar",
                "oks_ar50", "oks_ar75", "oks_ar_medium", "oks_ar_large", "box_map", "box_map50"):
        assert key in metrics and key in metrics["baseline"]
    assert metrics["num_images"] == 3
    assert metrics["num_instances"] == evaluated.counts["num_instances"] == 5
    assert metrics["num_labelled_keypoints"] == 5 * 4 - 3  # one unlabelled keypoint per image
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["data_sha256"])
    assert metrics["model_sha256"] != metrics["baseline"]["model_sha256"]
    assert "0.53" in metrics["area_rule"]
    assert metrics["settings"]["conf"] == 0.001


def test_data_fingerprint_follows_label_content(tmp_path):
    data_yaml = build_dataset(tmp_path)
    settings = EvalParams()
    before = prepare(data_yaml, tmp_path / "e", settings).data_fingerprint
    assert prepare(data_yaml, tmp_path / "e", settings).data_fingerprint == before
    label = tmp_path / "data" / "labels" / "val" / "img1.txt"
    label.write_text(label.read_text().replace("0.", "0.0", 1))
    assert prepare(data_yaml, tmp_path / "e", settings).data_fingerprint != before


def test_dvc_plot_data(evaluated):
    for folder in (evaluated.out / "plots", evaluated.out / "plots" / "baseline"):
        rows = list(csv.DictReader((folder / "pr_curve.csv").open()))
        assert len(rows) == 101 and rows[0]["recall"] == "0.000000" and rows[-1]["recall"] == "1.000000"
        expected = {"precision_oks_50_95", "precision_oks_50", "precision_oks_75", "precision_box_50"}
        assert expected <= set(rows[0])
        keypoints = list(csv.DictReader((folder / "keypoints.csv").open()))
        assert [r["keypoint"] for r in keypoints] == NAMES
        assert {"pck@0.05", "pck@0.1", "mean_px_error", "count"} <= set(keypoints[0])
    model_rows = list(csv.DictReader((evaluated.out / "plots" / "pr_curve.csv").open()))
    curve = evaluated.model.scores.pr_curves["oks@.50"]
    assert [float(r["precision_oks_50"]) for r in model_rows] == pytest.approx(curve, abs=1e-6)


def test_reports_show_the_numbers_settings_and_figures(evaluated):
    out = evaluated.out
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    model, baseline = evaluated.model.scores.metrics, evaluated.baseline.scores.metrics
    for text in (markdown, page):
        assert f"{model['oks_map']:.4f}" in text and f"{baseline['oks_map']:.4f}" in text
        assert f"{model['oks_map'] - baseline['oks_map']:+.4f}" in text  # the side-by-side difference
        assert f"{model['box_map50']:.4f}" in text
        assert "0.53 x ground-truth box area" in text
        assert "0.50:0.05:0.95" in text
        for name, sigma in zip(NAMES, SIGMAS, strict=True):
            assert name in text and f"{sigma:g}" in text
        assert "model - baseline" in text
    for name in ("pr_curves.png", "keypoints_critter.png", "worst.png", "best.png"):
        assert (out / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in markdown
    # Self-contained: every image is embedded and decodes as a PNG; nothing is fetched from elsewhere.
    embedded = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(embedded) == 4
    for data in embedded:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert not re.search(r"(src|href)=['\"](?!data:)", page)


def test_outputs_are_deterministic(evaluated, tmp_path):
    params = validate_section("eval", evaluated.settings, "test")
    again = prepare(evaluated.data_yaml, tmp_path / "again", params)
    for previous in evaluated.models:
        again.add_model(previous.label, previous.weights, previous.predictions)
    write_outputs(again)
    for name in ("metrics.json", "predictions.json", "ground_truth.json", "report.html", "report.md",
                 "plots/pr_curve.csv", "figures/worst.png"):
        assert (tmp_path / "again" / name).read_bytes() == (evaluated.out / name).read_bytes(), name


def test_worst_and_best_grids_show_different_images(evaluated):
    scores = evaluated.model.scores.image_scores
    worst, best = ranked_images(evaluated.model, 4)  # 3 images: one each, not the same one twice
    assert len(worst) == len(best) == 1 and not set(worst) & set(best)
    assert scores[worst[0]] == min(scores.values()) and scores[best[0]] == max(scores.values())


def test_relative_data_path(tmp_path, monkeypatch):
    build_dataset(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = prepare("data/data.yaml", "eval", EvalParams())
    assert len(result.images) == 3 and all(image.path.is_file() for image in result.images)


def test_reports_mark_placeholder_sigmas(tmp_path):
    """A layout whose names are not COCO's gets placeholder sigmas: the report's sigma table says so per
    keypoint and in its note, and metrics.json lists each sigma's source."""
    rng = np.random.default_rng(5)
    skeleton = Skeleton(["left_shoulder", "right_shoulder", "head", "neck"], class_names=["person"])
    dataset = Dataset(skeleton)
    (tmp_path / "src").mkdir()
    for index in range(2):
        path = tmp_path / "src" / f"img{index}.png"
        Image.new("RGB", (100, 100)).save(path)
        keypoints = np.c_[rng.uniform(20, 80, 4), rng.uniform(20, 80, 4), [2, 2, 2, 2]]
        instance = Instance(0, [10, 10, 90, 90], keypoints)
        dataset.images.append(ImageRecord(path, path.name, 100, 100, [instance],
                                          split="train" if index == 0 else "val"))
    data_yaml = write_yolo(dataset, tmp_path / "data")
    result = prepare(data_yaml, tmp_path / "eval", overridden(EvalParams(), grid_images=1))
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"model")
    result.add_model("model", weights, noisy_predictions(result.gt, 1.0, seed=1)[:-1])
    write_outputs(result)
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| left_shoulder | 0.079 | COCO |" in markdown and "| neck | 0.067 | PLACEHOLDER |" in markdown
    assert "2 of 4 sigmas are placeholders" in markdown
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["sigma_sources"] == ["coco", "coco", "placeholder", "placeholder"]
