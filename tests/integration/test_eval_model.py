"""``fdpose eval`` with real models: a C2f_FDConv checkpoint against a stock YOLOv8n-pose baseline on a
tiny generated dataset, and models whose layout does not fit the dataset."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from pipeline.cli import main
from pipeline.config import EvalParams, overridden
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.evaluate import evaluate, predict_coco, prepare
from pipeline.formats.yolo import write_yolo
from pipeline.model_io import load_runner, load_yolo
from pipeline.skeleton import Skeleton

pytestmark = pytest.mark.slow

NAMES = ["nose", "left_ear", "right_ear", "tail"]


def build_dataset(root) -> str:
    """Four val images and one train image, 64 x 48, one or two labelled instances each."""
    rng = np.random.default_rng(11)
    dataset = Dataset(Skeleton(NAMES, class_names=["critter"], edges=[(0, 1), (0, 2), (0, 3)]))
    (root / "src").mkdir()
    for index in range(5):
        path = root / "src" / f"frame{index}.png"
        image = Image.new("RGB", (64, 48), (20 * index, 60, 90))
        ImageDraw.Draw(image).rectangle([8, 6, 40, 36], fill=(220, 200, 60))
        image.save(path)
        instances = []
        for _ in range(1 + index % 2):
            x0, y0 = rng.uniform(2, 20), rng.uniform(2, 14)
            x1, y1 = x0 + rng.uniform(16, 40), y0 + rng.uniform(14, 30)
            keypoints = np.c_[rng.uniform(x0, x1, 4), rng.uniform(y0, y1, 4), [2, 2, 2, 1]]
            instances.append(Instance(0, [x0, y0, x1, y1], keypoints))
        dataset.images.append(ImageRecord(path, path.name, 64, 48, instances,
                                          split="train" if index == 0 else "val"))
    return str(write_yolo(dataset, root / "data"))


def save_checkpoint(path, cfg: str, kpt_shape=(4, 3), nc: int = 1) -> str:
    """A randomly initialised pose model saved the way ultralytics' trainer saves one (half-precision
    EMA model plus train args), so ``YOLO(path)`` loads it like any trained checkpoint."""
    import torch
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(0)
    model = PoseModel(cfg, nc=nc, data_kpt_shape=kpt_shape, verbose=False)
    model.names = {i: f"class{i}" for i in range(nc)}
    torch.save({"model": None, "ema": model.half(), "train_args": {"task": "pose", "imgsz": 64}}, path)
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import pipeline.nn.ultralytics as integration

    root = tmp_path_factory.mktemp("eval_model")
    return {
        "root": root,
        "data": build_dataset(root),
        "fdconv": save_checkpoint(root / "fdconv.pt", str(integration.model_cfg("n"))),
        "stock": save_checkpoint(root / "stock.pt", "yolov8n-pose.yaml"),
    }


def test_eval_command_with_baseline(workspace):
    out = workspace["root"] / "eval"
    result = CliRunner().invoke(main, ["eval", "--weights", workspace["fdconv"], "--data", workspace["data"],
                                       "--out", str(out), "--baseline", workspace["stock"], "--imgsz", "64",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "model: OKS mAP" in result.output and "baseline: OKS mAP" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    baseline_predictions = json.loads((out / "baseline" / "predictions.json").read_text())
    assert predictions and baseline_predictions
    assert metrics["num_images"] == 4 and metrics["num_instances"] == 6
    for numbers, preds in ((metrics, predictions), (metrics["baseline"], baseline_predictions)):
        assert numbers["num_predictions"] == len(preds)
        assert set(numbers["ultralytics"]) == {"pose_map", "pose_map50", "box_map", "box_map50"}
        assert all(0.0 <= v <= 1.0 for v in numbers["ultralytics"].values())
    first = predictions[0]
    assert len(first["keypoints"]) == 3 * len(NAMES) and len(first["bbox"]) == 4
    assert {p["image_id"] for p in predictions} <= {1, 2, 3, 4}
    # The OKS mAP is pycocotools' on the three written files.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(out / "ground_truth.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(out / "predictions.json")), "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(metrics["sigmas"])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert metrics["oks_map"] == pytest.approx(evaluator.stats[0], abs=1e-6)
    page = (out / "report.html").read_text()
    assert "stock.pt" in page and "fdconv.pt" in page and "own validation (for comparison)" in page
    assert (out / "plots" / "baseline" / "pr_curve.csv").exists()


def test_predictions_are_deterministic_on_cpu(workspace):
    settings = EvalParams()
    result = prepare(workspace["data"], workspace["root"] / "unused", settings)
    first = predict_coco(load_runner(workspace["fdconv"]), result.images, result.gt, settings, 64)
    assert first
    assert first == predict_coco(load_runner(workspace["fdconv"]), result.images, result.gt, settings, 64)


@pytest.mark.parametrize(("kpt_shape", "nc", "reason"), [((5, 3), 1, "kpt_shape"), ((4, 2), 1, "kpt_shape"),
                                                         ((4, 3), 2, "classes")])
def test_model_with_another_layout_is_rejected(workspace, tmp_path, kpt_shape, nc, reason):
    weights = save_checkpoint(tmp_path / "other.pt", "yolov8n-pose.yaml", kpt_shape=kpt_shape, nc=nc)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("previous")
    result = CliRunner().invoke(main, ["eval", "--weights", weights, "--data", workspace["data"],
                                       "--out", str(out), "--imgsz", "64"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "other.pt" in result.output and reason in result.output
    assert (out / "metrics.json").read_text() == "previous"  # nothing previously written is lost
    # As a baseline it is refused as well, before anything is predicted.
    with pytest.raises(FdposeError, match=reason):
        evaluate(workspace["fdconv"], workspace["data"], tmp_path / "eval2", EvalParams(), baseline=weights)
    assert not (tmp_path / "eval2").exists()


def test_missing_weights_and_split(workspace, tmp_path):
    with pytest.raises(FdposeError, match="nope.pt: no such checkpoint file"):
        evaluate(tmp_path / "nope.pt", workspace["data"], tmp_path / "eval", EvalParams())
    with pytest.raises(FdposeError, match="split 'test' has no images"):
        evaluate(workspace["fdconv"], workspace["data"], tmp_path / "eval",
                 overridden(EvalParams(), split="test"))


def test_unusable_checkpoints_are_one_clear_error(workspace, tmp_path):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FdposeError, match="garbage.pt: not a loadable ultralytics checkpoint"):
        load_yolo(garbage)
    detector = tmp_path / "detector.pt"
    torch.save({"model": None, "ema": DetectionModel("yolov8n.yaml", nc=1, verbose=False).half(),
                "train_args": {"task": "detect"}}, detector)
    with pytest.raises(FdposeError, match="detector.pt: a 'detect' model, not a pose model"):
        load_yolo(detector)


@pytest.mark.parametrize("family_yaml", ["yolov8n-pose-C2f_FDConv.yaml", "yolo11n-pose-C3k2_FDConv.yaml",
                                         "yolo26n-pose-C3k2_FDConv.yaml"])
def test_every_fdconv_family_packages_with_checked_onnx(workspace, family_yaml):
    """The package stage exports each family's FDConv model and onnxruntime agrees with PyTorch."""
    from pipeline.config import PackageParams
    from pipeline.package.archive import verify
    from pipeline.package.stage import package

    name = family_yaml.removesuffix(".yaml")
    weights = save_checkpoint(workspace["root"] / f"{name}.pt", family_yaml)
    result = package(weights, None, workspace["root"] / f"package-{name}", PackageParams(imgsz=64),
                     data=workspace["data"])
    assert (result.out / "model.onnx").is_file()
    onnx_check = next(check for check in result.checks if check.format == "ONNX")
    assert onnx_check.relative <= onnx_check.tolerance
    assert verify(result.archive).ok
