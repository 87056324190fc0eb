"""``fdpose bench gpu``: the FDConv pose model against its stock twin on a CUDA device, AMP on.

One command that anyone with a GPU runs once and quotes. Per scale (``n`` and ``s`` by default) at
640, both models built from the same YAML (same scale, ``nc`` and ``kpt_shape``), timed alternately
step by step so that noise hits both alike:

- training: images/s of a step at batch 16 (forward, ultralytics' pose loss on synthetic targets,
  backward and an SGD step, under autocast with a gradient scaler, as ultralytics' trainer runs
  AMP), and the peak GPU memory of such a step (measured for each model alone);
- inference (eval, fused as ultralytics' predictor runs it, under autocast): median latency at
  batch 1 and throughput at batch 32.

And two checks of FDConv under autocast:

- FFT precision: every FFT that a training step and an inference pass of the FDConv model run is
  recorded at the dispatcher with its input dtype (:class:`FftRecorder`); the check passes only when
  at least one ran and every one ran in float32 / complex64. Half-precision cuFFT accepts only
  power-of-two sizes, so a half FFT is a failure on most shapes even where it happens to run.
- Agreement: the FDConv model's raw predictions under autocast against float32 on the same images,
  ``max |a - b| / max |b|`` at most :data:`AGREEMENT_TOLERANCE` for the autocast dtype; the stock
  model's figure is printed beside it as the yardstick.

The table and the JSON are written to ``--json`` (the table beside it, as ``.txt``). Without CUDA it
says so in one line and exits 0. ``--device cpu`` runs the same code paths on the CPU with
bfloat16 autocast and no memory figure (used by the tests at tiny sizes); its figures are not GPU
figures.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from pipeline.errors import FdposeError
from pipeline.nn.ultralytics import MODEL_YAML, SCALES

AGREEMENT_TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2}  # max |autocast - float32| / max |float32|
GOOD_FFT_DTYPES = ("float32", "complex64")
DEFAULT_JSON = "bench-gpu.json"


@dataclass
class GpuFigures:
    """One model's figures at one scale (``peak_memory_mb`` is None off CUDA)."""

    parameters: int
    train_images_per_s: float
    peak_memory_mb: float | None
    latency_ms: float  # batch 1, median
    throughput_images_per_s: float  # at the inference batch


@dataclass
class FftCheck:
    """Which FFTs ran (op and input dtype) and whether all of them were float32."""

    ok: bool
    count: int
    dtypes: list[str]
    message: str


@dataclass
class Agreement:
    """Autocast vs float32 predictions of both models: ``max |a - b| / max |b|``."""

    fdconv_rel_err: float
    stock_rel_err: float
    tolerance: float
    ok: bool


@dataclass
class ScaleResult:
    """Both models at one scale, their ratios (FDConv / stock) and FDConv's two checks."""

    scale: str
    fdconv: GpuFigures
    stock: GpuFigures
    ratios: dict[str, float | None]
    fft_check: FftCheck
    agreement: Agreement


