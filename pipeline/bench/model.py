"""``fdpose bench model``: the C2f_FDConv YOLOv8-pose model against stock YOLOv8-pose of the same scale.

Both models are built from their YAMLs (same scale, ``nc`` and ``kpt_shape``) and timed side by
side in the same run, alternating repeat by repeat so machine noise hits both alike:

- batch-1 inference at 320 and 640: eval mode, no grad, both models fused as ultralytics' predictor
  runs them (FDConv uses its cached basis kernels);
- one training step at batch 8, 320: forward, ultralytics' pose loss on synthetic targets (one
  person per image), backward and an SGD step, as ultralytics' trainer does it.

Per case the table gives medians and minima over the repeats and both ratios (C2f_FDConv / stock).
The verdict against the target uses the ratio of minima: on a shared machine the fastest repeat is
the one least disturbed by other processes, so it estimates each model's own cost best; the
median ratio is printed beside it.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from pipeline.bench.timing import Ratio, Timing
from pipeline.nn.ultralytics import MODEL_YAML, SCALES

TRAIN_BATCH = 8
TRAIN_IMGSZ = 320
INFERENCE_SIZES = (320, 640)
TARGETS = {("inference", 320): 1.15, ("inference", 640): 1.05, ("train_step", 320): 1.10}  # FDConv / stock


@dataclass
class ModelBenchRow:
    """One timing: a mode at an image size, both models, their ratio and its target."""

    mode: str
    imgsz: int
    batch: int
    fdconv_ms: float  # median
    stock_ms: float
    ratio: float  # of medians
    fdconv_min_ms: float
    stock_min_ms: float
    ratio_min: float  # of minima: judged against the target
    target: float


@dataclass
class ModelBenchResult:
    """All rows plus the settings and models they were measured with."""

    scale: str
    threads: int
    repeats: int
    train_repeats: int
    torch_version: str
    fdconv_parameters: int
    stock_parameters: int
    rows: list[ModelBenchRow]

    def table(self) -> str:
        """The figures as a plain-text table."""
        lines = [f"YOLOv8{self.scale}-pose C2f_FDConv vs stock, {self.threads} threads, median of "
                 f"{self.repeats} (train: {self.train_repeats}), torch {self.torch_version}; parameters "
                 f"{self.fdconv_parameters:,} vs {self.stock_parameters:,} "
                 f"({self.fdconv_parameters / self.stock_parameters:.4f}x)",
                 f"{'':>22} {'--------- median ---------':>28} {'---------- min -----------':>28}",
                 f"{'mode':>10} {'imgsz':>5} {'batch':>5} {'FDConv ms':>10} {'stock ms':>10} {'ratio':>6} "
                 f"{'FDConv ms':>10} {'stock ms':>10} {'ratio':>6} {'target':>6}"]
        for row in self.rows:
            verdict = "ok" if row.ratio_min <= row.target else "OVER"
            lines.append(f"{row.mode:>10} {row.imgsz:>5} {row.batch:>5} {row.fdconv_ms:>10.2f} "
                         f"{row.stock_ms:>10.2f} {row.ratio:>6.3f} {row.fdconv_min_ms:>10.2f} "
                         f"{row.stock_min_ms:>10.2f} {row.ratio_min:>6.3f} "
                         f"{'<=' + format(row.target, '.3g'):>6} {verdict}")
        return "\n".join(lines)


def _row(mode: str, imgsz: int, batch: int, times: tuple[Timing, Timing]) -> ModelBenchRow:
    """Medians, minima and their ratios of (C2f_FDConv, stock) timings."""
    fd, stock = times
    ratio = Ratio.of(fd, stock)
    return ModelBenchRow(mode, imgsz, batch, fd.median, stock.median, ratio.median, fd.minimum, stock.minimum,
                         ratio.minimum, TARGETS[(mode, imgsz)])


def pose_batch(batch: int, imgsz: int, kpt_shape: list[int], seed: int) -> dict:
    """A synthetic training batch in ultralytics' collated format: one person per image (CPU tensors)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    centre = 0.3 + 0.4 * torch.rand(batch, 2, generator=generator)
    size = 0.2 + 0.3 * torch.rand(batch, 2, generator=generator)
    offsets = torch.rand(batch, kpt_shape[0], 2, generator=generator) - 0.5
    keypoints = centre[:, None] + offsets * size[:, None]
    if kpt_shape[1] == 3:
        keypoints = torch.cat([keypoints, torch.full((batch, kpt_shape[0], 1), 2.0)], dim=-1)
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=generator),
        "batch_idx": torch.arange(batch, dtype=torch.float32),
        "cls": torch.zeros(batch, 1),
        "bboxes": torch.cat([centre, size], dim=1),
        "keypoints": keypoints,
    }


