"""``fdpose model info CFG``: layers, parameters and GFLOPs of a model YAML beside stock YOLOv8-pose.

The stock model is ultralytics' own ``yolov8-pose.yaml`` at the same scale, with the same ``nc``
and ``kpt_shape`` as the YAML under inspection, so the comparison isolates the architecture.
Figures come from ultralytics' own ``model_info`` (GFLOPs by thop; see
:mod:`pipeline.nn.ultralytics` for how FDConv's convolution is counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import click

from pipeline.errors import FdposeError

STOCK_YAML = "yolov8-pose.yaml"  # ultralytics ships it; resolved inside the ultralytics package


@dataclass
class ModelFigures:
    """One model's size: what ultralytics' model summary prints."""

    name: str
    layers: int
    parameters: int
    gflops: float


@dataclass
class ModelInfo:
    """A model YAML at one scale beside stock YOLOv8-pose at that scale."""

    cfg: str
    scale: str
    imgsz: int
    model: ModelFigures
    stock: ModelFigures

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)

    def table(self) -> str:
        """The comparison as a plain-text table, with the model/stock ratios."""
        rows = [("model", "layers", "parameters", f"GFLOPs@{self.imgsz}")]
        for figures in (self.stock, self.model):
            rows.append((figures.name, str(figures.layers), f"{figures.parameters:,}",
                         f"{figures.gflops:.2f}"))
        rows.append(("ratio", f"{self.model.layers / self.stock.layers:.3f}",
                     f"{self.model.parameters / self.stock.parameters:.4f}",
                     f"{self.model.gflops / self.stock.gflops:.4f}" if self.stock.gflops else "n/a"))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
            for row in rows
        )


def load_model_yaml(cfg: str | Path, scale: str | None = None) -> dict:
    """The model dict of ``cfg`` at ``scale`` (default: the scale letter in the name, else the first scale).

    Raises :class:`FdposeError` for a missing file, a YAML that is not a model or an unknown scale.
    """
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    from pipeline.nn.ultralytics import register

    register()
    try:
        d = yaml_model_load(cfg)
    except FileNotFoundError as error:
        raise FdposeError("model YAML not found", path=cfg) from error
    if not isinstance(d, dict) or not d.get("backbone") or not d.get("head"):
        raise FdposeError("not a model YAML (needs 'backbone' and 'head')", path=cfg)
    if d["head"][-1][2] != "Pose":
        raise FdposeError(f"not a pose model (its last layer is {d['head'][-1][2]}, not Pose)", path=cfg)
    scales = d.get("scales") or {}
    scale = scale or guess_model_scale(cfg) or next(iter(scales), "")
    if scales and scale not in scales:
        raise FdposeError(f"unknown scale {scale!r}; this YAML has {', '.join(scales)}",
                          path=cfg, item="scale")
    d["scale"] = scale
    return d


def _figures(name: str, d: dict, imgsz: int) -> ModelFigures:
    """Build the model of ``d`` and read ultralytics' summary figures."""
    from ultralytics.nn.tasks import PoseModel
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = PoseModel(d, verbose=False)
    layers = sum(1 for m in model.modules() if next(m.children(), None) is None)  # leaves, as ultralytics
    return ModelFigures(name=name, layers=layers, parameters=get_num_params(model),
                        gflops=get_flops(model, imgsz))


def model_info(cfg: str | Path, scale: str | None = None, imgsz: int = 640) -> ModelInfo:
    """Layers, parameters and GFLOPs of the pose model ``cfg`` at ``scale`` beside stock YOLOv8-pose."""
    from ultralytics.nn.tasks import guess_model_scale

    d = load_model_yaml(cfg, scale)
    stock = load_model_yaml(STOCK_YAML, d["scale"])
    stock["nc"], stock["kpt_shape"] = d.get("nc", stock["nc"]), d.get("kpt_shape", stock["kpt_shape"])
    scale = d["scale"]
    name = Path(str(d.get("yaml_file", cfg))).stem
    return ModelInfo(
        cfg=str(cfg), scale=scale, imgsz=imgsz,
        model=_figures(name if guess_model_scale(name) else f"{name} ({scale})", d, imgsz),
        stock=_figures(f"yolov8{scale}-pose (stock)", stock, imgsz),
    )


@click.group("model")
def model_command() -> None:
    """Inspect model configurations (layers, params, GFLOPs)."""


@model_command.command("info")
@click.argument("cfg", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scale", type=click.Choice(["n", "s", "m", "l", "x"]), default=None,
              help="Model scale (default: the letter in CFG's name, e.g. yolov8n-..., else the first).")
@click.option("--imgsz", type=click.IntRange(32), default=640, show_default=True,
              help="Image size for GFLOPs.")
def info_command(cfg: Path, scale: str | None, imgsz: int) -> None:
    """Layers, parameters and GFLOPs of CFG beside stock YOLOv8-pose of the same scale."""
    info = model_info(cfg, scale, imgsz)
    click.echo(f"{info.cfg} at scale {info.scale}, beside stock YOLOv8-pose {info.scale}:")
    click.echo(info.table())
