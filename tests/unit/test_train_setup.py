"""``fdpose train`` pieces that need no training: device choice, offline guards (fonts, AMP check,
ultralytics' DVC callback), metric names, parameter checks and the command's bad-input errors."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import pipeline.train as stage
from pipeline.cli import main
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


def test_local_font_replaces_the_download(monkeypatch):
    import ultralytics.data.utils
    import ultralytics.utils.downloads
    import ultralytics.utils.plotting

    font = stage.local_font("Arial.ttf")
    assert font.is_file() and font.suffix == ".ttf"
    assert stage.local_font(font) == font

    def no_network(*args, **kwargs):
        raise AssertionError("ultralytics tried to reach the network for a font")

    monkeypatch.setattr(ultralytics.utils.downloads, "is_url", no_network)
    monkeypatch.setattr(ultralytics.utils.downloads, "safe_download", no_network)
    stage.install_guards()
    assert ultralytics.data.utils.check_font("Arial.Unicode.ttf") == font
    # Plot labels draw with it (the PIL path ultralytics takes for non-ASCII class names).
    annotator = ultralytics.utils.plotting.Annotator(np.zeros((64, 64, 3), np.uint8), pil=True, example="é")
    assert Path(annotator.font.path) == font  # not PIL's fallback font
    annotator.box_label([4, 4, 40, 40], "ñandú")
    assert annotator.result().shape == (64, 64, 3)


class _Head(nn.Module):
    """A tiny detector-like model: a conv with a ``stride`` attribute, as the AMP probe expects."""

    def __init__(self, fail_in_half: bool = False, nan: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("stride", torch.tensor([8.0]))
        self.fail_in_half, self.nan = fail_in_half, nan

    def forward(self, x):
        if self.fail_in_half and torch.is_autocast_enabled(x.device.type):
            raise RuntimeError("cuFFT only supports dimensions whose sizes are powers of two")
        y = self.conv(x)
        return (y * float("nan"), y) if self.nan and torch.is_autocast_enabled(x.device.type) else (y, x)


def test_amp_probe_compares_float32_and_autocast_without_randomness():
    cpu = torch.device("cpu")
    model = _Head()
    state = torch.random.get_rng_state()
    assert stage.amp_outputs_agree(model, cpu, dtype=torch.bfloat16, imgsz=32)
    assert torch.equal(state, torch.random.get_rng_state())  # training's RNG stream is untouched
    assert not stage.amp_outputs_agree(_Head(fail_in_half=True), cpu, dtype=torch.bfloat16, imgsz=32)
    assert not stage.amp_outputs_agree(_Head(nan=True), cpu, dtype=torch.bfloat16, imgsz=32)


def test_offline_amp_check(monkeypatch):
    assert stage.offline_check_amp(_Head()) is False  # CPU training never uses AMP
    # On a GPU from ultralytics' list of broken-AMP cards, AMP is off without running anything.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1660 Ti")
    probe_calls = []
    monkeypatch.setattr(stage, "amp_outputs_agree", lambda *a, **k: probe_calls.append(a) or True)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 0))
    fake = types.SimpleNamespace(parameters=lambda: iter([on_gpu]))
    assert stage.offline_check_amp(fake) is False and probe_calls == []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert stage.offline_check_amp(fake) is True and len(probe_calls) == 1


def test_offline_guards_replace_ultralytics_checks():
    import ultralytics.engine.trainer
    import ultralytics.utils.callbacks

    stage.install_guards()
    stage.install_guards()  # idempotent: the callback wrapper is not stacked
    assert ultralytics.engine.trainer.check_amp is stage.offline_check_amp
    wrapper = ultralytics.utils.callbacks.add_integration_callbacks
    assert not hasattr(wrapper.fdpose_wrapped, "fdpose_wrapped")


def test_ultralytics_dvc_callback_is_dropped_for_our_trainer_only():
    def dvc_callback(trainer):
        pass

    def other_callback(trainer):
        pass

    dvc_callback.__module__ = "ultralytics.utils.callbacks.dvc"

    def add(instance):
        instance.callbacks["on_train_end"] += [dvc_callback, other_callback]

    wrapped = stage._without_ultralytics_dvc(add)
    ours = stage.FdposePoseTrainer.__new__(stage.FdposePoseTrainer)
    ours.callbacks = {"on_train_end": []}
    wrapped(ours)
    assert ours.callbacks["on_train_end"] == [other_callback]
    theirs = types.SimpleNamespace(callbacks={"on_train_end": []})
    wrapped(theirs)
    assert theirs.callbacks["on_train_end"] == [dvc_callback, other_callback]


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


def test_model_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert stage._model_argument("yolov8n-pose.yaml") == "yolov8n-pose.yaml"  # ultralytics' own, by name
    # The default model resolves from any directory: the working directory first, then the project.
    project_model = stage.PROJECT_ROOT / "cfg/models/yolov8n-pose-C2f_FDConv.yaml"
    assert stage._model_argument("cfg/models/yolov8n-pose-C2f_FDConv.yaml") == str(project_model)
    (tmp_path / "cfg/models").mkdir(parents=True)
    (tmp_path / "cfg/models/yolov8-pose-C2f_FDConv.yaml").write_text("nc: 1\n")
    assert stage._model_argument("cfg/models/yolov8s-pose-C2f_FDConv.yaml") == \
        str(tmp_path / "cfg/models/yolov8s-pose-C2f_FDConv.yaml")
    with pytest.raises(FdposeError, match="nowhere/model.yaml: model YAML not found"):
        stage._model_argument("nowhere/model.yaml")
    with pytest.raises(FdposeError, match="missing.pt: model checkpoint not found"):
        stage._model_argument("missing.pt")
    with pytest.raises(FdposeError, match="expected a model YAML or a .pt checkpoint"):
        stage._model_argument("model.onnx")


def _dataset(root: Path, with_val: bool = True) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    if with_val:
        (root / "images" / "val").mkdir(parents=True)
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
    assert outcome.exit_code == 1 and "train: unknown key(s) ['learning_rate']" in outcome.output

    outcome = runner.invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--resume",
                                   "--device", "cpu"])
    assert outcome.exit_code == 1 and "--resume: no interrupted run to resume" in outcome.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_params_file_sets_the_defaults(tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(stage, "train", lambda *args, **kwargs: calls.update(args=args, kwargs=kwargs) or
                        types.SimpleNamespace(metrics={}, epochs=1, device="cpu", out_dir=tmp_path))
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 7\n  imgsz: 96\n  hyp: {mosaic: 0.0}\n")
    outcome = CliRunner().invoke(main, ["train", "--data", "d.yaml", "--out", "run", "--params", str(params),
                                        "--imgsz", "128"])
    assert outcome.exit_code == 0, outcome.output
    assert calls["args"] == (Path("d.yaml"), Path("run"), stage.DEFAULTS["model"])
    kwargs = calls["kwargs"]
    assert kwargs["epochs"] == 7 and kwargs["imgsz"] == 128 and kwargs["hyp"] == {"mosaic": 0.0}
    assert kwargs["device"] == "auto" and kwargs["batch"] == stage.DEFAULTS["batch"]

    # Resuming keeps the run's own settings: the params file does not override them.
    outcome = CliRunner().invoke(main, ["train", "--data", "d.yaml", "--out", "run", "--params", str(params),
                                        "--resume", "--batch", "2"])
    assert outcome.exit_code == 0, outcome.output
    kwargs = calls["kwargs"]
    assert kwargs["resume"] is True and kwargs["batch"] == 2 and kwargs["device"] == "auto"
    assert kwargs["epochs"] is None and kwargs["imgsz"] is None and "hyp" not in kwargs


def test_repository_params_match_the_built_in_defaults():
    from pipeline.config import load_params

    params = load_params("train", Path(__file__).resolve().parents[2] / "cfg" / "params.yaml")
    assert set(params) == set(stage.DEFAULTS)
    assert params["model"] == "cfg/models/yolov8n-pose-C2f_FDConv.yaml"
