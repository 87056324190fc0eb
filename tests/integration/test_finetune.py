"""Fine-tuning from a stock 17-keypoint pose checkpoint (trained here, briefly) into the FDConv model of
the same family on a 5-keypoint, 2-class dataset, for YOLOv8, YOLO11 and YOLO26, through `fdpose train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_model_train import make_dataset  # pytest puts tests/integration on sys.path

from pipeline.cli import main
from pipeline.config import TrainParams
from pipeline.train import train

REPO = Path(__file__).resolve().parents[2]
SMALL = {"imgsz": 64, "batch": 4, "device": "cpu", "seed": 0, "workers": 0, "epochs": 1, "plots": False}
FAMILIES = {  # family -> (stock YAML, FDConv model, FDConv block, pose head)
    "YOLOv8": ("yolov8n-pose.yaml", "yolov8n-pose-C2f_FDConv.yaml", "C2f_FDConv", "Pose"),
    "YOLO11": ("yolo11n-pose.yaml", "yolo11n-pose-C3k2_FDConv.yaml", "C3k2_FDConv", "Pose"),
    "YOLO26": ("yolo26n-pose.yaml", "yolo26n-pose-C3k2_FDConv.yaml", "C3k2_FDConv", "Pose26"),
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune-data")
    return {"coco17": make_dataset(root / "coco17", counts={"train": 4, "val": 2}),
            "five": make_dataset(root / "five", counts={"train": 4, "val": 2}, num_keypoints=5,
                                 names=("corner", "notch"))}


@pytest.fixture(scope="module")
def stock_runs(tmp_path_factory, datasets) -> dict[str, Path]:
    """Per family, the best.pt of a stock 17-keypoint, 1-class model trained for one epoch."""
    root = tmp_path_factory.mktemp("stock-runs")
    return {family: train(datasets["coco17"], root / family, TrainParams(model=stock, **SMALL)).best
            for family, (stock, *_) in FAMILIES.items()}


def _layer_types(checkpoint: Path) -> list[str]:
    """The layer classes of a checkpoint, loaded in a fresh interpreter after `import pipeline`."""
    code = ("import sys, pipeline\nfrom ultralytics import YOLO\nm = YOLO(sys.argv[1]).model\n"
            "print(' '.join(type(l).__name__ for l in m.model), list(m.model[-1].kpt_shape), m.model[-1].nc)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, str(checkpoint)], cwd=checkpoint.parent, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_a_stock_17_keypoint_checkpoint_onto_5_keypoints_and_2_classes(
        family, datasets, stock_runs, tmp_path, caplog):
    _, fdconv_model, block, head = FAMILIES[family]
    result = train(datasets["five"], tmp_path / "run",
                   TrainParams(model=fdconv_model, pretrained=str(stock_runs[family]), **SMALL))
    conversion = json.loads((result.out / "pretrained.json").read_text())
    assert conversion == result.conversion and conversion["family"] == family
    assert conversion["source_kpt_shape"] == [17, 3] and conversion["target_kpt_shape"] == [5, 3]
    assert conversion["source_nc"] == 1 and conversion["target_nc"] == 2
    assert conversion["converted"] == ["model.2", "model.4", "model.6", "model.8"]
    last = f"model.{len(conversion['copied']) + len(conversion['converted']) - 1}"
    assert {f"{last}.cv3", f"{last}.cv4"} <= set(conversion["reinitialised"])  # classes, keypoints
    assert f"{last}.cv2" not in conversion["reinitialised"]  # boxes: copied
    summary = [record.getMessage() for record in caplog.records if "Pretrained from" in record.getMessage()]
    assert len(summary) == 1 and "4 layers converted to FDConv blocks" in summary[0]
    assert f"{last}.cv4" in summary[0]
    assert (result.out / "metrics.json").is_file()

    types = _layer_types(result.best)  # the fine-tuned model loads in a fresh process
    assert [i for i, name in enumerate(types) if name == block] == [2, 4, 6, 8]
    assert types[-4:] == [head, "[5,", "3]", "2"]  # pose head, its kpt_shape and nc


def test_stock_checkpoint_as_model_fine_tunes_onto_another_layout(datasets, stock_runs, tmp_path):
    """`--model stock.pt` with another layout follows the same rule: the layout's head branches restart."""
    result = train(datasets["five"], tmp_path / "run", TrainParams(model=str(stock_runs["YOLOv8"]), **SMALL))
    assert result.conversion["converted"] == [] and {"model.22.cv3", "model.22.cv4"} == set(
        result.conversion["reinitialised"])
    assert "C2f" in _layer_types(result.best)


def test_checkpoint_of_another_family_is_refused_in_one_line(datasets, stock_runs, tmp_path):
    args = ["train", "--data", str(datasets["five"]), "--out", str(tmp_path / "run"), "--model",
            "yolo26n-pose-C3k2_FDConv.yaml", "--pretrained", str(stock_runs["YOLOv8"]), "--device", "cpu"]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 1
    assert outcome.output.strip().splitlines()[-1] == (
        f"Error: {stock_runs['YOLOv8']}: checkpoint is a YOLOv8 model, the model a YOLO26 one: "
        "fine-tuning needs a checkpoint of the same family (and scale)")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
