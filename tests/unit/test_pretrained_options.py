"""A stock checkpoint converted onto an FDConv model whose YAML gives FDConv options (kernel_num 64, the
official FDConv configs' value, as compare/cfg/k64 does) gets FDConv layers built like the model's own,
and computes the stock model's function."""

from __future__ import annotations

from pathlib import Path

import torch
from ultralytics import YOLO

from pipeline.pretrained import load_pretrained_into, row_options

K64 = Path(__file__).resolve().parents[2] / "compare" / "cfg" / "k64" / "yolov8n-pose-C2f_FDConv.yaml"


def test_stock_weights_fill_a_kernel_num_64_model():
    stock = YOLO("yolov8n-pose.yaml").model.eval()
    model = YOLO(str(K64)).model.eval()
    assert row_options(model, 2) == {"kernel_num": 64} and row_options(model, 0) == {}
    report = load_pretrained_into(model, stock, source="stock")
    assert report.converted == ["model.2", "model.4", "model.6", "model.8"]
    assert model.model[2].m[0].cv2.conv.kernel_num == 64
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(image)[0], stock(image)[0], atol=1e-4)
