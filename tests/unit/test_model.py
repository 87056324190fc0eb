"""The C2f_FDConv YOLOv8-pose model in ultralytics: scales, save/load, fuse, EMA, info, pretrained."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fdconv_oracle import rel_err  # pytest puts tests/unit on sys.path (prepend import mode)

import pipeline  # noqa: F401  (installs the ultralytics hook, as a user's `import pipeline` does)
from pipeline.errors import FdposeError
from pipeline.nn.blocks import C2f_FDConv, FDConvBN
from pipeline.nn.ultralytics import MODEL_YAML, SCALES, check_version, model_cfg

ROOT = Path(__file__).resolve().parents[2]
FDCONV_LAYERS = [2, 4, 6, 8]


@torch.no_grad()
def perturb_bn(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking BatchNorm statistics, so that outputs are not those of a fresh init."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.copy_(0.6 * torch.rand(c, generator=g) - 0.3)


@torch.no_grad()
def perturb_all(model: torch.nn.Module, seed: int, scale: float = 0.02) -> None:
    """Small noise on every parameter: FDConv's attentions and band maps become non-neutral."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 1.0))


def real_image(height: int = 256, width: int = 320) -> torch.Tensor:
    """ultralytics' bundled bus.jpg, resized, as a (1, 3, H, W) float tensor in [0, 1] (RGB)."""
    import cv2
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(ASSETS / "bus.jpg"))
    assert image is not None, "ultralytics ships assets/bus.jpg"
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def build(scale: str = "n"):
    from ultralytics import YOLO

    return YOLO(str(model_cfg(scale)))


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)[0]


# --- the block ---------------------------------------------------------------------------------------


def test_c2f_fdconv_constructor_matches_c2f_layout():
    from ultralytics.nn.modules import C2f

    block, stock = C2f_FDConv(48, 64, n=2, shortcut=True), C2f(48, 64, n=2, shortcut=True)
    assert block.c == stock.c == 32 and len(block.m) == 2
    for bottleneck in block.m:
        assert isinstance(bottleneck.cv2, FDConvBN) and bottleneck.add
        conv = bottleneck.cv2.conv
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (32, 32, (3, 3))
    x = torch.randn(2, 48, 24, 20)
    assert block(x).shape == stock(x).shape == (2, 64, 24, 20)
    block.train()
    block(torch.randn(1, 48, 16, 16)).mean().backward()  # batch 1 trains


def test_from_c2f_computes_the_same_function():
    from ultralytics.nn.modules import C2f, Conv

    stock = C2f(40, 40, n=2, shortcut=True)
    perturb_bn(stock, seed=7)
    stock.eval()
    x = torch.randn(2, 40, 19, 23)
    with torch.no_grad():
        expected = stock(x)
        converted = C2f_FDConv.from_c2f(copy.deepcopy(stock)).eval()
        assert rel_err(converted(x), expected) < 1e-4
    with pytest.raises(TypeError, match="expected an ultralytics C2f"):
        C2f_FDConv.from_c2f(converted)
    fused = Conv(8, 8, 3)
    del fused.bn  # what BaseModel.fuse() leaves
    with pytest.raises(ValueError, match="fused Conv"):
        FDConvBN.from_conv(fused)


# --- building ----------------------------------------------------------------------------------------


