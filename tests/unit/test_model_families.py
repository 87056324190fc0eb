"""FDConv in every family (YOLOv8 C2f_FDConv, YOLO11 and YOLO26 C3k2_FDConv): building at every scale,
stock checkpoints converted with unchanged outputs, checkpoints, fuse, fine-tuning rules, model info."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fdconv_oracle import rel_err  # pytest puts tests/unit on sys.path (prepend import mode)
from test_model import outputs, perturb_all, perturb_bn, real_image, saved_and_loaded

import pipeline  # noqa: F401  (registers our blocks with ultralytics, as a user's `import pipeline` does)
from pipeline.errors import FdposeError
from pipeline.nn.blocks import FDCONV_BLOCKS, C3k2_FDConv, FDConvBN
from pipeline.nn.ultralytics import MODELS_DIR, SCALES, model_cfg

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {  # family -> (shipped FDConv YAML, ultralytics' stock YAML stem, FDConv block)
    "YOLOv8": (MODELS_DIR / "yolov8-pose-C2f_FDConv.yaml", "yolov8", "C2f_FDConv"),
    "YOLO11": (MODELS_DIR / "yolo11-pose-C3k2_FDConv.yaml", "yolo11", "C3k2_FDConv"),
    "YOLO26": (MODELS_DIR / "yolo26-pose-C3k2_FDConv.yaml", "yolo26", "C3k2_FDConv"),
}
FDCONV_LAYERS = [2, 4, 6, 8]


def fdconv_cfg(family: str, scale: str = "n") -> str:
    return str(model_cfg(scale, FAMILIES[family][0]))


@pytest.fixture(scope="module")
def stock_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A stock n-scale pose checkpoint per family, saved by ultralytics, with non-trivial weights."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("stock")
    paths = {}
    for seed, (family, (_, stem, _)) in enumerate(FAMILIES.items()):
        torch.manual_seed(20 + seed)
        stock = YOLO(f"{stem}n-pose.yaml")
        perturb_all(stock.model, seed=30 + seed, scale=0.1)
        perturb_bn(stock.model, seed=40 + seed)
        paths[family] = folder / f"{stem}n-pose-stock.pt"
        stock.save(paths[family])
    return paths


# --- building -----------------------------------------------------------------------------------------


def test_stock_yamls_stay_stock_after_import_pipeline():
    from ultralytics import YOLO

    stock = (("yolo11n-pose.yaml", "Pose"), ("yolo26n-pose.yaml", "Pose26"), ("yolov8n-pose.yaml", "Pose"))
    for name, head in stock:
        model = YOLO(name).model
        assert not any(type(m).__name__ in FDCONV_BLOCKS or isinstance(m, FDConvBN) for m in model.modules())
        assert type(model.model[-1]).__name__ == head


@pytest.mark.parametrize("family", FAMILIES)
def test_bare_name_builds_the_shipped_model_from_any_folder(family, tmp_path, monkeypatch):
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)  # no model file here
    path, stem, block = FAMILIES[family]
    model = YOLO(f"{stem}s-{path.name.split('-', 1)[1]}").model
    assert model.yaml["scale"] == "s"
    assert [i for i, m in enumerate(model.model) if type(m).__name__ == block] == FDCONV_LAYERS
    assert type(model.model[-1]).__name__ == ("Pose26" if family == "YOLO26" else "Pose")
    # YOLO26 keeps its end-to-end head: the one-to-one branches, as in the stock model
    assert hasattr(model.model[-1], "one2one_cv2") == bool(model.yaml.get("end2end")) == (family == "YOLO26")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("family", ["YOLO11", "YOLO26"])
def test_every_scale_builds_with_the_stock_scaling_repeats_and_switches(family, scale):
    """C3k2_FDConv gets C3k2's channel scaling, repeats and ultralytics' per-scale c3k switch."""
    from ultralytics.nn.tasks import parse_model, yaml_model_load

    d = yaml_model_load(fdconv_cfg(family, scale))
    stock_d = yaml_model_load(f"{FAMILIES[family][1]}{scale}-pose.yaml")
    stock_d["nc"] = d["nc"]
    layers, save = parse_model(copy.deepcopy(d), ch=3, verbose=False)
    stock_layers, stock_save = parse_model(copy.deepcopy(stock_d), ch=3, verbose=False)
    assert save == stock_save and len(layers) == len(stock_layers)
    for i, (layer, stock) in enumerate(zip(layers, stock_layers, strict=True)):
        if i in FDCONV_LAYERS:
            assert isinstance(layer, C3k2_FDConv) and type(stock).__name__ == "C3k2"
            assert [type(m).__name__ for m in layer.m] == [type(m).__name__ for m in stock.m]  # C3k or not
            assert (layer.cv1.conv.in_channels, layer.cv2.conv.out_channels, layer.c) == (
                stock.cv1.conv.in_channels, stock.cv2.conv.out_channels, stock.c)
            bottlenecks = [m for m in layer.modules() if type(m).__name__ == "Bottleneck"]
            assert bottlenecks and all(isinstance(b.cv2, FDConvBN) and not isinstance(b.cv1, FDConvBN)
                                       for b in bottlenecks)
        else:
            assert type(layer) is type(stock)
            assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in stock.parameters())


def test_fdconv_placement_is_a_block_argument_and_the_neck_may_use_it(tmp_path):
    """A row's trailing mapping chooses the bottleneck convolutions; a neck row may be an FDConv block."""
    from ultralytics import YOLO

    text = FAMILIES["YOLO11"][0].read_text()
    text = text.replace("- [-1, 2, C3k2_FDConv, [1024, True]]",
                        "- [-1, 2, C3k2_FDConv, [1024, True, {convs: [cv1, cv2]}]]")
    text = text.replace("- [-1, 2, C3k2, [256, False]] # 16", "- [-1, 2, C3k2_FDConv, [256, False]] # 16")
    (tmp_path / "yolo11-pose-custom.yaml").write_text(text)
    model = YOLO(str(tmp_path / "yolo11s-pose-custom.yaml")).model
    both = [m for m in model.model[8].modules() if type(m).__name__ == "Bottleneck"]
    assert both and all(isinstance(b.cv1, FDConvBN) and isinstance(b.cv2, FDConvBN) for b in both)
    assert isinstance(model.model[16], C3k2_FDConv)
    assert torch.isfinite(outputs(model, torch.rand(1, 3, 64, 64))).all()
    with pytest.raises(ValueError, match="convs must name bottleneck convolutions"):
        C3k2_FDConv(32, 32, convs=("cv3",))
    with pytest.raises(TypeError, match="expected an ultralytics C3k2"):
        C3k2_FDConv.from_c3k2(C3k2_FDConv(32, 32))


