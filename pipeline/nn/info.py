"""``fdpose model info``: a model file's FDConv layers, parameters and GFLOPs beside its stock twin.

The stock twin of a model YAML is the same YAML with every FDConv block (``C2f_FDConv``,
``C3k2_FDConv``) replaced by the stock block it converts (``C2f``, ``C3k2``): same scale, ``nc``
and ``kpt_shape``, so the comparison isolates FDConv. ``--compare`` does this for the shipped
model of each family (YOLOv8, YOLO11, YOLO26) at one scale and adds batch-1 CPU latency at 320 and
640, stock and FDConv timed alternately in the same run (:func:`pipeline.bench.timing.time_pair`).
Figures come from
ultralytics' own ``model_info`` helpers (GFLOPs by thop; see :mod:`pipeline.nn.ultralytics` for how
FDConv's convolution is counted).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from pipeline.errors import FdposeError
from pipeline.nn.ultralytics import MODELS_DIR, SCALES, split_fdconv_rows

FAMILY_MODELS = {  # the shipped model file of each family, by the name --compare prints
    "YOLOv8": MODELS_DIR / "yolov8-pose-C2f_FDConv.yaml",
    "YOLO11": MODELS_DIR / "yolo11-pose-C3k2_FDConv.yaml",
    "YOLO26": MODELS_DIR / "yolo26-pose-C3k2_FDConv.yaml",
}
COMPARE_SIZES = (320, 640)


@dataclass
class ModelSize:
    """One model's size: what ultralytics' model summary prints."""

    name: str
    layers: int
    parameters: int
    gflops: float


@dataclass
class ModelInfo:
    """A model YAML at one scale beside its stock twin at that scale."""

    cfg: str
    scale: str
    imgsz: int
    model: ModelSize
    stock: ModelSize
    fdconv_layers: list[dict] = field(default_factory=list)  # {layer, block, fdconv}: FDConv convs in it

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
        return _columns(rows)

    def fdconv_line(self) -> str:
        """Which layers carry FDConv, and how many dynamic FDConv convolutions each has."""
        if not self.fdconv_layers:
            return "FDConv layers: none"
        return "FDConv layers: " + ", ".join(
            f"{entry['layer']} {entry['block']} ({entry['fdconv']} FDConv)" for entry in self.fdconv_layers)


def _columns(rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Rows as aligned text: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if c < left else cell.rjust(w)
                  for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )


def load_model_yaml(cfg: str | Path, scale: str | None = None) -> dict:
    """The model dict of ``cfg`` at ``scale`` (default: the scale letter in the name, else the first scale).

    Raises :class:`FdposeError` for a missing file, a YAML that is not a model or an unknown scale.
    """
    from ultralytics.nn import modules
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    try:
        d = yaml_model_load(cfg)
    except FileNotFoundError as error:
        raise FdposeError("model YAML not found", path=cfg) from error
    if not isinstance(d, dict) or not d.get("backbone") or not d.get("head"):
        raise FdposeError("not a model YAML (needs 'backbone' and 'head')", path=cfg)
    head = str(d["head"][-1][2])
    head_class = getattr(modules, head, None)
    if not isinstance(head_class, type) or not issubclass(head_class, modules.Pose):
        raise FdposeError(f"not a pose model (its last layer is {head}, not a pose head)", path=cfg)
    scales = d.get("scales") or {}
    scale = scale or guess_model_scale(cfg) or next(iter(scales), "")
    if scales and scale not in scales:
        raise FdposeError(f"unknown scale {scale!r}; this YAML has {', '.join(scales)}",
                          path=cfg, item="scale")
    d["scale"] = scale
    return d


def stock_model_dict(d: dict) -> dict:
    """The model dict ``d`` with every FDConv block replaced by the stock block it converts."""
    from pipeline.nn.blocks import FDCONV_BLOCKS

    return split_fdconv_rows(d, FDCONV_BLOCKS)[0]


def build(d: dict):
    """The ultralytics ``PoseModel`` of a model dict (a copy of ``d`` is parsed)."""
    import copy

    from ultralytics.nn.tasks import PoseModel

    return PoseModel(copy.deepcopy(d), verbose=False)


def figures(name: str, model, imgsz: int) -> ModelSize:
    """ultralytics' summary figures of a built model."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    layers = sum(1 for m in model.modules() if next(m.children(), None) is None)  # leaves, as ultralytics
    return ModelSize(name=name, layers=layers, parameters=get_num_params(model),
                        gflops=get_flops(model, imgsz))


def fdconv_layers(model) -> list[dict]:
    """Per FDConv block of a built model: its layer index, block name and dynamic FDConv count."""
    from pipeline.nn.blocks import FDCONV_BLOCKS
    from pipeline.nn.fdconv import FDConv

    return [{"layer": i, "block": type(layer).__name__,
             "fdconv": sum(1 for m in layer.modules() if isinstance(m, FDConv) and m.is_dynamic)}
            for i, layer in enumerate(model.model) if type(layer).__name__ in FDCONV_BLOCKS]


def twin_name(name: str, scale: str) -> str:
    """How the stock twin of the model file ``name`` is called: ``yolo11n-pose (stock)``."""
    match = re.match(r"(yolo(?:v)?\d+)[nslmx]?(-[a-z]+)?", name)
    return f"{match[1]}{scale}{match[2] or ''} (stock)" if match else f"{name} stock twin ({scale})"


