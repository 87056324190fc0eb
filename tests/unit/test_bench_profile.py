"""``fdpose bench profile``: both runtimes' profiles of both twins, the FDConv layers' share, never a time."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from pipeline.bench.deploy import families, twin_models
from pipeline.bench.profile import bench_profile, fdconv_layer_names, in_layers
from pipeline.cli import main
from pipeline.errors import FdposeError

pytestmark = pytest.mark.slow

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def test_profiles_split_the_time_by_operator_and_by_fdconv_layer(tmp_path):
    out = tmp_path / "profile.json"
    args = ["--family", "YOLOv8", "--imgsz", "64", "--runs", "2", "--threads", "1", "--json", str(out)]
    result = CliRunner().invoke(main, ["bench", "profile", *args])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [p["runtime"] for p in data["profiles"]] == ["onnxruntime", "openvino"][: 1 + HAS_OPENVINO]
    assert data["fdconv_layers"] > 0 and data["imgsz"] == 64 and data["batch"] == 1
    for profile in data["profiles"]:
        ops = profile["ops"]
        assert sum(op["fdconv_ms"] for op in ops) == pytest.approx(profile["fdconv_ms"])
        assert sum(op["stock_ms"] for op in ops) == pytest.approx(profile["stock_ms"])
        # FDConv's layers run operators of their own and take a real part of the model's time.
        assert 0 < profile["fdconv_layers_ms"] < profile["fdconv_ms"]
        assert any(op["stock_ms"] == 0 < op["fdconv_ms"] for op in ops), profile["runtime"]
        assert any(line.startswith(f"{profile['runtime']} ") for line in result.output.splitlines())
    assert f"wrote {out}" in result.output


def test_nodes_are_told_apart_by_their_layer(tmp_path):
    layers = ["model.4.m.0.cv2.conv"]
    assert in_layers("/model.4/m.0/cv2/conv/MatMul_5", layers)
    assert in_layers("/model.4/m.0/cv2/conv/MatMul_5/MatMulScaleFusion/", layers)  # onnxruntime's fusions
    assert in_layers("/model.4/m.0/cv2/conv/Mul_3,/model.4/m.0/cv2/conv/Add", layers)  # OpenVINO's
    assert not in_layers("/model.4/m.0/cv2/convx/Mul", layers)  # a sibling whose name starts the same
    assert not in_layers("/model.4/m.0/cv1/conv/Conv", layers)


def test_every_fdconv_layer_is_found_in_the_exported_graph(tmp_path):
    import onnx

    from pipeline.inference import ModelMeta
    from pipeline.package.export import export_onnx

    models, meta = twin_models(families(["YOLOv8"])[0]["YOLOv8"], "n")
    layers = fdconv_layer_names(models["fdconv"])
    assert len(layers) == 5 and fdconv_layer_names(models["stock"]) == []
    meta = ModelMeta(meta.skeleton, imgsz=64, stride=meta.stride)
    graph = onnx.load(export_onnx(models["fdconv"], meta, 64, tmp_path / "m.onnx")).graph
    for layer in layers:
        assert any(in_layers(node.name, [layer]) for node in graph.node), layer


def test_bad_options_are_one_clear_error():
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "profile", "--family", "YOLOv9"])
    assert result.exit_code == 1 and "--family: unknown family YOLOv9" in result.output
    with pytest.raises(FdposeError, match="--imgsz: 48 is not a multiple of the stride 32"):
        bench_profile("YOLOv8", imgsz=48, runs=1, threads=1)