# --- a model's life in ultralytics ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_checkpoint_converts_with_identical_outputs(family, stock_checkpoints):
    from pipeline.model_io import load_model
    from pipeline.pretrained import convert_checkpoint

    model, report = convert_checkpoint(stock_checkpoints[family], cfg=FAMILIES[family][0])
    assert report.converted == [f"model.{i}" for i in FDCONV_LAYERS] and report.reinitialised == []
    assert report.family == family
    x = real_image()
    expected = outputs(load_model(stock_checkpoints[family]), x)
    assert expected.abs().max() > 1  # boxes and keypoints in pixels: a real output, not zeros
    assert rel_err(outputs(model, x), expected) < 1e-3


@pytest.mark.parametrize("family", ["YOLO11", "YOLO26"])
def test_checkpoint_round_trip_and_fuse(family, tmp_path):
    from ultralytics import YOLO

    loaded, expected, x = saved_and_loaded(YOLO(fdconv_cfg(family)), tmp_path / "best.pt", seed=7)
    assert loaded.task == "pose" and isinstance(loaded.model.model[6], C3k2_FDConv)
    assert rel_err(outputs(loaded.model, x), expected) < 1e-5
    loaded.model.fuse(verbose=False)
    assert not any(hasattr(m, "bn") for m in loaded.model.modules() if isinstance(m, FDConvBN))
    assert rel_err(outputs(loaded.model, x), expected) < 1e-4


