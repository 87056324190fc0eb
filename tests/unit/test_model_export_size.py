"""An FDConv model's packaged ONNX file and OpenVINO weights are about its stock twin's size (issue 25)."""

from __future__ import annotations

import os
import warnings

import pytest

from pipeline.nn.info import FAMILY_MODELS

SIZE_LIMIT = 1.2  # model.onnx of the n model at most 1.2x the stock twin's ONNX exported by ultralytics


@pytest.mark.filterwarnings("ignore")
def test_n_model_onnx_is_at_most_1_2x_its_stock_twins_ultralytics_onnx(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from ultralytics import YOLO

    from pipeline.bench.deploy import twin_models
    from pipeline.package.export import export_onnx

    models, meta = twin_models(FAMILY_MODELS["YOLOv8"], "n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = export_onnx(models["fdconv"], meta, 320, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)  # ultralytics writes next to the model YAML's name, in the working folder
    # ultralytics' own YOLOv8n-pose: the stock twin's architecture (the same YAML, scale n, 17x3 keypoints).
    stock = YOLO("yolov8n-pose.yaml")
    count = [sum(p.numel() for p in model.parameters()) for model in (stock.model, models["stock"])]
    assert count[0] == count[1]
    twin = stock.export(format="onnx", dynamic=True, simplify=False, imgsz=320, device="cpu")
    ratio = os.path.getsize(ours) / os.path.getsize(twin)
    assert ratio <= SIZE_LIMIT, f"model.onnx is {ratio:.2f}x its stock twin's ONNX"


@pytest.mark.filterwarnings("ignore")
def test_n_model_openvino_weights_are_at_most_1_2x_its_stock_twins(tmp_path):
    """The IR keeps FDConv's basis kernels as the graph rebuilds them (OpenVINO's conversion would fold
    them into kernel_num constants per layer: 2.1x); the CPU plugin folds them when it compiles."""
    pytest.importorskip("openvino")
    from pipeline.bench.deploy import twin_models
    from pipeline.package.export import export_onnx, export_openvino

    models, meta = twin_models(FAMILY_MODELS["YOLOv8"], "n")
    sizes = {}
    for name, model in models.items():
        (tmp_path / name).mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_path = export_onnx(model, meta, 320, tmp_path / name / "model.onnx")
        xml_path = export_openvino(onnx_path, tmp_path / name / "model.xml")
        sizes[name] = os.path.getsize(xml_path.with_suffix(".bin"))
    ratio = sizes["fdconv"] / sizes["stock"]
    assert ratio <= SIZE_LIMIT, f"model.bin is {ratio:.2f}x its stock twin's"
