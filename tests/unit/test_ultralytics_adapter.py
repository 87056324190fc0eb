"""The ultralytics adapter's run guards (fonts, AMP check, ultralytics' DVC callback) and model-name
resolution, moved here from the train stage's tests with the code they test."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pipeline.nn.ultralytics as adapter
from pipeline.errors import FdposeError
from pipeline.train import FdposePoseTrainer


def test_local_font_replaces_the_download(monkeypatch):
    import ultralytics.data.utils
    import ultralytics.utils.downloads
    import ultralytics.utils.plotting

    font = adapter.local_font("Arial.ttf")
    assert font.is_file() and font.suffix == ".ttf"
    assert adapter.local_font(font) == font

    def no_network(*args, **kwargs):
        raise AssertionError("ultralytics tried to reach the network for a font")

    monkeypatch.setattr(ultralytics.utils.downloads, "is_url", no_network)
    monkeypatch.setattr(ultralytics.utils.downloads, "safe_download", no_network)
    adapter.install_guards()
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
    assert adapter.amp_outputs_agree(model, cpu, dtype=torch.bfloat16, imgsz=32)
    assert torch.equal(state, torch.random.get_rng_state())  # training's RNG stream is untouched
    assert not adapter.amp_outputs_agree(_Head(fail_in_half=True), cpu, dtype=torch.bfloat16, imgsz=32)
    assert not adapter.amp_outputs_agree(_Head(nan=True), cpu, dtype=torch.bfloat16, imgsz=32)


def test_offline_amp_check(monkeypatch):
    assert adapter.offline_check_amp(_Head()) is False  # CPU training never uses AMP
    # On a GPU from ultralytics' list of broken-AMP cards, AMP is off without running anything.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1660 Ti")
    probe_calls = []
    monkeypatch.setattr(adapter, "amp_outputs_agree", lambda *a, **k: probe_calls.append(a) or True)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 0))
    fake = types.SimpleNamespace(parameters=lambda: iter([on_gpu]))
    assert adapter.offline_check_amp(fake) is False and probe_calls == []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert adapter.offline_check_amp(fake) is True and len(probe_calls) == 1


def test_offline_guards_replace_ultralytics_checks():
    import ultralytics.engine.trainer
    import ultralytics.utils.callbacks

    adapter.install_guards()
    adapter.install_guards()  # idempotent: the callback wrapper is not stacked
    assert ultralytics.engine.trainer.check_amp is adapter.offline_check_amp
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

    wrapped = adapter.without_ultralytics_dvc(add)
    ours = FdposePoseTrainer.__new__(FdposePoseTrainer)
    ours.callbacks = {"on_train_end": []}
    wrapped(ours)
    assert ours.callbacks["on_train_end"] == [other_callback]
    theirs = types.SimpleNamespace(callbacks={"on_train_end": []})
    wrapped(theirs)
    assert theirs.callbacks["on_train_end"] == [dvc_callback, other_callback]


def test_model_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert adapter.model_argument("yolov8n-pose.yaml") == "yolov8n-pose.yaml"  # ultralytics' own, by name
    # The default model resolves from any directory: the working directory first, then the shipped files.
    shipped = adapter.MODELS_DIR / "yolov8n-pose-C2f_FDConv.yaml"
    assert adapter.model_argument("cfg/models/yolov8n-pose-C2f_FDConv.yaml") == str(shipped)
    for name in ("yolov8s-pose-C2f_FDConv.yaml", "yolo26s-pose-C3k2_FDConv.yaml"):  # by bare name, too
        assert adapter.model_argument(name) == str(adapter.MODELS_DIR / name)
    (tmp_path / "cfg/models").mkdir(parents=True)
    (tmp_path / "cfg/models/yolov8-pose-C2f_FDConv.yaml").write_text("nc: 1\n")
    assert adapter.model_argument("cfg/models/yolov8s-pose-C2f_FDConv.yaml") == \
        str(tmp_path / "cfg/models/yolov8s-pose-C2f_FDConv.yaml")
    with pytest.raises(FdposeError, match="nowhere/model.yaml: model YAML not found"):
        adapter.model_argument("nowhere/model.yaml")
    with pytest.raises(FdposeError, match="missing.pt: model checkpoint not found"):
        adapter.model_argument("missing.pt")
    with pytest.raises(FdposeError, match="expected a model YAML or a .pt checkpoint"):
        adapter.model_argument("model.onnx")

