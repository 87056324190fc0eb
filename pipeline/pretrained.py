"""Pretrained start: a YOLO pose checkpoint (v8, 11, 26; stock or FDConv) fills a model of its family.

:func:`load_pretrained_into` takes any pose checkpoint of the model's family and scale onto any
keypoint layout and classes. Every stock block at a position where the model has an FDConv block
(``C2f`` -> ``C2f_FDConv``, ``C3k2`` -> ``C3k2_FDConv``) is converted by the block's ``from_stock``
(bottleneck convolutions through ``FDConv.from_conv``), which computes the same function, so the
converted model's outputs equal the stock model's up to float rounding. Head branches whose shapes
differ (those that follow ``kpt_shape`` or ``nc``: ``cv4`` for keypoints and ``cv3`` for classes,
and in YOLO26 also the one-to-one and sigma branches) keep their fresh initialisation; every other
tensor is copied. Another family or scale, a non-pose model or an unreadable file is one
:class:`~pipeline.errors.FdposeError`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import FdposeError
from pipeline.io import atomic_write_bytes
from pipeline.model_io import load_model
from pipeline.nn.ultralytics import MODEL_YAML


@dataclass
class ConversionReport:
    """What :func:`load_pretrained_into` did, layer by layer."""

    source: str
    scale: str
    family: str = ""  # YOLOv8, YOLO11, YOLO26
    converted: list[str] = field(default_factory=list)  # stock blocks that became FDConv blocks
    copied: list[str] = field(default_factory=list)  # layers copied unchanged
    reinitialised: list[str] = field(default_factory=list)  # head branches left at their fresh init
    source_kpt_shape: list[int] = field(default_factory=list)
    target_kpt_shape: list[int] = field(default_factory=list)
    source_nc: int = 0
    target_nc: int = 0

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def family(model_or_yaml: nn.Module | dict | str) -> str:
    """The model family a model, its YAML dict or a YAML/checkpoint name belongs to: ``YOLOv8``,
    ``YOLO11``, ``YOLO26``, ... (from the YAML file name), or ``""`` when the name does not say."""
    name = model_or_yaml
    if isinstance(model_or_yaml, nn.Module):
        name = getattr(model_or_yaml, "yaml", None) or {}
    if isinstance(name, dict):
        name = name.get("yaml_file", "")
    match = re.search(r"yolo(v?)(\d+)", Path(str(name)).name, re.IGNORECASE)
    return f"YOLO{match[1].lower()}{match[2]}" if match else ""


def layer_types(model: nn.Module) -> list[str]:
    """The stock block name of every layer (our FDConv blocks by the stock block they convert)."""
    from pipeline.nn.blocks import FDCONV_BLOCKS

    names = []
    for layer in model.model:
        name = type(layer).__name__
        names.append(FDCONV_BLOCKS[name].STOCK if name in FDCONV_BLOCKS else name)
    return names


def yaml_layer_types(d: dict) -> list[str]:
    """:func:`layer_types` of the model a YAML dict describes, without building it."""
    from pipeline.nn.blocks import FDCONV_BLOCKS

    names = [str(row[2]).rsplit(".", 1)[-1] for row in d["backbone"] + d["head"]]
    return [FDCONV_BLOCKS[name].STOCK if name in FDCONV_BLOCKS else name for name in names]


def check_transfer(model: nn.Module | dict, stock_model: nn.Module, source: str) -> None:
    """Raise one :class:`FdposeError` unless ``stock_model`` can start ``model`` (a model or its YAML
    dict): both YOLO pose models of the same family (the same layers, up to our FDConv blocks) and
    scale. Keypoint layout and classes may differ."""
    from ultralytics.nn.modules import Pose

    stock_layers = getattr(stock_model, "model", None)
    if not isinstance(stock_layers, nn.Sequential) or not isinstance(stock_layers[-1], Pose):
        head = type(stock_layers[-1]).__name__ if isinstance(stock_layers, nn.Sequential) else "none"
        raise FdposeError(f"not a YOLO pose model (its head is {head}, not a pose head): "
                          "fine-tuning needs a pose checkpoint", path=source)
    types = yaml_layer_types(model) if isinstance(model, dict) else layer_types(model)
    if types != layer_types(stock_model):
        theirs, ours = family(stock_model) or "another", family(model) or "this"
        raise FdposeError(f"checkpoint is a {theirs} model, the model a {ours} one: fine-tuning needs a "
                          "checkpoint of the same family (and scale)", path=source)
    scale, stock_scale = _scale(model), _scale(stock_model)
    if scale and stock_scale and scale != stock_scale:  # unknown scales: the shape checks decide
        raise FdposeError(f"checkpoint is scale {stock_scale!r}, the model is scale {scale!r}", path=source)


def check_start(model: str | Path, pretrained: str | Path | None) -> None:
    """Before a run: ``model`` (a model YAML or a checkpoint) and the ``pretrained`` checkpoint (or
    None) can start it: each checkpoint is a readable pose model and ``pretrained`` is of the model's
    family and scale (:func:`check_transfer`). Their keypoint layout and classes may differ from the
    dataset's: the head branches that follow them are re-initialised."""
    from ultralytics.nn.tasks import yaml_model_load

    if str(model).endswith(".pt"):
        target = load_model(model)
        check_transfer(target, target, str(model))
    else:
        target = yaml_model_load(model)
        target["scale"] = target.get("scale") or next(iter(target.get("scales") or {}), "")
    if pretrained is not None:
        check_transfer(target, load_model(pretrained), str(pretrained))


