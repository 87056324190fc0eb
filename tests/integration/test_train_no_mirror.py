"""A dataset whose left/right pairs are unknown is never mirrored in training: one epoch on CPU, with
every horizontal or vertical flip of labels counted where ultralytics makes it (``Instances.fliplr`` /
``flipud``, which its RandomFlip calls). The same run on a dataset with known pairs does mirror, so the
count can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from ultralytics.utils.instance import Instances

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import Skeleton
from pipeline.train import train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SMALL = {"imgsz": 64, "batch": 4, "device": "cpu", "seed": 3, "workers": 0, "epochs": 1, "plots": False,
         "model": str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")}


def make_dataset(root: Path, names: list[str]) -> Path:
    """8 train and 2 val images with one rectangle each; its two ends and centre are the keypoints."""
    rng = np.random.default_rng(1)
    dataset = Dataset(Skeleton(names, class_names=["blob"]))
    root.mkdir(parents=True)
    for index in range(10):
        pixels = np.full((64, 64, 3), 40, np.uint8)
        x0, y0 = (int(v) for v in rng.integers(4, 30, 2))
        pixels[y0:y0 + 20, x0:x0 + 30] = (200, 100, 50)
        path = root / f"{index}.png"
        Image.fromarray(pixels).save(path)
        points = [[x0, y0 + 10, 2], [x0 + 30, y0 + 10, 2], [x0 + 15, y0 + 10, 2]]
        instance = Instance(0, [x0, y0, x0 + 30, y0 + 20], points)
        dataset.images.append(ImageRecord(path, path.name, 64, 64, [instance],
                                          split="train" if index < 8 else "val"))
    return write_yolo(dataset, root / "data")


def mirrors_seen(data_yaml: Path, out: Path, monkeypatch) -> int:
    seen = []
    for name in ("fliplr", "flipud"):
        original = getattr(Instances, name)

        def counted(self, *args, _original=original, **kwargs):
            seen.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Instances, name, counted)
    train(data_yaml, out, hyp={"mosaic": 0.0}, **SMALL)
    monkeypatch.undo()
    return len(seen)


def test_unknown_pairs_train_without_a_single_mirrored_sample(tmp_path, monkeypatch):
    unnamed = make_dataset(tmp_path / "unnamed", ["kp0", "kp1", "kp2"])
    assert "flip_idx" not in yaml.safe_load(unnamed.read_text())
    assert mirrors_seen(unnamed, tmp_path / "run_unnamed", monkeypatch) == 0
    args = yaml.safe_load((tmp_path / "run_unnamed" / "args.yaml").read_text())
    assert args["fliplr"] == 0.0 and args["flipud"] == 0.0
    named = make_dataset(tmp_path / "named", ["left_end", "right_end", "centre"])
    assert mirrors_seen(named, tmp_path / "run_named", monkeypatch) > 0  # fliplr 0.5: about half the samples


def test_asking_to_mirror_a_dataset_without_pairs_is_an_error(tmp_path):
    unnamed = make_dataset(tmp_path / "unnamed", ["kp0", "kp1", "kp2"])
    with pytest.raises(FdposeError, match="no flip_idx.*drop fliplr") as error:
        train(unnamed, tmp_path / "run", hyp={"fliplr": 0.5}, **SMALL)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()
