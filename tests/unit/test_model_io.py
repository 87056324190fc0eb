"""Every model loader answers an unusable file with one error naming it; one model-vs-dataset check."""

from __future__ import annotations

import zipfile

import pytest

from pipeline.errors import FdposeError
from pipeline.model_io import (
    FIT_REQUIRES,
    Layout,
    check_fits,
    load_checkpoint,
    load_model,
    load_runner,
    load_yolo,
    read_onnx_meta,
    read_package_yaml,
)

LOADERS = [load_checkpoint, load_model, load_yolo, load_runner]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
def test_missing_and_garbage_checkpoints_read_the_same_for_every_loader(loader, tmp_path):
    with pytest.raises(FdposeError, match="missing.pt: no such checkpoint file$"):
        loader(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FdposeError, match="junk.pt: not a loadable ultralytics checkpoint \\("):
        loader(junk)


def test_a_detection_checkpoint_is_not_a_pose_model(tmp_path):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    detector = tmp_path / "detector.pt"
    torch.save({"model": None, "ema": DetectionModel("yolov8n.yaml", nc=1, verbose=False).half(),
                "train_args": {"task": "detect"}}, detector)
    for loader in LOADERS:
        with pytest.raises(FdposeError, match="detector.pt: a 'detect' model, not a pose model"):
            loader(detector)


def test_runner_inputs_other_than_models_are_refused(tmp_path):
    with pytest.raises(FdposeError, match="pkg: no such model package"):
        load_runner(tmp_path / "pkg")
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FdposeError, match="model.yaml not found \\(not an fdpose package\\?\\)"):
        load_runner(tmp_path / "pkg")
    (tmp_path / "pkg" / "model.yaml").write_text("format: something-else\n")
    with pytest.raises(FdposeError, match="not an fdpose-model/1 file"):
        read_package_yaml(tmp_path / "pkg")
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(FdposeError, match="expected a package directory or .zip"):
        load_runner(tmp_path / "weights.h5")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(FdposeError, match="bad.onnx: not a readable ONNX model"):
        read_onnx_meta(tmp_path / "bad.onnx")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(FdposeError, match="bad.zip: not a readable zip archive"):
        load_runner(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a/model.yaml", "")
        archive.writestr("b/model.yaml", "")
    with pytest.raises(FdposeError, match="two.zip: not an fdpose package archive"):
        load_runner(tmp_path / "two.zip")


def test_layout_mismatch_reasons():
    model = Layout([17, 3], ["person"])
    assert model.mismatch(Layout([17, 3], ["human"])) is None  # names may differ, counts may not
    assert model.mismatch(Layout([17, 2], ["person"])) == "kpt_shape [17, 3] vs the dataset's [17, 2]"
    assert "1 classes ['person'] vs the dataset's 2" in model.mismatch(Layout([17, 3], ["a", "b"]))
    assert model.mismatch(Layout([5, 2], ["a", "b"]), frozenset()) is None  # a role that requires nothing


def test_check_fits_names_the_role_and_files_and_warns_about_names():
    data = Layout([4, 3], ["critter"])
    with pytest.raises(FdposeError) as error:
        check_fits(Layout([5, 3], ["critter"]), data, role="baseline", model_path="stock.pt",
                   data_path="data.yaml")
    assert str(error.value) == ("stock.pt: baseline checkpoint does not fit the dataset data.yaml: "
                                "kpt_shape [5, 3] vs the dataset's [4, 3]")
    warnings = check_fits(Layout([4, 3], ["blob"]), data, role="model", model_path="m.pt", data_path="d")
    assert warnings == ["model checkpoint m.pt names its classes ['blob'], the dataset ['critter']; "
                        "training uses the dataset's names"]
    assert check_fits(Layout([4, 3], ["critter"]), data, role="resumed", model_path="m", data_path="d") == []
    assert set(FIT_REQUIRES) == {"model", "baseline", "resumed", "pretrained", "packaged"}
