"""``fdpose train`` pieces that need no training: device choice, DVCLive logging, metric names,
parameter checks and the command's bad-input errors. (The offline guards and model-name resolution
live in the ultralytics adapter: tests/unit/test_ultralytics_adapter.py.)"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import pipeline.train as stage
from pipeline.cli import main
from pipeline.config import as_dict, load_section, section_defaults
from pipeline.errors import FdposeError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: f"Test GPU {index}")


def test_auto_device_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stage.resolve_device("auto") == ("cpu", "device auto -> CPU (no CUDA device available)")
    assert stage.resolve_device(None)[0] == "cpu"
    assert stage.resolve_device("CPU") == ("cpu", "device cpu")
    with pytest.raises(FdposeError, match=r"--device 0: GPU 0 not available \(0 CUDA devices found\)"):
        stage.resolve_device("0")


def test_gpu_devices(two_gpus):
    assert stage.resolve_device("auto") == ("0", "device auto -> CUDA:0 (Test GPU 0)")
    assert stage.resolve_device("1") == ("1", "device 1 -> CUDA:1 (Test GPU 1)")
    device, line = stage.resolve_device("0, 1")
    assert device == "0,1" and "DDP over CUDA:0 (Test GPU 0), CUDA:1 (Test GPU 1)" in line
    with pytest.raises(FdposeError, match="GPU 2 not available"):
        stage.resolve_device("0,2")
    for bad in ("gpu", "0,0", "-1", "0;1"):
        with pytest.raises(FdposeError, match="expected auto, cpu"):
            stage.resolve_device(bad)


def test_dvclive_logging_is_optional(monkeypatch):
    import sys

    assert stage.DvcLiveLogger.available()  # installed with fdpose: on by default
    monkeypatch.setitem(sys.modules, "dvclive", None)  # as if not installed
    assert not stage.DvcLiveLogger.available()


def test_final_metrics_by_name():
    trainer = types.SimpleNamespace(
        tloss=torch.tensor([1.5, 2.0]),
        label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": 1.5, f"{prefix}/pose_loss": 2.0},
        metrics={"metrics/precision(B)": 0.5, "metrics/mAP50-95(B)": 0.25, "metrics/mAP50(P)": 0.75},
        epoch=4, stopper=types.SimpleNamespace(best_epoch=3), best_fitness=0.3,
    )
    last_epoch = {"val/pose_loss": 3.0, "metrics/mAP50(P)": 0.1, "lr/pg0": 0.01}
    assert stage.final_metrics(trainer, last_epoch) == {
        "box": {"precision": 0.5, "mAP50-95": 0.25},
        "pose": {"mAP50": 0.75},  # best.pt's final validation, not the last epoch's
        "train_loss": {"box_loss": 1.5, "pose_loss": 2.0},
        "val_loss": {"pose_loss": 3.0},
        "epochs": 5, "best_epoch": 3, "best_fitness": 0.3,
    }


def test_layout_mismatch_reasons():
    model = stage.Layout([17, 3], ["person"])
    assert model.mismatch(stage.Layout([17, 3], ["human"])) is None  # names may differ, counts may not
    assert model.mismatch(stage.Layout([17, 2], ["person"])) == "kpt_shape [17, 3] vs the dataset's [17, 2]"
    assert "1 classes ['person'] vs the dataset's 2" in model.mismatch(stage.Layout([17, 3], ["a", "b"]))


def test_hyp_keys_are_checked():
    assert stage._hyp_overrides({"lr0": 0.02, "mosaic": 0.0}, "p.yaml") == {"lr0": 0.02, "mosaic": 0.0}
    with pytest.raises(FdposeError, match="p.yaml: train.hyp.lr_zero: not an ultralytics train argument"):
        stage._hyp_overrides({"lr_zero": 1}, "p.yaml")
    with pytest.raises(FdposeError, match="train.hyp.epochs: 'epochs' is set by fdpose train itself"):
        stage._hyp_overrides({"epochs": 3}, "p.yaml")


def _dataset(root: Path, with_val: bool = True) -> Path:
    """A data.yaml with one (unlabelled) image per split: empty splits are refused first."""
    for split in ("train", "val") if with_val else ("train",):
        (root / "images" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(root / "images" / split / "a.png")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0: blob}\n"
                                    "kpt_shape: [3, 3]\nflip_idx: [1, 0, 2]\n")
    return root / "data.yaml"


def test_command_bad_input_is_one_error_line(tmp_path):
    runner = CliRunner()
    data = _dataset(tmp_path / "no-val", with_val=False)
    outcome = runner.invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run")])
    assert outcome.exit_code == 1
    assert outcome.output.strip().splitlines()[-1].startswith(f"Error: {data}: 'val' folder")

    data = _dataset(tmp_path / "ok")
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 1\n  learning_rate: 3\n")
    outcome = runner.invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                                   "--params", str(params)])
    assert outcome.exit_code == 1 and "train.learning_rate: unknown key 'learning_rate'" in outcome.output

    outcome = runner.invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--resume",
                                   "--device", "cpu"])
    assert outcome.exit_code == 1 and "--resume: no interrupted run to resume" in outcome.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_params_file_sets_the_defaults(tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(stage, "train", lambda *args, **kwargs: calls.update(args=args, kwargs=kwargs) or
                        stage.TrainResult(out=tmp_path, best=tmp_path / "best.pt", last=tmp_path / "last.pt",
                                          metrics={}, device="cpu", epochs=1))
    params_file = tmp_path / "params.yaml"
    params_file.write_text("train:\n  epochs: 7\n  imgsz: 96\n  hyp: {mosaic: 0.0}\n")
    outcome = CliRunner().invoke(main, ["train", "--data", "d.yaml", "--out", "run",
                                        "--params", str(params_file), "--imgsz", "128"])
    assert outcome.exit_code == 0, outcome.output
    data, out, params = calls["args"]
    assert (data, out, params.model) == (Path("d.yaml"), Path("run"), section_defaults("train")["model"])
    assert params.epochs == 7 and params.imgsz == 128 and params.hyp == {"mosaic": 0.0}
    assert params.device == "auto" and params.batch == section_defaults("train")["batch"]

    # Resuming keeps the run's own settings: the params file does not override them.
    outcome = CliRunner().invoke(main, ["train", "--data", "d.yaml", "--out", "run",
                                        "--params", str(params_file), "--resume", "--batch", "2"])
    assert outcome.exit_code == 0, outcome.output
    kwargs, params = calls["kwargs"], calls["args"][2]
    assert kwargs["resume"] is True and params.batch == 2 and params.device == "auto"
    given = kwargs["given"]
    assert "batch" in given and "epochs" not in given and "imgsz" not in given and "hyp" not in given


def test_repository_params_match_the_built_in_defaults():
    params = load_section("train", Path(__file__).resolve().parents[2] / "cfg" / "params.yaml")
    assert set(as_dict(params)) == set(section_defaults("train"))
    assert params.model == "cfg/models/yolov8n-pose-C2f_FDConv.yaml"