def test_yaml_name_with_scale_letter_builds_the_fdconv_model():
    model = build("n").model
    layers = model.model
    assert [i for i, layer in enumerate(layers) if isinstance(layer, C2f_FDConv)] == FDCONV_LAYERS
    assert model.yaml["scale"] == "n" and model.yaml["kpt_shape"] == [17, 3] and model.yaml["nc"] == 1
    for i in FDCONV_LAYERS:
        assert all(isinstance(b.cv2, FDConvBN) for b in layers[i].m)
        assert layers[i].type == "pipeline.nn.blocks.C2f_FDConv"
        assert layers[i].np == sum(p.numel() for p in layers[i].parameters())
    assert type(layers[-1]).__name__ == "Pose"


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_builds_with_c2f_scaling_and_repeats(scale):
    """parse_model gives C2f_FDConv exactly C2f's channel scaling and repeats, at every scale."""
    from ultralytics.nn.tasks import parse_model, yaml_model_load

    d = yaml_model_load(model_cfg(scale))
    stock_d = yaml_model_load(f"yolov8{scale}-pose.yaml")
    assert d["scale"] == stock_d["scale"] == scale
    layers, save = parse_model(copy.deepcopy(d), ch=3, verbose=False)
    stock_layers, stock_save = parse_model(copy.deepcopy(stock_d), ch=3, verbose=False)
    assert save == stock_save and len(layers) == len(stock_layers)
    params = sum(p.numel() for p in layers.parameters())
    stock_params = sum(p.numel() for p in stock_layers.parameters())
    for i, (layer, stock) in enumerate(zip(layers, stock_layers, strict=True)):
        if i in FDCONV_LAYERS:
            assert isinstance(layer, C2f_FDConv) and type(stock).__name__ == "C2f"
            assert len(layer.m) == len(stock.m)
            assert (layer.cv1.conv.in_channels, layer.cv2.conv.out_channels, layer.c) == (
                stock.cv1.conv.in_channels, stock.cv2.conv.out_channels, stock.c)
            assert [b.add for b in layer.m] == [b.add for b in stock.m] == [True] * len(stock.m)
        else:
            assert type(layer) is type(stock)
            assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in stock.parameters())
    # FDConv keeps the conv's weight (as Fourier coefficients) and adds attention parameters: a few % more
    assert stock_params < params < 1.05 * stock_params


def test_scaled_name_resolves_under_a_folder_that_looks_like_a_scale(tmp_path):
    """ultralytics strips the scale letter with a regex over the whole path; '/run3s/' would be hit first."""
    import shutil

    from ultralytics import YOLO

    folder = tmp_path / "run3s"
    folder.mkdir()
    shutil.copy(MODEL_YAML, folder / MODEL_YAML.name)
    model = YOLO(str(folder / "yolov8n-pose-C2f_FDConv.yaml")).model
    assert model.yaml["scale"] == "n" and isinstance(model.model[4], C2f_FDConv)


def test_version_check_names_the_supported_range():
    check_version("8.4.190")
    for bad in ("8.3.100", "8.5.0", "9.0.1", "garbage"):
        with pytest.raises(FdposeError, match=r"ultralytics >=8\.4,<8\.5.*" + bad.replace(".", r"\.")):
            check_version(bad)


def test_model_cfg_puts_the_scale_letter_after_the_digits():
    assert model_cfg("m").name == "yolov8m-pose-C2f_FDConv.yaml"
    assert model_cfg("m").parent == MODEL_YAML.parent
    with pytest.raises(FdposeError, match="unknown model scale"):
        model_cfg("q")


# --- what ultralytics does with a model ---------------------------------------------------------------


def test_fuse_folds_the_fdconv_batchnorm_and_preserves_outputs():
    model = build("n").model
    perturb_all(model, seed=1)
    perturb_bn(model, seed=2)
    x = real_image()
    before = outputs(model, x)
    model.fuse(verbose=False)
    blocks = [m for m in model.modules() if isinstance(m, FDConvBN)]
    assert blocks and not any(hasattr(b, "bn") for b in blocks)
    assert model.is_fused()
    after = outputs(model, x)
    assert rel_err(after, before) < 1e-5


def test_ema_deepcopies_and_updates():
    from ultralytics.utils.torch_utils import ModelEMA

    model = build("n").model
    ema = ModelEMA(model)
    assert isinstance(ema.ema.model[4], C2f_FDConv) and ema.ema.model[4] is not model.model[4]
    perturb_all(model, seed=3, scale=0.5)
    key = next(k for k in model.state_dict() if k.startswith("model.4.m.0.cv2.conv."))
    before = ema.ema.state_dict()[key].clone()
    ema.update(model)
    after = ema.ema.state_dict()[key]
    assert not torch.equal(before, after)
    assert torch.isfinite(outputs(ema.ema, torch.rand(1, 3, 64, 64))).all()


