"""What a model costs beside what it scores: parameters, GFLOPs and CPU latency at the eval size.

Parameters and GFLOPs are ultralytics' own counts (``get_num_params``, ``get_flops``) of the trained
checkpoint (so ``nc`` and ``kpt_shape`` are the dataset's). Latency is measured here and now, for
every run's checkpoint side by side: each model fused and in eval mode as ultralytics' predictor runs
it, batch 1 at the eval image size, on a fixed number of torch threads, timed by the project's one
harness (:mod:`pipeline.bench.timing`): after a warm-up the models take turns call by call, so machine
noise hits all of them alike; each run's latency is the median of its calls.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ModelCost:
    """Size of one trained model."""

    parameters: int
    gflops: float


def _torch_model(weights: Path):
    from pipeline.model_io import load_yolo

    return load_yolo(weights).model.float()


def model_cost(weights: Path, imgsz: int) -> ModelCost:
    """Parameters and GFLOPs (at ``imgsz``) of the pose model in ``weights``."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = _torch_model(weights)
    return ModelCost(parameters=int(get_num_params(model)), gflops=float(get_flops(model, imgsz)))


def measure_latency(weights: list[Path], imgsz: int, repeats: int = 20, warmup: int = 3,
                    threads: int = 1) -> list[float]:
    """Median batch-1 CPU latency (milliseconds) of each checkpoint, the models taking turns call by
    call (:func:`pipeline.bench.timing.time_interleaved`)."""
    import functools

    import torch

    from pipeline.bench.timing import time_interleaved, torch_threads

    with torch_threads(threads), torch.no_grad():
        models = [copy.deepcopy(_torch_model(path)).cpu().eval().fuse(verbose=False) for path in weights]
        image = torch.linspace(0, 1, 3 * imgsz * imgsz).reshape(1, 3, imgsz, imgsz)
        timings = time_interleaved({str(index): functools.partial(model, image)
                                    for index, model in enumerate(models)}, repeats, warmup)
    return [timings[str(index)].median for index in range(len(models))]
