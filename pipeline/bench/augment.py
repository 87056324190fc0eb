"""``fdpose bench augment``: augmentation throughput with one worker process and with all cores.

The dataset is generated (noise backgrounds, one to three 17-keypoint instances per image) so the
figures do not depend on any data on disk; the shipped ``cfg/augment.yaml`` is the workload. Each
timing covers the whole ``augment`` call (worker start-up, reading, augmenting, encoding, writing).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np

from pipeline.bench.timing import time_once
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.skeleton import COCO_PERSON_KEYPOINTS, Skeleton


def make_dataset(root: Path, images: int, size: int, seed: int = 0) -> Path:
    """A YOLO-pose dataset of ``images`` JPEG training images (``size`` x ``size``) and a few
    validation ones, with random 17-keypoint instances; returns its ``data.yaml``."""
    import cv2

    from pipeline.formats.yolo import write_yolo

    rng = np.random.default_rng(seed)
    dataset = Dataset(Skeleton(list(COCO_PERSON_KEYPOINTS), ["person"]))
    source = root / "source"
    source.mkdir(parents=True, exist_ok=True)
    for index in range(images + max(1, images // 10)):
        # Smooth random background (upsampled noise) so that JPEG sizes are realistic.
        pixels = cv2.resize(rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8), (size, size),
                            interpolation=cv2.INTER_CUBIC)
        instances = []
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform(0.2 * size, 0.8 * size, 2)
            points = centre + rng.normal(0, 0.12 * size, (17, 2))
            keypoints = np.column_stack([points, rng.choice([1, 2], 17, p=[0.2, 0.8])])
            for x, y, _ in keypoints:
                cv2.circle(pixels, (int(x), int(y)), 3, (255, 255, 255), -1)
            box = np.concatenate([points.min(axis=0), points.max(axis=0)])
            instances.append(Instance(0, box, keypoints))
        path = source / f"{index:05d}.jpg"
        cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        split = "train" if index < images else "val"
        dataset.images.append(ImageRecord(path, path.name, size, size, instances, split=split))
    return write_yolo(dataset, root / "dataset")


@dataclass
class AugmentBench:
    images: int
    size: int
    copies: int
    config: str
    rows: list[dict] = field(default_factory=list)  # workers, seconds, images in/s, variants/s
    speedup: float = 0.0


def bench_augment(images: int = 200, size: int = 256, copies: int = 2,
                  config: str | Path = "cfg/augment.yaml", workers: int | None = None,
                  json_path: str | Path | None = None) -> AugmentBench:
    """Time ``augment`` on a generated dataset with 1 worker and with ``workers`` (default all cores);
    check both outputs are byte-identical."""
    from pipeline.augment import augment, default_workers
    from pipeline.io import write_json

    workers = default_workers() if workers is None else workers
    result = AugmentBench(images=images, size=size, copies=copies, config=str(config))
    with tempfile.TemporaryDirectory(prefix="fdpose-bench-augment-") as tmp:
        data = make_dataset(Path(tmp), images, size)
        outputs = []
        for count in dict.fromkeys([1, workers]):
            out = Path(tmp) / f"out-{count}"
            seconds, _ = time_once(functools.partial(augment, data, out, copies=copies, seed=0, config=config,
                                                     workers=count, progress=False))
            result.rows.append({"workers": count, "seconds": round(seconds, 3),
                                "images_per_s": round(images / seconds, 2),
                                "variants_per_s": round(images * copies / seconds, 2)})
            outputs.append({p.relative_to(out).as_posix(): p.read_bytes()
                            for p in sorted(out.rglob("*")) if p.is_file()})
        if any(output != outputs[0] for output in outputs):
            raise RuntimeError("outputs differ between worker counts: augment is not deterministic")
    result.speedup = round(result.rows[0]["seconds"] / result.rows[-1]["seconds"], 2)
    if json_path is not None:
        write_json(json_path, asdict(result))
    return result


@click.command("augment")
@click.option("--images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Generated training images.")
@click.option("--size", type=click.IntRange(min=32), default=256, show_default=True,
              help="Image side, pixels.")
@click.option("--copies", type=click.IntRange(min=1), default=2, show_default=True,
              help="Augmented variants per image.")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), default="cfg/augment.yaml",
              show_default=True, help="Transforms file.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the parallel run [all cores].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the figures to this JSON file.")
def command(images: int, size: int, copies: int, config: str, workers: int | None,
            json_path: str | None) -> None:
    """Augmentation throughput, 1 worker vs all cores (outputs checked byte-identical)."""
    result = bench_augment(images=images, size=size, copies=copies, config=config, workers=workers,
                           json_path=json_path)
    click.echo(f"augment: {images} images {size}x{size}, {copies} copies each, {config}, "
               f"{os.cpu_count()} CPUs visible")
    click.echo(f"{'workers':>8} {'seconds':>9} {'images/s':>9} {'variants/s':>11}")
    for row in result.rows:
        click.echo(f"{row['workers']:>8} {row['seconds']:>9.2f} {row['images_per_s']:>9.1f} "
                   f"{row['variants_per_s']:>11.1f}")
    click.echo(f"speed-up {result.rows[-1]['workers']} workers vs 1: {result.speedup:.2f}x "
               "(outputs byte-identical)")
    if json_path is not None:
        click.echo(f"wrote {json_path}")