def test_summary_and_flops_count_the_fdconv_convolutions():
    from ultralytics.nn.tasks import PoseModel
    from ultralytics.utils.torch_utils import get_flops

    model = build("n").model
    layers, params, grads, gflops = model.info(verbose=True, imgsz=320)
    assert params == sum(p.numel() for p in model.parameters()) and 0 < grads <= params and layers > 100
    stock = PoseModel("yolov8n-pose.yaml", verbose=False)
    # FDConv runs the same convolutions as the stock model plus its attentions; thop sees both
    assert gflops >= get_flops(stock, 320) > 0


def saved_and_loaded(yolo, path: Path, seed: int):
    """``yolo`` perturbed, saved to ``path`` and loaded back: (loaded YOLO, expected outputs, input).
    The expected outputs are the saved model's in float16, as checkpoints hold float16 weights."""
    from ultralytics import YOLO

    perturb_all(yolo.model, seed=seed)
    perturb_bn(yolo.model, seed=seed + 1)
    yolo.save(path)
    x = real_image()
    return YOLO(path), outputs(copy.deepcopy(yolo.model).half().float(), x), x


def test_save_and_load_round_trip_through_ultralytics(tmp_path):
    yolo = build("n")
    loaded, expected, x = saved_and_loaded(yolo, tmp_path / "best.pt", seed=4)
    assert loaded.task == "pose"
    assert isinstance(loaded.model.model[6], C2f_FDConv)
    assert rel_err(outputs(loaded.model, x), expected) < 1e-5
    assert rel_err(outputs(loaded.model, x), outputs(yolo.model, x)) < 1e-2  # float16 rounding only


def test_fresh_interpreter_import_pipeline_then_yolo_builds_and_loads(tmp_path):
    """A user session: cheap `import pipeline`, then plain ultralytics builds our YAML and loads our .pt."""
    yolo = build("n")
    perturb_bn(yolo.model, seed=6)
    checkpoint = tmp_path / "best.pt"
    yolo.save(checkpoint)
    x = real_image(64, 96)
    torch.save(x, tmp_path / "x.pt")
    code = """
import json, sys
import pipeline
heavy = sorted(m for m in ("torch", "ultralytics") if m in sys.modules)
import torch, ultralytics
built = ultralytics.YOLO("cfg/models/yolov8n-pose-C2f_FDConv.yaml").model
loaded = ultralytics.YOLO(sys.argv[1]).model.eval()
with torch.no_grad():
    torch.save(loaded(torch.load(sys.argv[2]))[0], sys.argv[3])
print(json.dumps({"heavy": heavy, "built": [type(m).__name__ for m in built.model],
                  "scale": built.yaml["scale"], "loaded": [type(m).__name__ for m in loaded.model]}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["scale"] == "n"
    for key in ("built", "loaded"):
        assert [i for i, name in enumerate(report[key]) if name == "C2f_FDConv"] == FDCONV_LAYERS
    expected = outputs(copy.deepcopy(yolo.model).half().float(), x)
    assert rel_err(torch.load(tmp_path / "y.pt"), expected) < 1e-5


def test_import_pipeline_after_ultralytics_registers_at_once():
    code = """
import ultralytics.nn.tasks as tasks
import pipeline
from pipeline.nn.ultralytics import register
register()  # idempotent: wraps once
assert not hasattr(tasks.parse_model.fdpose_wrapped, "fdpose_wrapped")
model = tasks.PoseModel("cfg/models/yolov8s-pose-C2f_FDConv.yaml", verbose=False)
print(type(model.model[4]).__name__, model.yaml["scale"])
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["C2f_FDConv", "s"]