def test_yolo26_checkpoint_loads_in_a_fresh_process_after_import_pipeline(tmp_path):
    from ultralytics import YOLO

    yolo = YOLO(fdconv_cfg("YOLO26"))
    yolo.save(tmp_path / "best.pt")
    code = ("import sys, pipeline\nfrom ultralytics import YOLO\nm = YOLO(sys.argv[1]).model\n"
            "print(' '.join(type(l).__name__ for l in m.model))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "best.pt")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    names = result.stdout.split()
    assert [i for i, n in enumerate(names) if n == "C3k2_FDConv"] == FDCONV_LAYERS and names[-1] == "Pose26"


# --- fine-tuning rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_onto_another_layout_reinitialises_the_layout_branches(family, stock_checkpoints):
    from pipeline.model_io import load_model
    from pipeline.pretrained import convert_checkpoint

    stock = load_model(stock_checkpoints[family]).state_dict()
    model, report = convert_checkpoint(stock_checkpoints[family], cfg=FAMILIES[family][0], kpt_shape=[5, 3],
                                       nc=2)
    head = f"model.{len(model.model) - 1}"
    branches = {b.removeprefix(f"{head}.") for b in report.reinitialised}
    assert {"cv3", "cv4"} <= branches  # classes, keypoints
    if family == "YOLO26":  # the one-to-one copies and the keypoint/sigma branches of Pose26 too
        assert {"one2one_cv3", "one2one_cv4", "cv4_kpts", "cv4_sigma"} <= branches
        assert "flow_model" not in branches  # the RLE flow does not depend on the layout: copied
    else:
        assert branches == {"cv3", "cv4"}
    assert "cv2" not in branches  # boxes: copied
    for key, value in model.state_dict().items():
        branch = key.removeprefix(f"{head}.").split(".")[0] if key.startswith(f"{head}.") else None
        if branch not in branches and key in stock and not key.endswith("num_batches_tracked"):
            if not any(key.startswith(f"model.{i}.") for i in FDCONV_LAYERS):
                assert torch.equal(stock[key], value), key


def test_pretrained_refusals_name_the_reason(stock_checkpoints, tmp_path):
    from ultralytics.nn.tasks import DetectionModel, PoseModel

    from pipeline.pretrained import check_start, load_pretrained_into

    yolo26 = PoseModel(fdconv_cfg("YOLO26"), verbose=False)
    with pytest.raises(FdposeError, match="checkpoint is a YOLOv8 model, the model a YOLO26 one"):
        load_pretrained_into(yolo26, stock_checkpoints["YOLOv8"])
    with pytest.raises(FdposeError, match="checkpoint is a YOLO11 model, the model a YOLO26 one"):
        check_start(fdconv_cfg("YOLO26"), stock_checkpoints["YOLO11"])
    with pytest.raises(FdposeError, match="checkpoint is scale 'n', the model is scale 's'"):
        check_start(fdconv_cfg("YOLO11", "s"), stock_checkpoints["YOLO11"])
    with pytest.raises(FdposeError, match="not a YOLO pose model .*its head is Detect"):
        load_pretrained_into(yolo26, DetectionModel("yolo26n.yaml", verbose=False))
    detect = tmp_path / "detect.pt"
    from ultralytics import YOLO

    YOLO("yolo11n.yaml").save(detect)
    with pytest.raises(FdposeError, match="detect.pt: .*not a pose"):
        check_start(fdconv_cfg("YOLO11"), detect)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FdposeError, match="junk.pt: not a loadable ultralytics checkpoint"):
        check_start(fdconv_cfg("YOLO11"), tmp_path / "junk.pt")
    check_start(fdconv_cfg("YOLO26"), stock_checkpoints["YOLO26"])  # same family and scale: fine


# --- model info ---------------------------------------------------------------------------------------


def test_model_info_prints_fdconv_layers_beside_the_stock_twin():
    from pipeline.cli import main

    result = CliRunner().invoke(main, ["model", "info", "yolo26n-pose-C3k2_FDConv.yaml", "--imgsz", "320"])
    assert result.exit_code == 0, result.output
    assert "beside its stock twin yolo26n-pose (stock)" in result.output
    assert "FDConv layers: 2 C3k2_FDConv" in result.output and "8 C3k2_FDConv (2 FDConv)" in result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    stock, model = lines["yolo26n-pose"], lines["yolo26n-pose-C3k2_FDConv"]
    assert int(model[2].replace(",", "")) > int(stock[3].replace(",", ""))  # FDConv adds parameters


def test_model_info_compare_lists_the_three_families():
    from pipeline.cli import main

    result = CliRunner().invoke(main, ["model", "info", "--compare", "--repeats", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for family, (_, stem, block) in FAMILIES.items():
        assert family in result.output
        assert f"{stem}n-pose (stock)" in result.output and f"{stem}n-pose-{block}" in result.output
    assert result.output.count("ratio") == 3
    assert "CPU ms@320" in result.output and "CPU ms@640" in result.output
    both = CliRunner().invoke(main, ["model", "info", "--compare", "x.yaml"])
    assert both.exit_code == 2 and "either CFG or --compare" in both.output