def model_info(cfg: str | Path, scale: str | None = None, imgsz: int = 640) -> ModelInfo:
    """FDConv layers, parameters and GFLOPs of the pose model ``cfg`` at ``scale`` beside its stock twin."""
    from ultralytics.nn.tasks import guess_model_scale

    d = load_model_yaml(cfg, scale)
    scale = d["scale"]
    name = Path(str(d.get("yaml_file", cfg))).stem
    model = build(d)
    return ModelInfo(
        cfg=str(cfg), scale=scale, imgsz=imgsz,
        model=figures(name if guess_model_scale(name) else f"{name} ({scale})", model, imgsz),
        stock=figures(twin_name(name, scale), build(stock_model_dict(d)), imgsz),
        fdconv_layers=fdconv_layers(model),
    )


# --- --compare: the three families side by side ------------------------------------------------------


@dataclass
class FamilyRow:
    """One family at one scale: the FDConv model and its stock twin."""

    family: str
    model: ModelSize
    stock: ModelSize
    latency_ms: dict[int, tuple[float, float]]  # imgsz -> (FDConv, stock) median ms, batch 1, CPU


def _infer(model, x) -> None:
    import torch

    with torch.no_grad():
        model(x)


def compare_families(scale: str = "n", repeats: int = 10, threads: int | None = None) -> list[FamilyRow]:
    """Parameters, GFLOPs@640 and batch-1 CPU latency (fused, eval) of every family at ``scale``,
    on ``threads`` torch threads (default: torch's own choice)."""
    from pipeline.bench.timing import torch_threads

    with torch_threads(threads):
        return [_family_row(family, path, scale, repeats) for family, path in FAMILY_MODELS.items()]


def _family_row(family: str, path: Path, scale: str, repeats: int) -> FamilyRow:
    """One family: both models' figures and their batch-1 latency at each size, timed in turns
    (:func:`pipeline.bench.timing.time_pair`)."""
    import copy

    import torch

    from pipeline.bench.timing import time_pair

    d = load_model_yaml(path, scale)
    models = {"fdconv": build(d), "stock": build(stock_model_dict(d))}
    name = path.stem.replace(path.stem.split("-")[0], path.stem.split("-")[0] + scale, 1)
    row = FamilyRow(family, figures(name, models["fdconv"], 640),
                    figures(twin_name(name, scale), models["stock"], 640), {})
    fused = {key: copy.deepcopy(model).eval().fuse(verbose=False) for key, model in models.items()}
    for imgsz in COMPARE_SIZES:
        x = torch.rand(1, 3, imgsz, imgsz)
        fd, stock = time_pair(functools.partial(_infer, fused["fdconv"], x),
                              functools.partial(_infer, fused["stock"], x), repeats, warmup=1)
        row.latency_ms[imgsz] = (fd.median, stock.median)
    return row


def compare_table(rows: list[FamilyRow], scale: str) -> str:
    """The families as text: per family the stock twin, the FDConv model and their ratio."""
    header = ("family", "model", "parameters", "GFLOPs@640", *(f"CPU ms@{s}" for s in COMPARE_SIZES))
    lines = [header]
    for row in rows:
        for figure, index in ((row.stock, 1), (row.model, 0)):
            latency = (f"{row.latency_ms[s][index]:.1f}" for s in COMPARE_SIZES)
            lines.append((row.family if index else "", figure.name, f"{figure.parameters:,}",
                          f"{figure.gflops:.2f}", *latency))
        lines.append(("", "ratio", f"{row.model.parameters / row.stock.parameters:.4f}",
                      f"{row.model.gflops / row.stock.gflops:.4f}" if row.stock.gflops else "n/a",
                      *(f"{row.latency_ms[s][0] / row.latency_ms[s][1]:.3f}" for s in COMPARE_SIZES)))
    title = f"FDConv vs stock, scale {scale}, batch 1 (CPU latency: median, fused, eval)"
    return title + "\n" + _columns(lines, left=2)


# --- the command ------------------------------------------------------------------------------------


@click.group("model")
def model_command() -> None:
    """Inspect model configurations (FDConv layers, params, GFLOPs, latency)."""


@model_command.command("info")
@click.argument("cfg", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--scale", type=click.Choice(SCALES), default=None,
              help="Model scale (default: the letter in CFG's name, e.g. yolov8n-..., else the first; "
                   "n with --compare).")
@click.option("--imgsz", type=click.IntRange(32), default=640, show_default=True,
              help="Image size for GFLOPs.")
@click.option("--compare", is_flag=True,
              help="The shipped YOLOv8, YOLO11 and YOLO26 FDConv models beside their stock twins, with "
                   "CPU latency at 320 and 640.")
@click.option("--repeats", type=click.IntRange(1), default=10, show_default=True,
              help="Timed forward passes per model and size (--compare).")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads (--compare).")
def info_command(cfg: Path | None, scale: str | None, imgsz: int, compare: bool, repeats: int,
                 threads: int | None) -> None:
    """FDConv layers, parameters and GFLOPs of CFG beside its stock twin (CFG with stock blocks);
    with --compare, the three families side by side."""
    if compare:
        if cfg is not None:
            raise click.UsageError("give either CFG or --compare")
        scale = scale or "n"
        click.echo(compare_table(compare_families(scale, repeats, threads), scale))
        return
    if cfg is None:
        raise click.UsageError("missing CFG (a model YAML) or --compare")
    info = model_info(cfg, scale, imgsz)
    click.echo(f"{info.cfg} at scale {info.scale}, beside its stock twin {info.stock.name}:")
    click.echo(info.fdconv_line())
    click.echo(info.table())
