"""``fdpose train`` end to end on CPU: the n-scale C2f_FDConv model for one or two epochs at 64 px on a
tiny generated dataset — outputs, reproducibility, resume after SIGKILL, fine-tuning from a stock
checkpoint trained here, mismatched datasets, and the DDP entry file ultralytics generates."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.config import TrainParams
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import Skeleton
from pipeline.train import train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FDCONV_YAML = str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")
SMALL = {"imgsz": 64, "batch": 4, "device": "cpu", "seed": 3, "workers": 0}
KEYPOINTS = ["left_tip", "right_tip", "center", "top"]


def make_dataset(root: Path, num_keypoints: int = 3, classes: tuple[str, ...] = ("blob",)) -> Path:
    """8 train and 4 val images, 64 x 64, each a coloured rectangle whose tips, centre (and top) are the
    keypoints; left/right tips swap under a horizontal flip."""
    rng = np.random.default_rng(7)
    skeleton = Skeleton(KEYPOINTS[:num_keypoints], class_names=list(classes))
    dataset = Dataset(skeleton)
    (root / "src").mkdir(parents=True)
    for index in range(12):
        pixels = np.full((64, 64, 3), 30 + 5 * index, np.uint8)
        w, h = (int(v) for v in rng.integers(18, 34, 2))
        x0, y0 = (int(v) for v in rng.integers(2, 64 - 36, 2))
        pixels[y0:y0 + h, x0:x0 + w] = (210, 90 + 10 * index, 50)
        path = root / "src" / f"image{index:02d}.png"
        Image.fromarray(pixels).save(path)
        points = [[x0, y0 + h / 2, 2], [x0 + w, y0 + h / 2, 2], [x0 + w / 2, y0 + h / 2, 2],
                  [x0 + w / 2, y0, 2]][:num_keypoints]
        instance = Instance(index % len(classes), [x0, y0, x0 + w, y0 + h], points)
        dataset.images.append(ImageRecord(path, path.name, 64, 64, [instance],
                                          split="train" if index < 8 else "val"))
    return write_yolo(dataset, root / "data")


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_yaml):
    """A 2-epoch C2f_FDConv run with plots, started from an unrelated working directory; records what
    the trainer saw of the dataset (its data dict and the training flip transform)."""
    work = tmp_path_factory.mktemp("cwd")
    seen = {}

    def record(trainer) -> None:
        seen["data"] = dict(trainer.data)
        transforms = trainer.train_loader.dataset.transforms.transforms
        flips = [t for t in transforms if type(t).__name__ == "RandomFlip"]
        seen["flip_idx"] = [t.flip_idx for t in flips if t.direction == "horizontal"]
        seen["callbacks"] = {event: [f"{f.__module__}.{f.__qualname__}" for f in functions]
                             for event, functions in trainer.callbacks.items()}

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setattr(socket, "getaddrinfo", no_network)
        patch.setattr(socket.socket, "connect", no_network)
        result = train(data_yaml, tmp_path_factory.mktemp("train") / "run-a",
                       TrainParams(model=FDCONV_YAML, epochs=2, plots=True, **SMALL),
                       callbacks={"on_train_start": [record]})
    seen["network_attempts"] = attempts
    return result, seen, work


def read_results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory, data_yaml) -> Path:
    """A stock YOLOv8n-pose (plain C2f) trained here for one epoch: the --pretrained source."""
    result = train(data_yaml, tmp_path_factory.mktemp("stock") / "run",
                   TrainParams(model="yolov8n-pose.yaml", epochs=1, plots=False, **SMALL))
    return result.best


def test_outputs_of_a_run(first_run, data_yaml):
    result, seen, work = first_run
    out = result.out
    assert out.name == "run-a" and not out.with_name("run-a.partial").exists()
    for name in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml", "metrics.json",
                 "results.png", "BoxPR_curve.png", "PosePR_curve.png", "dvclive/metrics.json",
                 "dvclive/params.yaml"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in work.iterdir()) == []  # nothing written to the working directory
    assert seen["network_attempts"] == []  # no download (weights, fonts), no analytics
    assert not list(data_yaml.parent.rglob("*.cache"))  # the dataset folder is left as it was

    rows = read_results(out / "results.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train/pose_loss", "metrics/mAP50-95(B)", "metrics/mAP50-95(P)"} <= set(rows[0])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    for kind in ("box", "pose"):
        assert set(metrics[kind]) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert metrics["epochs"] == 2
    # results.csv holds 6 significant digits (ultralytics writes %.6g), metrics.json 5 decimals.
    assert metrics["train_loss"]["pose_loss"] == pytest.approx(float(rows[-1]["train/pose_loss"]), rel=1e-5)
    assert metrics["val_loss"]["pose_loss"] > 0

    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["save_dir"] == str(out) and args["seed"] == 3 and args["deterministic"] is True

    # DVCLive: one curve point per epoch, under the run folder.
    curve = (out / "dvclive/plots/metrics/train/pose_loss.tsv").read_text().splitlines()
    assert curve[0].split("\t")[:2] == ["step", "pose_loss"] and len(curve) == 3
    assert json.loads((out / "dvclive/metrics.json").read_text())["metrics"]["mAP50-95(P)"] == \
        pytest.approx(metrics["pose"]["mAP50-95"])
    # ultralytics' own DVC callback (dvclive/ and dvc.yaml in the cwd, a DVC experiment) is not used.
    assert not any("callbacks.dvc" in name for names in seen["callbacks"].values() for name in names)
    assert any("DvcLiveLogger" in name for name in seen["callbacks"]["on_fit_epoch_end"])


def test_dataset_layout_reaches_the_model(first_run):
    result, seen, _ = first_run
    from ultralytics import YOLO

    from pipeline.nn.blocks import C2f_FDConv

    assert seen["data"]["kpt_shape"] == [3, 3] and seen["data"]["names"] == {0: "blob"}
    assert seen["flip_idx"] == [[1, 0, 2]]  # the training flip swaps left and right tips
    for weights in (result.best, result.last):
        model = YOLO(weights).model
        assert model.model[-1].kpt_shape == [3, 3] and model.model[-1].nc == 1  # the YAML says 17 and 80
        assert model.names == {0: "blob"}
        assert model.kpt_names == {0: ["left_tip", "right_tip", "center"]}
        assert any(isinstance(m, C2f_FDConv) for m in model.modules())


def test_weights_load_in_a_fresh_process_after_import_pipeline(first_run):
    result, _, _ = first_run
    code = ("import pipeline, sys\nfrom ultralytics import YOLO\n"
            "m = YOLO(sys.argv[1]).model\nprint(type(m.model[2]).__name__, m.model[-1].kpt_shape)")
    done = subprocess.run([sys.executable, "-c", code, str(result.best)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["C2f_FDConv", "[3,", "3]"]


def test_same_seed_gives_the_same_metrics(first_run, data_yaml, tmp_path):
    result, _, _ = first_run
    again = train(data_yaml, tmp_path / "run-b",
                  TrainParams(model=FDCONV_YAML, epochs=2, plots=True, **SMALL))
    assert again.metrics == result.metrics
    assert again.metrics["train_loss"]["pose_loss"] > 0  # real numbers, not all-zero placeholders

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "time"} for row in rows]

    assert without_time(read_results(again.out / "results.csv")) == \
        without_time(read_results(result.out / "results.csv"))


def test_resume_after_sigkill_mid_epoch(data_yaml, tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    marker = tmp_path / "second-epoch-started"
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pipeline.config import TrainParams
        from pipeline.train import train

        def hold(trainer):  # keep the second epoch running until the test kills the process
            if trainer.epoch >= 1:
                Path({str(marker)!r}).touch()
                time.sleep(600)

        train({str(data_yaml)!r}, {str(out)!r},
              TrainParams(model={FDCONV_YAML!r}, epochs=2, plots=False, **{SMALL!r}),
              callbacks={{"on_train_batch_end": [hold]}})
    """))
    log = tmp_path / "interrupted.log"
    with open(log, "wb") as log_file:  # a file, not a pipe: a full pipe buffer would stall the child
        process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"training exited early: {log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the second epoch did not start in 240 s")
            time.sleep(0.2)
        assert (partial / "weights" / "last.pt").is_file()  # saved after epoch 1
        assert [row["epoch"] for row in read_results(partial / "results.csv")] == ["1"]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not out.exists()

    with pytest.raises(FdposeError, match="no interrupted run"):
        train(data_yaml, tmp_path / "elsewhere", TrainParams(model=FDCONV_YAML, **SMALL), resume=True,
              given=["model", *SMALL])
    result = train(data_yaml, out, TrainParams(device="cpu"), resume=True)  # the rest: from the checkpoint
    assert result.resumed and result.epochs == 2 and result.metrics["epochs"] == 2
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert (args["imgsz"], args["batch"], args["seed"], args["plots"]) == (64, 4, 3, False)
    assert [row["epoch"] for row in read_results(out / "results.csv")] == ["1", "2"]
    assert (out / "weights" / "best.pt").is_file() and not partial.exists()
    dvclive_steps = (out / "dvclive/plots/metrics/train/pose_loss.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in dvclive_steps] == ["0", "1"]
    with pytest.raises(FdposeError, match="finished; nothing to resume"):
        train(data_yaml, out, TrainParams(model=FDCONV_YAML, **SMALL), resume=True, given=["model", *SMALL])

    # A new run into the same folder that fails leaves the finished run as it was.
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def fail(trainer):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(data_yaml, out, TrainParams(model=FDCONV_YAML, epochs=2, plots=False, **SMALL),
              callbacks={"on_train_epoch_start": [fail]})
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert partial.is_dir()  # the failed run stays beside it, for --resume or inspection


def test_finetune_from_a_stock_checkpoint(data_yaml, stock_checkpoint, tmp_path):
    from ultralytics.nn.modules import C2f

    from pipeline.model_io import load_model
    from pipeline.nn.blocks import C2f_FDConv

    stock = load_model(stock_checkpoint).float()
    start = {}

    def snapshot(trainer) -> None:  # the model as training starts, after the conversion
        start["model"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        start["types"] = [type(m).__name__ for m in trainer.model.model]

    result = train(data_yaml, tmp_path / "run",
                   TrainParams(model=FDCONV_YAML, epochs=1, plots=False, pretrained=str(stock_checkpoint),
                               **SMALL),
                   callbacks={"on_pretrain_routine_end": [snapshot]})
    assert result.pretrained == str(stock_checkpoint)
    assert result.conversion == json.loads((result.out / "pretrained.json").read_text())
    assert result.conversion["converted"] and not result.conversion["reinitialised"]
    assert "C2f_FDConv" in start["types"]
    stock_state = stock.state_dict()
    converted = [i for i, name in enumerate(start["types"]) if name == "C2f_FDConv"]
    assert [f"model.{i}" for i in converted] == result.conversion["converted"]
    assert all(type(stock.model[i]) is C2f for i in converted)
    # Copied and converted layers start from the stock weights (FDConv layers carry the converted form).
    for key in ("model.0.conv.weight", "model.1.bn.running_mean", f"model.{converted[0]}.cv1.conv.weight",
                "model.22.cv4.0.0.conv.weight"):
        assert np.array_equal(start["model"][key].numpy(), stock_state[key].numpy()), key
    assert (result.out / "metrics.json").is_file()
    from ultralytics import YOLO

    assert any(isinstance(m, C2f_FDConv) for m in YOLO(result.best).model.modules())


def test_mismatched_dataset_is_one_error_before_training(stock_checkpoint, tmp_path):
    four_keypoints = make_dataset(tmp_path / "four", num_keypoints=4)
    # A start from another keypoint layout or classes fine-tunes (tests/integration/test_finetune.py);
    # one of another scale or family, or a file that is no checkpoint, is refused before training.
    with pytest.raises(FdposeError, match=r"checkpoint is scale 'n', the model is scale 's'"):
        train(four_keypoints, tmp_path / "run", TrainParams(model=FDCONV_YAML.replace("yolov8n-", "yolov8s-"),
                                                            pretrained=str(stock_checkpoint), **SMALL))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FdposeError, match="junk.pt: not a loadable ultralytics checkpoint"):
        train(four_keypoints, tmp_path / "run", TrainParams(model=str(tmp_path / "junk.pt"), **SMALL))
    # Resuming a run on a dataset that does not fit it.
    partial = tmp_path / "resumed.partial" / "weights"
    partial.mkdir(parents=True)
    (partial / "last.pt").write_bytes(stock_checkpoint.read_bytes())
    with pytest.raises(FdposeError, match=r"resumed checkpoint does not fit .* kpt_shape"):
        train(four_keypoints, tmp_path / "resumed", TrainParams(model=FDCONV_YAML, **SMALL), resume=True,
              given=["model", *SMALL])
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()

    runner = CliRunner()
    outcome = runner.invoke(main, ["train", "--data", str(four_keypoints), "--out", str(tmp_path / "cli"),
                                   "--model", "yolo26n-pose-C3k2_FDConv.yaml", "--pretrained",
                                   str(stock_checkpoint), "--device", "cpu", "--imgsz", "64"])
    assert outcome.exit_code == 1
    last_line = outcome.output.strip().splitlines()[-1]
    assert last_line == (f"Error: {stock_checkpoint}: checkpoint is a YOLOv8 model, the model a YOLO26 one: "
                         "fine-tuning needs a checkpoint of the same family (and scale)")
    assert not (tmp_path / "cli").exists()


def test_ddp_entry_file_imports_and_builds_our_trainer(data_yaml, tmp_path):
    """ultralytics' DDP launcher runs a generated file in each worker; it must rebuild our trainer (by
    its module path) and our model. Run that file for real on CPU: the same code path as a GPU worker,
    without the process group."""
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file
    from ultralytics.utils.patches import torch_load

    from pipeline.train import FdposePoseTrainer

    trainer = FdposePoseTrainer(overrides={
        "model": FDCONV_YAML, "data": str(data_yaml), "epochs": 1, "plots": False, "project": str(tmp_path),
        "name": "ddp", "exist_ok": True, **SMALL})
    entry = generate_ddp_file(trainer)
    try:
        state = torch_load(Path(entry).with_suffix(".pt"), map_location="cpu")
        assert state["trainer"] is FdposePoseTrainer
        assert "import pipeline" not in Path(entry).read_text()  # the import comes from unpickling
        done = subprocess.run([sys.executable, entry], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
    finally:
        ddp_cleanup(trainer, entry)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    assert (run / "weights" / "last.pt").is_file()
    assert (run / "metrics.json").is_file()  # written by FdposePoseTrainer.final_eval in the worker
    curve = (run / "dvclive/plots/metrics/train/pose_loss.tsv").read_text().splitlines()
    assert len(curve) == 2  # one epoch, logged once
