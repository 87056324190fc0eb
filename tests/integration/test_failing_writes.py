"""Writes that fail half way (issue 22): every stage that writes, run as the CLI in a child process
under a file size limit (``RLIMIT_FSIZE``, with SIGXFSZ ignored so the write raises ``EFBIG`` as a full
disk raises ``ENOSPC``), over an earlier output of its own. Each must print one ``Error:`` line, exit
non-zero, leave the earlier output byte for byte as it was, and leave no temporary sibling behind.

The limit is chosen per stage so that small files of the output are written first and a larger one
fails: the failure comes half way through the output, not at its first byte."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FDCONV_YAML = str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")
TRAIN = ["--model", FDCONV_YAML, "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
         "--workers", "0"]


def fdpose(*args: str, limit: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``fdpose ARGS`` in a child process, its files limited to ``limit`` bytes each."""
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_files if limit is not None else None)


def snapshot(root: Path) -> dict[str, str | None]:
    """Every path under ``root``'s parent (the output and its siblings) with a digest of its bytes."""
    return {str(path.relative_to(root.parent)): hashlib.sha256(path.read_bytes()).hexdigest()
            if path.is_file() else None for path in sorted(root.parent.rglob("*"))}


def check_failed_write(out: Path, before: dict, run: subprocess.CompletedProcess) -> str:
    assert run.returncode != 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    # stderr: the stage's own notes (train names its device), then one Error: line, the last.
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], run.stderr
    assert "could not write (" in errors[0] and "unchanged" in errors[0], errors[0]
    after = snapshot(out)
    left = sorted(set(after) - set(before))
    assert not left, f"left behind: {left}"
    assert after == before, "the earlier output changed"
    return errors[0]


def largest_file(folder: Path) -> int:
    return max(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Any]:
    """One successful run of each stage, each in a folder of its own: the earlier outputs."""
    root = tmp_path_factory.mktemp("failing-writes")
    images, annotations = [], []
    (root / "images").mkdir()
    for index in range(8):
        picture = Image.new("RGB", (96, 96), (30 + 10 * index, 40, 40))
        x0 = 10 + 5 * index
        ImageDraw.Draw(picture).rectangle([x0, 20, x0 + 40, 70], fill=(220, 180, 60))
        picture.save(root / "images" / f"img{index}.png")
        images.append({"id": index + 1, "file_name": f"img{index}.png", "width": 96, "height": 96})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [x0, 20, 40, 50], "area": 2000, "num_keypoints": 3,
                            "keypoints": [x0 + 10, 30, 2, x0 + 30, 30, 2, x0 + 20, 60, 2]})
    categories = [{"id": 1, "name": "blob", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2], [2, 3]]}]
    (root / "coco.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                "categories": categories}))
    out = {name: root / name / "out" for name in ("convert", "augment", "train", "eval", "package")}
    for folder in out.values():
        folder.parent.mkdir()
    steps = {
        "convert": ["convert", "--from", "coco", "--input", str(root / "coco.json"), "--images",
                    str(root / "images"), "--split", "0.5,0.5", "--quiet", "--out", str(out["convert"])],
        "augment": ["augment", "--data", str(out["convert"] / "data.yaml"), "--workers", "1", "--quiet",
                    "--out", str(out["augment"])],
        "train": ["train", "--data", str(out["convert"] / "data.yaml"), *TRAIN, "--out", str(out["train"])],
        "eval": ["eval", "--weights", str(out["train"] / "weights" / "best.pt"), "--data",
                 str(out["convert"] / "data.yaml"), "--imgsz", "64", "--out", str(out["eval"])],
        "package": ["package", "--weights", str(out["train"] / "weights" / "best.pt"), "--eval",
                    str(out["eval"]), "--data", str(out["convert"] / "data.yaml"), "--out",
                    str(out["package"])],
    }
    for name, args in steps.items():
        run = fdpose(*args, "--params", os.devnull)
        assert run.returncode == 0, (name, run.stdout[-2000:], run.stderr[-2000:])
    return {"root": root, **out, **{f"{name}-args": args for name, args in steps.items()}}


@pytest.mark.parametrize(("stage", "limit"), [
    ("convert", 600),  # the label files fit, report.json does not
    ("augment", 2_000),  # data.yaml and label files fit, the encoded variants do not
    ("train", 100_000),  # results.csv and args fit, the weights do not
    ("eval", 8_000),  # metrics.json fits, the report and plots do not
    ("package", 100_000),  # the model card and model.yaml fit, the weights do not
])
def test_a_write_failing_half_way_is_one_line_and_keeps_the_earlier_output(stages, stage, limit):
    out = stages[stage]
    assert largest_file(out) > limit  # the limit bites inside the output
    before = snapshot(out)
    run = fdpose(*stages[f"{stage}-args"], "--params", os.devnull, limit=limit)
    check_failed_write(out, before, run)


def test_package_whose_archive_fails_keeps_the_earlier_folder_and_archive(stages):
    # Every file of the folder fits, the zip (all of them, compressed: more than twice the largest) does
    # not, part way through: neither the folder nor the zip may change.
    out = stages["package"]
    archive = out.with_name(out.name + ".zip")
    limit = (largest_file(out) + archive.stat().st_size) // 2
    assert largest_file(out) < limit < archive.stat().st_size
    before = snapshot(out)
    run = fdpose(*stages["package-args"], "--params", os.devnull, limit=limit)
    assert f"{archive}: could not write" in check_failed_write(out, before, run)