@dataclass
class GpuBenchResult:
    """All scales plus the settings and device they were measured with."""

    device: str
    torch_version: str
    cuda_version: str | None
    amp_dtype: str
    imgsz: int
    batch: int
    infer_batch: int
    steps: int
    repeats: int
    scales: list[ScaleResult] = field(default_factory=list)

    def table(self) -> str:
        """The figures as a plain-text table, the checks below it."""
        lines = [f"FDConv vs stock pose model on {self.device}, AMP {self.amp_dtype}, {self.imgsz}px, "
                 f"train batch {self.batch} (median of {self.steps} steps), inference median of "
                 f"{self.repeats}; torch {self.torch_version}, CUDA {self.cuda_version or 'none'}",
                 f"{'scale':>5} {'model':>7} {'params':>10} {'train img/s':>11} {'peak MB':>8} "
                 f"{'b1 ms':>7} {f'b{self.infer_batch} img/s':>10}"]
        for result in self.scales:
            for name, figures in (("fdconv", result.fdconv), ("stock", result.stock)):
                memory = "n/a" if figures.peak_memory_mb is None else f"{figures.peak_memory_mb:.0f}"
                lines.append(f"{result.scale:>5} {name:>7} {figures.parameters:>10,} "
                             f"{figures.train_images_per_s:>11.1f} {memory:>8} {figures.latency_ms:>7.2f} "
                             f"{figures.throughput_images_per_s:>10.1f}")
            ratios = ", ".join(f"{key} {value:.3f}x" for key, value in result.ratios.items()
                               if value is not None)
            lines.append(f"{result.scale:>5} {'ratio':>7} FDConv / stock: {ratios}")
        for result in self.scales:
            check, agree = result.fft_check, result.agreement
            lines.append(f"{result.scale}: FFT dtype check {'ok' if check.ok else 'FAILED'}: {check.message}")
            lines.append(f"{result.scale}: autocast vs float32 predictions, max|a-b|/max|b|: FDConv "
                         f"{agree.fdconv_rel_err:.2e}, stock {agree.stock_rel_err:.2e}, tolerance "
                         f"{agree.tolerance:g}: {'ok' if agree.ok else 'FAILED'}")
        return "\n".join(lines)


# ---------------------------------------------------------------- the FFT dtype check

def fft_recorder():
    """A dispatch mode that records ``(op, input dtype)`` of every FFT run inside it (``.records``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class FftRecorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[tuple[str, str]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__
            if name.startswith("_fft_"):
                self.records.append((name, str(args[0].dtype).removeprefix("torch.")))
            return func(*args, **(kwargs or {}))

    return FftRecorder()


def check_fft_dtypes(records: list[tuple[str, str]], error: str | None = None) -> FftCheck:
    """Pass only when at least one FFT ran, all in float32 / complex64, and none raised ``error``."""
    dtypes = sorted({dtype for _, dtype in records})
    bad = [f"{op}({dtype})" for op, dtype in records if dtype not in GOOD_FFT_DTYPES]
    if error is not None:
        return FftCheck(False, len(records), dtypes, f"an FFT raised under autocast: {error}")
    if not records:
        return FftCheck(False, 0, dtypes, "no FFT ran, so nothing was checked")
    if bad:
        listed = ", ".join(sorted(set(bad)))
        return FftCheck(False, len(records), dtypes,
                        f"{len(bad)} of {len(records)} FFTs ran in half precision: {listed}")
    return FftCheck(True, len(records), dtypes, f"all {len(records)} FFTs ran in {'/'.join(dtypes)}")


def rel_err(actual, expected) -> float:
    """``max |actual - expected| / max |expected|``, in float64."""
    expected = expected.double()
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


# ---------------------------------------------------------------- measuring

class _Device:
    """The device, its autocast dtype and how to wait for it (CUDA runs asynchronously)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self.amp_dtype = torch.float16 if self.cuda else torch.bfloat16

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def autocast(self):
        return self.torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        if self.cuda:
            return self.torch.cuda.get_device_name(self.device)
        return "CPU (code-path check, not a GPU figure)"


def _trainer(model, dev: _Device, batch: dict):
    """One AMP training step of ``model`` on ``batch``, as ultralytics' trainer runs it."""
    torch = dev.torch
    from ultralytics.cfg import get_cfg

    model.args = get_cfg()  # the loss reads its gains (box, pose, kobj, ...) from model.args
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.cuda)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with dev.autocast():
            loss, _ = model.loss(batch)
        scaler.scale(loss.sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        dev.sync()

    return step


def _peak_memory_mb(step, dev: _Device) -> float | None:
    """Peak GPU memory of one call of ``step`` run alone (None off CUDA)."""
    if not dev.cuda:
        return None
    torch = dev.torch
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev.device)
    step()
    return torch.cuda.max_memory_allocated(dev.device) / 2**20