def load_pretrained_into(model: nn.Module, stock: str | Path | nn.Module,
                         source: str | None = None) -> ConversionReport:
    """Fill the pose ``model`` (an ultralytics ``PoseModel``, with or without FDConv blocks) from a
    pose model of the same family and scale (:func:`check_transfer`), stock or FDConv.

    ``stock`` is a checkpoint path or an already loaded model. Stock blocks at positions where
    ``model`` has an FDConv block are converted (same function); head branches whose shapes differ
    (they follow ``kpt_shape`` or ``nc``) keep their fresh initialisation; everything else is
    copied. ``source`` names the stock model in errors and the report (default: its path). Returns
    what was converted, copied and left at its initialisation.
    """
    from pipeline.nn.blocks import FDCONV_BLOCKS

    source = source or (str(stock) if isinstance(stock, (str, Path)) else type(stock).__name__)
    stock_model = load_model(stock) if isinstance(stock, (str, Path)) else stock
    check_transfer(model, stock_model, source)
    layers, stock_layers = model.model, stock_model.model
    head, stock_head = layers[-1], stock_layers[-1]
    report = ConversionReport(
        source=source, scale=_scale(model), family=family(model) or family(stock_model),
        source_kpt_shape=list(stock_head.kpt_shape), target_kpt_shape=list(head.kpt_shape),
        source_nc=stock_head.nc, target_nc=head.nc,
    )
    for i, (layer, stock_layer) in enumerate(zip(layers, stock_layers, strict=True)):
        name = f"model.{i}"
        cls = FDCONV_BLOCKS.get(type(layer).__name__)
        if cls is not None and type(stock_layer).__name__ == cls.STOCK:
            stock_layer = cls.from_stock(copy.deepcopy(stock_layer), **row_options(model, i))
            report.converted.append(name)
        skip = _changed_branches(layer, stock_layer) if layer is head else ()
        report.reinitialised += [f"{name}.{branch}" for branch in skip]
        _load_layer(layer, stock_layer.state_dict(), name, source, skip=tuple(f"{b}." for b in skip))
        if name not in report.converted:
            report.copied.append(name)
    if report.source_nc == report.target_nc:
        model.names = dict(stock_model.names)
    return report


def row_options(model: nn.Module, index: int) -> dict:
    """The FDConv options (``kernel_num``, ``convs``, ...) the model's YAML gives layer ``index``: the
    trailing mapping of its row's arguments, so that a converted stock block is built like the model's
    own (``{kernel_num: 64}`` included); ``{}`` when the row has none."""
    d = getattr(model, "yaml", None) or {}
    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    args = rows[index][3] if index < len(rows) and len(rows[index]) > 3 else []
    return dict(args[-1]) if isinstance(args, list) and args and isinstance(args[-1], dict) else {}


def _changed_branches(head: nn.Module, stock_head: nn.Module) -> list[str]:
    """The head's branches (direct submodules) whose parameter or buffer shapes differ from the stock
    head's: those that follow ``kpt_shape`` or ``nc`` (keypoint, class and, in YOLO26, sigma branches)."""
    own, theirs = head.state_dict(), stock_head.state_dict()
    changed = []
    for branch, _ in head.named_children():
        keys = {k for k in (*own, *theirs) if k.startswith(f"{branch}.")}
        if any(k not in own or k not in theirs or own[k].shape != theirs[k].shape for k in keys):
            changed.append(branch)
    return changed


def _scale(model: nn.Module | dict) -> str:
    """The scale letter a model was built at: its YAML's ``scale``, else the letter in its YAML file name."""
    from ultralytics.nn.tasks import guess_model_scale

    yaml = model if isinstance(model, dict) else getattr(model, "yaml", None) or {}
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

    stock = load_model(stock_pt)
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
