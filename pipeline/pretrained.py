"""Pretrained start: a stock YOLOv8-pose checkpoint becomes the C2f_FDConv model of the same scale.

Every layer but the C2f_FDConv ones is copied as it is. Each stock ``C2f`` at a C2f_FDConv
position is converted by :meth:`C2f_FDConv.from_c2f` (every bottleneck's second convolution
through ``FDConv.from_conv``), which computes the same function, so the converted model's outputs
equal the stock model's up to float rounding. When the target ``kpt_shape`` differs from the
checkpoint's, only the pose head's keypoint branch (``cv4``) keeps its fresh initialisation; when
``nc`` differs, only the class branch (``cv3``) does.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import FdposeError
from pipeline.io import atomic_write_bytes
from pipeline.nn.ultralytics import MODEL_YAML, register


@dataclass
class ConversionReport:
    """What :func:`load_pretrained_into` did, layer by layer."""

    source: str
    scale: str
    converted: list[str] = field(default_factory=list)  # layers whose C2f became C2f_FDConv
    copied: list[str] = field(default_factory=list)  # layers copied unchanged
    reinitialised: list[str] = field(default_factory=list)  # head branches left at their fresh init
    source_kpt_shape: list[int] = field(default_factory=list)
    target_kpt_shape: list[int] = field(default_factory=list)
    source_nc: int = 0
    target_nc: int = 0

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def load_stock(checkpoint: str | Path) -> nn.Module:
    """The model (EMA weights first, as ultralytics loads them) of an ultralytics checkpoint, in float32."""
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise FdposeError("no such checkpoint file", path=path)
    try:
        model, _ = load_checkpoint(path)
    except Exception as error:  # a corrupt or foreign file: one clear line, not a traceback
        raise FdposeError(f"not a loadable ultralytics checkpoint ({type(error).__name__}: {error})",
                          path=path) from error
    return model


def load_pretrained_into(model: nn.Module, stock: str | Path | nn.Module,
                         source: str | None = None) -> ConversionReport:
    """Fill the C2f_FDConv pose ``model`` (an ultralytics ``PoseModel``) from a stock YOLOv8-pose model.

    ``stock`` is a checkpoint path or an already loaded stock ``PoseModel``. The two must be the same
    scale and layout (YOLOv8-pose, C2f where ``model`` has C2f_FDConv; a C2f_FDConv checkpoint of
    the same layout is copied as it is). ``source`` names the stock
    model in errors and the report (default: its path). Returns what was converted, copied and left
    at its initialisation.
    """
    from ultralytics.nn.modules import C2f, Pose

    from pipeline.nn.blocks import C2f_FDConv

    source = source or (str(stock) if isinstance(stock, (str, Path)) else type(stock).__name__)
    stock_model = load_stock(stock) if isinstance(stock, (str, Path)) else stock
    layers, stock_layers = model.model, getattr(stock_model, "model", None)
    if not isinstance(stock_layers, nn.Sequential) or not isinstance(stock_layers[-1], Pose):
        raise FdposeError("not a YOLO pose model (its last layer is not a Pose head)", path=source)
    scale, stock_scale = _scale(model), _scale(stock_model)
    if scale and stock_scale and scale != stock_scale:  # unknown scales: the shape checks below decide
        raise FdposeError(f"checkpoint is scale {stock_scale!r}, the model is scale {scale!r}", path=source)
    if len(layers) != len(stock_layers):
        raise FdposeError(f"checkpoint has {len(stock_layers)} layers, the model {len(layers)}: "
                          "not a YOLOv8-pose checkpoint", path=source)

    head, stock_head = layers[-1], stock_layers[-1]
    report = ConversionReport(
        source=source, scale=scale,
        source_kpt_shape=list(stock_head.kpt_shape), target_kpt_shape=list(head.kpt_shape),
        source_nc=stock_head.nc, target_nc=head.nc,
    )
    for i, (layer, stock_layer) in enumerate(zip(layers, stock_layers, strict=True)):
        name = f"model.{i}"
        if isinstance(layer, C2f_FDConv) and type(stock_layer) is C2f:
            stock_layer = C2f_FDConv.from_c2f(copy.deepcopy(stock_layer))
            report.converted.append(name)
        elif type(layer) is not type(stock_layer):
            raise FdposeError(f"layer {i} is {type(stock_layer).__name__} in the checkpoint, "
                              f"{type(layer).__name__} in the model: not a YOLOv8-pose checkpoint",
                              path=source)
        skip = []  # head branches whose shapes follow kpt_shape / nc: left at their fresh init
        if layer is head:
            if report.source_kpt_shape != report.target_kpt_shape:
                skip.append("cv4.")
            if report.source_nc != report.target_nc:
                skip.append("cv3.")
            report.reinitialised = [f"{name}.{prefix.rstrip('.')}" for prefix in skip]
        _load_layer(layer, stock_layer.state_dict(), name, source, skip=tuple(skip))
        if name not in report.converted:
            report.copied.append(name)
    if report.source_nc == report.target_nc:
        model.names = dict(stock_model.names)
    return report


def _scale(model: nn.Module) -> str:
    """The scale letter a model was built at: its YAML's ``scale``, else the letter in its YAML file name."""
    from ultralytics.nn.tasks import guess_model_scale

    yaml = getattr(model, "yaml", None) or {}
    return yaml.get("scale") or guess_model_scale(yaml.get("yaml_file", ""))


def _load_layer(layer: nn.Module, state: dict, name: str, source: str, skip: tuple[str, ...]) -> None:
    """Copy ``state`` (but keys starting with ``skip``) into ``layer``; a mismatch is one clear error."""
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = layer.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise FdposeError(f"{name}.{key} has shape {tuple(value.shape)} in the checkpoint, "
                              f"{tuple(own[key].shape)} in the model (a different scale or layout?)",
                              path=source)
    missing, unexpected = layer.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(skip)]
    if unexpected or missing:
        raise FdposeError(f"{name}: checkpoint and model differ in keys (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})", path=source)


def convert_checkpoint(stock_pt: str | Path, cfg: str | Path = MODEL_YAML, kpt_shape: list[int] | None = None,
                       nc: int | None = None) -> tuple[nn.Module, ConversionReport]:
    """Build the C2f_FDConv model at the checkpoint's scale from ``cfg`` and load the checkpoint into it.

    ``kpt_shape`` and ``nc`` default to the checkpoint's; a different value re-initialises only the
    keypoint (or class) branch of the head. Returns the model (float32, train mode) and the report.
    """
    from ultralytics.nn.tasks import PoseModel, yaml_model_load

    register()
    stock = load_stock(stock_pt)
    stock_head = stock.model[-1]
    d = yaml_model_load(cfg)
    d["scale"] = _scale(stock)
    d["kpt_shape"] = list(kpt_shape or stock_head.kpt_shape)
    d["nc"] = int(nc if nc is not None else stock_head.nc)
    model = PoseModel(d, verbose=False)
    return model, load_pretrained_into(model, stock, source=str(stock_pt))


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as an ultralytics checkpoint (float16, like ultralytics' own) that ``YOLO(path)`` loads
    and trains from. Written atomically."""
    import io

    from ultralytics import __version__

    buffer = io.BytesIO()
    torch.save({
        "model": copy.deepcopy(model).half(),
        "ema": None,
        "date": datetime.now(timezone.utc).isoformat(),
        "version": __version__,
        "train_args": {},
    }, buffer)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