def _predict(model, x, dev: _Device, amp: bool = True) -> None:
    with dev.torch.inference_mode(), (dev.autocast() if amp else _no_autocast()):
        model(x)
    dev.sync()


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _predictions(model, x, dev: _Device, amp: bool):
    """The raw prediction tensor of an eval-mode pose model (float32)."""
    with dev.torch.inference_mode(), (dev.autocast() if amp else _no_autocast()):
        out = model(x)
    return (out[0] if isinstance(out, (list, tuple)) else out).float()


def _fft_check(models: dict, fused: dict, batch: dict, x, dev: _Device) -> FftCheck:
    """Record every FFT of one FDConv training step and one inference pass under autocast."""
    recorder = fft_recorder()
    model = copy.deepcopy(models["fdconv"])
    step = _trainer(model, dev, batch)
    inference = copy.deepcopy(fused["fdconv"])
    try:
        with recorder:
            step()
            _predict(inference, x, dev)
    except RuntimeError as error:  # e.g. cuFFT refusing a half-precision, non-power-of-two size
        return check_fft_dtypes(recorder.records, error=str(error).splitlines()[0])
    return check_fft_dtypes(recorder.records)


def _agreement(fused: dict, x, dev: _Device) -> Agreement:
    """Autocast vs float32 predictions of both fused models on the same images."""
    errors = {name: rel_err(_predictions(model, x, dev, amp=True), _predictions(model, x, dev, amp=False))
              for name, model in fused.items()}
    tolerance = AGREEMENT_TOLERANCE[str(dev.amp_dtype).removeprefix("torch.")]
    return Agreement(errors["fdconv"], errors["stock"], tolerance, errors["fdconv"] <= tolerance)