def bench_model(scale: str = "n", threads: int = 2, repeats: int = 20, train_repeats: int = 5,
                json_path: str | Path | None = None, cfg: str | Path = MODEL_YAML,
                seed: int = 0) -> ModelBenchResult:
    """Time the C2f_FDConv model of ``cfg`` against stock YOLOv8-pose at ``scale``; write JSON if asked."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import PoseModel

    from pipeline.bench.timing import time_pair
    from pipeline.io import write_json
    from pipeline.nn.info import load_model_yaml, stock_model_dict

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    d = load_model_yaml(cfg, scale)
    stock_d = stock_model_dict(d)  # the same YAML with stock blocks: same scale, nc and kpt_shape
    models = {"fdconv": PoseModel(d, verbose=False), "stock": PoseModel(stock_d, verbose=False)}

    rows = []
    fused = {name: copy.deepcopy(model).eval().fuse(verbose=False) for name, model in models.items()}
    for imgsz in INFERENCE_SIZES:
        x = torch.rand(1, 3, imgsz, imgsz)

        def infer(model: torch.nn.Module, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        times = time_pair(functools.partial(infer, fused["fdconv"]),
                           functools.partial(infer, fused["stock"]), repeats, warmup=3)
        rows.append(_row("inference", imgsz, 1, times))

    batch = pose_batch(TRAIN_BATCH, TRAIN_IMGSZ, list(d["kpt_shape"]), seed)
    optimizers = {}
    for name, model in models.items():
        model.args = get_cfg()  # the loss reads its gains (box, pose, kobj, ...) from model.args
        model.train()
        optimizers[name] = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        loss, _ = models[name].loss(batch)
        loss.sum().backward()
        optimizers[name].step()

    times = time_pair(functools.partial(step, "fdconv"), functools.partial(step, "stock"), train_repeats,
                       warmup=1)
    rows.append(_row("train_step", TRAIN_IMGSZ, TRAIN_BATCH, times))

    result = ModelBenchResult(
        scale=scale, threads=threads, repeats=repeats, train_repeats=train_repeats,
        torch_version=torch.__version__,
        fdconv_parameters=sum(p.numel() for p in models["fdconv"].parameters()),
        stock_parameters=sum(p.numel() for p in models["stock"].parameters()),
        rows=rows,
    )
    if json_path is not None:
        write_json(json_path, asdict(result))
    return result


@click.command("model")
@click.option("--scale", type=click.Choice(SCALES), default="n", show_default=True, help="Model scale.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="torch CPU threads.")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed repeats per inference case.")
@click.option("--train-repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed training steps.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the figures to this JSON file.")
def command(scale: str, threads: int, repeats: int, train_repeats: int, json_path: str | None) -> None:
    """C2f_FDConv YOLOv8-pose vs stock: batch-1 inference at 320 and 640, a batch-8 training step at 320."""
    result = bench_model(scale=scale, threads=threads, repeats=repeats, train_repeats=train_repeats,
                         json_path=json_path)
    click.echo(result.table())
    if json_path is not None:
        click.echo(f"wrote {json_path}")
