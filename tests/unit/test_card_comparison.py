"""The model card says whether a comparison was run and links its verdict (or says none was); a folder
that is not a compare report is one clear error."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import FdposeError
from pipeline.inference import ModelMeta
from pipeline.package.card import DataInfo, model_card
from pipeline.package.export import ExportCheck
from pipeline.package.stage import read_comparison
from pipeline.skeleton import Skeleton

META = ModelMeta(Skeleton(["l_eye", "r_eye"], class_names=["person"], kpt_dims=3, edges=[(0, 1)],
                          flip_permutation=[1, 0], sigmas=[0.025, 0.025]), imgsz=320, stride=32)


def card(comparison):
    return model_card(weights_name="w.pt", weights_sha256="0" * 64, checkpoint={}, meta=META, architecture={},
                      parameters=1, data=DataInfo(source="checkpoint attributes"), metrics=None, report=None,
                      checks=[ExportCheck("i.png", 0.0, 1.0, 0.0, 1e-4)], opset=17, comparison=comparison)


def test_card_without_a_comparison_says_none_was_run():
    text = card(None)
    assert "## Comparison with the stock model" in text and "No comparison was run" in text
    assert "--comparison" in text


def test_card_links_the_comparison_verdict(tmp_path):
    verdict = "OKS mAP: no significant difference between fd and stock (...); small effects missed."
    settings = {"models": ["yolov8n-pose-C2f_FDConv.yaml", "yolov8n-pose.yaml"], "seeds": list(range(8)),
                "pretrained": "models/pretrain.pt", "data": "data/target/augmented/data.yaml"}
    summary = {"verdict": verdict, "settings": settings}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "report.md").write_text("# Comparison\n")
    text = card(read_comparison(tmp_path))
    assert ("A comparison was run: `yolov8n-pose-C2f_FDConv.yaml` against `yolov8n-pose.yaml`, 8 paired "
            "seeds, from `models/pretrain.pt`") in text
    assert verdict in text and "[comparison/report.md](comparison/report.md)" in text


def test_a_folder_that_is_not_a_compare_report_is_refused(tmp_path):
    with pytest.raises(FdposeError, match="not an fdpose compare report folder"):
        read_comparison(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    (tmp_path / "report.md").write_text("x")
    with pytest.raises(FdposeError, match="no verdict"):
        read_comparison(tmp_path)