def measure_scale(scale: str, dev: _Device, imgsz: int, batch: int, infer_batch: int, steps: int,
                  repeats: int, seed: int = 0, cfg: str | Path = MODEL_YAML) -> ScaleResult:
    """Every figure and both checks for the FDConv model of ``cfg`` and its stock twin at ``scale``."""
    torch = dev.torch
    from pipeline.bench.model import pose_batch
    from pipeline.bench.timing import time_pair
    from pipeline.nn.info import build, load_model_yaml, stock_model_dict

    torch.manual_seed(seed)
    d = load_model_yaml(cfg, scale)
    models = {"fdconv": build(d).to(dev.device), "stock": build(stock_model_dict(d)).to(dev.device)}
    data = pose_batch(batch, imgsz, list(d["kpt_shape"]), seed)
    data = {key: value.to(dev.device) for key, value in data.items()}
    fused = {name: copy.deepcopy(model).eval().fuse(verbose=False) for name, model in models.items()}
    generator = torch.Generator().manual_seed(seed)
    single = torch.rand(1, 3, imgsz, imgsz, generator=generator).to(dev.device)
    many = torch.rand(infer_batch, 3, imgsz, imgsz, generator=generator).to(dev.device)

    fft_check = _fft_check(models, fused, data, single, dev)
    agreement = _agreement(fused, many[:2], dev)
    steps_of = {name: _trainer(model, dev, data) for name, model in models.items()}
    memory = {name: _peak_memory_mb(step, dev) for name, step in steps_of.items()}
    train = time_pair(steps_of["fdconv"], steps_of["stock"], steps, warmup=2)
    latency = time_pair(functools.partial(_predict, fused["fdconv"], single, dev),
                        functools.partial(_predict, fused["stock"], single, dev), repeats, warmup=3)
    throughput = time_pair(functools.partial(_predict, fused["fdconv"], many, dev),
                           functools.partial(_predict, fused["stock"], many, dev), max(3, repeats // 5),
                           warmup=1)

    figures = {}
    for index, name in enumerate(("fdconv", "stock")):
        figures[name] = GpuFigures(
            parameters=sum(p.numel() for p in models[name].parameters()),
            train_images_per_s=train[index].per_second(batch),
            peak_memory_mb=memory[name],
            latency_ms=latency[index].median,
            throughput_images_per_s=throughput[index].per_second(infer_batch),
        )
    fd, stock = figures["fdconv"], figures["stock"]
    ratios = {
        "train time": stock.train_images_per_s / fd.train_images_per_s,
        "peak memory": None if fd.peak_memory_mb is None else fd.peak_memory_mb / stock.peak_memory_mb,
        "b1 latency": fd.latency_ms / stock.latency_ms,
        f"b{infer_batch} time": stock.throughput_images_per_s / fd.throughput_images_per_s,
    }
    return ScaleResult(scale, fd, stock, ratios, fft_check, agreement)


def cuda_missing() -> str | None:
    """Why there is no CUDA device to measure on, or None when there is one."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"no CUDA device here (torch {torch.__version__}, {build}): nothing measured"


def bench_gpu(scales: tuple[str, ...] = ("n", "s"), device: str = "cuda", imgsz: int = 640, batch: int = 16,
              infer_batch: int = 32, steps: int = 20, repeats: int = 50,
              json_path: str | Path = DEFAULT_JSON, seed: int = 0) -> GpuBenchResult:
    """Measure every scale on ``device`` and write the JSON (and the table beside it, ``.txt``)."""
    json_path = Path(json_path)
    if not json_path.resolve().parent.is_dir():
        raise FdposeError("the folder for the JSON output does not exist", path=json_path)
    from pipeline.io import atomic_write_text, write_json

    dev = _Device(device)
    torch = dev.torch
    if dev.cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes, as ultralytics' trainer sets it
    result = GpuBenchResult(device=dev.describe(), torch_version=torch.__version__,
                            cuda_version=torch.version.cuda if dev.cuda else None,
                            amp_dtype=str(dev.amp_dtype).removeprefix("torch."), imgsz=imgsz, batch=batch,
                            infer_batch=infer_batch, steps=steps, repeats=repeats)
    for scale in scales:
        result.scales.append(measure_scale(scale, dev, imgsz, batch, infer_batch, steps, repeats, seed))
    write_json(json_path, asdict(result) | {"table": result.table()})
    atomic_write_text(json_path.with_suffix(".txt"), result.table() + "\n")
    return result


def _scales(ctx, param, value: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [scale for scale in chosen if scale not in SCALES]
    if not chosen or unknown:
        raise click.BadParameter(f"scales are a comma-separated list of {', '.join(SCALES)}, got {value!r}")
    return chosen


@click.command("gpu")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cpu: run the same code paths on the CPU (bfloat16 autocast); not GPU figures.")
@click.option("--scales", default="n,s", show_default=True, callback=_scales, help="Comma-separated scales.")
@click.option("--imgsz", type=click.IntRange(min=32), default=640, show_default=True, help="Image size.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Training batch.")
@click.option("--infer-batch", type=click.IntRange(min=2), default=32, show_default=True,
              help="Inference batch of the throughput figure.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed training steps per model.")
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed batch-1 inference calls per model (throughput: a fifth of them, at least 3).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=DEFAULT_JSON, show_default=True,
              help="Write the figures here (and the table beside it, .txt).")
def command(device: str, scales: tuple[str, ...], imgsz: int, batch: int, infer_batch: int, steps: int,
            repeats: int, json_path: str) -> None:
    """FDConv vs stock pose models on a CUDA GPU with AMP: speed, memory, FFT precision, agreement."""
    if device == "cuda":
        missing = cuda_missing()
        if missing is not None:
            click.echo(f"fdpose bench gpu: {missing}; run it on a machine with a CUDA GPU.")
            return
    result = bench_gpu(scales=scales, device=device, imgsz=imgsz, batch=batch, infer_batch=infer_batch,
                       steps=steps, repeats=repeats, json_path=json_path)
    click.echo(result.table())
    click.echo(f"wrote {json_path} and {Path(json_path).with_suffix('.txt')}")