def test_model_info_command_prints_both_models(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.nn.info import model_info

    info = model_info(MODEL_YAML, "n", imgsz=320)
    assert info.scale == "n" and info.stock.name == "yolov8n-pose (stock)"
    assert info.model.parameters > info.stock.parameters and info.model.gflops >= info.stock.gflops > 0
    result = CliRunner().invoke(main, ["model", "info", str(MODEL_YAML), "--scale", "n", "--imgsz", "320"])
    assert result.exit_code == 0, result.output
    assert f"{info.model.parameters:,}" in result.output and f"{info.stock.parameters:,}" in result.output
    assert "ratio" in result.output

    missing = CliRunner().invoke(main, ["model", "info", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "nope.yaml: model YAML not found" in missing.output
    detect = CliRunner().invoke(main, ["model", "info", "yolov8n.yaml"])
    assert detect.exit_code == 1 and "not a pose model" in detect.output


# --- pretrained start ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory) -> Path:
    """A stock YOLOv8n-pose checkpoint saved by ultralytics, with non-trivial weights and BN statistics."""
    from ultralytics import YOLO

    torch.manual_seed(10)
    stock = YOLO("yolov8n-pose.yaml")
    perturb_all(stock.model, seed=11, scale=0.1)
    perturb_bn(stock.model, seed=12)
    path = tmp_path_factory.mktemp("stock") / "yolov8n-pose-stock.pt"
    stock.save(path)
    return path


def test_pretrained_conversion_keeps_outputs_on_a_real_image(stock_checkpoint, tmp_path):
    from ultralytics import YOLO

    from pipeline.model_io import load_model
    from pipeline.pretrained import convert_checkpoint, save_checkpoint

    model, report = convert_checkpoint(stock_checkpoint)
    assert report.converted == [f"model.{i}" for i in FDCONV_LAYERS]
    assert report.reinitialised == [] and report.scale == "n"
    assert len(report.copied) == len(model.model) - len(FDCONV_LAYERS)
    x = real_image()
    expected = outputs(load_model(stock_checkpoint), x)
    assert expected.abs().max() > 1  # boxes and keypoints in pixels: a real output, not zeros
    assert rel_err(outputs(model, x), expected) < 1e-3

    # the converted model saved as an ultralytics checkpoint loads with YOLO() and computes the same
    path = save_checkpoint(model, tmp_path / "converted.pt")
    loaded = YOLO(path)
    assert isinstance(loaded.model.model[4], C2f_FDConv)
    assert rel_err(outputs(loaded.model, x), expected) < 1e-2  # float16 checkpoint weights


def test_pretrained_with_other_kpt_shape_reinitialises_only_the_keypoint_branch(stock_checkpoint):
    from pipeline.model_io import load_model
    from pipeline.pretrained import convert_checkpoint

    stock = load_model(stock_checkpoint).state_dict()
    model, report = convert_checkpoint(stock_checkpoint, kpt_shape=[5, 2])
    assert report.reinitialised == ["model.22.cv4"]
    assert report.source_kpt_shape == [17, 3] and report.target_kpt_shape == [5, 2]
    head = model.model[-1]
    assert head.kpt_shape == [5, 2] and head.cv4[0][-1].out_channels == 10
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("model.22.cv4."):
            assert key not in stock or stock[key].shape != value.shape or not torch.equal(stock[key], value)
        elif key in stock:
            assert torch.equal(stock[key], value), key  # box/class branches and the unconverted layers

    _, report = convert_checkpoint(stock_checkpoint, nc=3)
    assert report.reinitialised == ["model.22.cv3"]


def test_pretrained_rejects_another_scale_or_a_non_pose_model(stock_checkpoint, tmp_path):
    from ultralytics.nn.tasks import DetectionModel, PoseModel

    from pipeline.model_io import load_model
    from pipeline.pretrained import load_pretrained_into

    small = PoseModel(str(model_cfg("s")), verbose=False)
    with pytest.raises(FdposeError, match="scale 'n', the model is scale 's'"):
        load_pretrained_into(small, stock_checkpoint)
    model = PoseModel(str(model_cfg("n")), verbose=False)
    with pytest.raises(FdposeError, match="not a YOLO pose model"):
        load_pretrained_into(model, DetectionModel("yolov8n.yaml", verbose=False))
    with pytest.raises(FdposeError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FdposeError, match="not a loadable ultralytics checkpoint"):
        load_model(tmp_path / "junk.pt")
