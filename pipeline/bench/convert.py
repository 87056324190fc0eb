"""``fdpose bench convert``: our COCO -> YOLO-pose conversion beside ultralytics' ``convert_coco``.

A generated COCO keypoint file (default 100,000 annotations on 20,000 images, 17 keypoints) is
converted by both, each in its own fresh Python process started in this run, so neither pays for
the other's memory or imports; each process times only the conversion call and reports its peak
resident memory.

What each side does, honestly:
- ours validates every annotation (ids, categories, keypoint counts, visibility, NaN, keypoints
  outside the image, boxes), opens every image's header (existence, format, size, EXIF orientation)
  and compares it with the JSON, assigns splits, hard-links every image into the dataset, writes the
  labels and ``report.json``, all in a temporary folder renamed into place;
- ultralytics reads the JSON and writes label files, trusting the JSON's sizes and never touching
  the images.
The images are real 64x48 JPEG files (the same bytes in each, one file per image): every header
read is real, on a warm file cache.
"""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from pipeline.bench.timing import time_once

IMAGE_SIZE = (64, 48)


def generate(root: Path, annotations: int, images: int, keypoints: int = 17, seed: int = 0) -> Path:
    """Write ``root/annotations/coco.json`` and ``root/images/`` (``images`` small JPEG files)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    width, height = IMAGE_SIZE
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, (90, 120, 150)).save(buffer, format="JPEG", quality=80)
    names = [f"{i:06d}.jpg" for i in range(images)]
    for name in names:  # one file (inode) per image, as real data has
        (image_dir / name).write_bytes(buffer.getvalue())
    owner = np.sort(rng.integers(0, images, annotations))
    x0 = rng.uniform(0, width / 2, annotations)
    y0 = rng.uniform(0, height / 2, annotations)
    w = rng.uniform(4, width / 2, annotations)
    h = rng.uniform(4, height / 2, annotations)
    points = np.empty((annotations, keypoints, 3))
    points[:, :, 0] = x0[:, None] + rng.uniform(0, 1, (annotations, keypoints)) * w[:, None]
    points[:, :, 1] = y0[:, None] + rng.uniform(0, 1, (annotations, keypoints)) * h[:, None]
    points[:, :, 2] = rng.choice([0, 1, 2], p=[0.2, 0.1, 0.7], size=(annotations, keypoints))
    points[:, 0, 2] = 2  # at least one labelled point: ultralytics drops annotations without one
    points[points[:, :, 2] == 0, :2] = 0
    points[:, :, :2] = np.round(points[:, :, :2], 2)
    # A few real-world slips to validate: points a little outside the image (clipped, reported).
    slips = rng.choice(annotations, size=max(1, annotations // 1000), replace=False)
    points[slips, 1, :] = [width + 3.5, height / 2, 2]
    coco = {
        "images": [{"id": i + 1, "file_name": name, "width": width, "height": height}
                   for i, name in enumerate(names)],
        "annotations": [
            {"id": i + 1, "image_id": int(owner[i]) + 1, "category_id": 1, "iscrowd": 0,
             "bbox": [round(float(x0[i]), 2), round(float(y0[i]), 2), round(float(w[i]), 2),
                      round(float(h[i]), 2)],
             "area": round(float(w[i] * h[i]), 2), "num_keypoints": int((points[i, :, 2] > 0).sum()),
             "keypoints": points[i].reshape(-1).tolist()}
            for i in range(annotations)
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": [f"kp{i}" for i in range(keypoints)],
                        "skeleton": []}],
    }
    for annotation in coco["annotations"]:  # visibility as integers, as COCO writes it
        values = annotation["keypoints"]
        values[2::3] = [int(v) for v in values[2::3]]
    json_dir = root / "annotations"
    json_dir.mkdir(exist_ok=True)
    path = json_dir / "coco.json"
    path.write_text(json.dumps(coco, separators=(",", ":")), encoding="utf-8")
    return path


def _memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB. Read from /proc because
    ``ru_maxrss`` survives exec on Linux: a worker would report its parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    """Resident memory now (the imports' share, so the call's own growth can be told apart)."""
    return _memory_mib("VmRSS")


def _measure(which: str, json_path: Path, images: Path, out: Path) -> dict:
    """Run one converter in this process; seconds of the conversion call and peak RSS."""
    if which == "ours":
        import pipeline.formats.coco  # noqa: F401  (imported before measuring, as ultralytics' is)
        import pipeline.formats.yolo  # noqa: F401
        from pipeline.convert import convert

        before = _rss_mib()
        seconds, result = time_once(functools.partial(
            convert, source="coco", input_path=json_path, images=images, out=out, to="yolo", split="0.8,0.2",
            progress=False, params_path=os.devnull))  # built-in defaults
        summary = result.report["summary"]
        written = {"images": summary["images"], "instances": summary["instances"],
                   "reported": len(result.report["details"]["items"])}
    else:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.data.converter import convert_coco

        before = _rss_mib()
        seconds, _ = time_once(functools.partial(convert_coco, labels_dir=str(json_path.parent),
                                                 save_dir=str(out), use_keypoints=True, cls91to80=False))
        labels = list((out / "labels").rglob("*.txt"))
        written = {"label_files": len(labels)}
    return {"seconds": seconds, "peak_rss_mib": _memory_mib("VmHWM"), "rss_before_mib": before, **written}


def _run(which: str, json_path: Path, images: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "pipeline.bench.convert", which, str(json_path), str(images), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"{which} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@click.command("convert")
@click.option("--annotations", default=100_000, show_default=True, help="Annotations in the generated file.")
@click.option("--images", default=20_000, show_default=True, help="Images in the generated file.")
@click.option("--keypoints", default=17, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), help="Keep the generated data here.")
@click.option("--json-out", type=click.Path(path_type=Path), help="Also write the figures as JSON.")
def command(annotations: int, images: int, keypoints: int, workdir: Path | None,
            json_out: Path | None) -> None:
    """fdpose convert vs ultralytics' convert_coco on one generated COCO file, in one run."""
    root = Path(tempfile.mkdtemp(prefix="fdpose-bench-convert-")) if workdir is None else workdir
    try:
        seconds, json_path = time_once(functools.partial(generate, root, annotations, images, keypoints))
        click.echo(f"generated {annotations} annotations on {images} images ({keypoints} keypoints, "
                   f"{json_path.stat().st_size / 2**20:.1f} MiB JSON) in {seconds:.1f} s")
        ultralytics = _run("ultralytics", json_path, root / "images", root / "out-ultralytics")
        ours = _run("ours", json_path, root / "images", root / "out-fdpose")
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    ratio = ultralytics["seconds"] / ours["seconds"]
    for name, figures, what in (
        ("fdpose convert", ours, f"{ours['images']} images, {ours['instances']} instances, "
         f"{ours['reported']} items reported; validates every annotation, reads every image header, "
         "links the images"),
        ("ultralytics", ultralytics, f"{ultralytics['label_files']} label files; trusts the JSON, "
         "never opens an image"),
    ):
        growth = figures["peak_rss_mib"] - figures["rss_before_mib"]
        click.echo(f"{name:<15} {figures['seconds']:7.2f} s  peak RSS {figures['peak_rss_mib']:5.0f} MiB "
                   f"(+{growth:.0f} MiB during the call)  ({what})")
    click.echo(f"speed-up vs ultralytics convert_coco: {ratio:.2f}x")
    if json_out is not None:
        from pipeline.io import write_json

        write_json(json_out, {"annotations": annotations, "images": images, "keypoints": keypoints,
                              "fdpose": ours, "ultralytics": ultralytics, "speedup": ratio})


if __name__ == "__main__":  # worker: python -m pipeline.bench.convert ours|ultralytics JSON IMAGES OUT
    print(json.dumps(_measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))))
