"""The packaged ONNX file of an FDConv model is about the size of its stock twin's (issue 25)."""

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
