"""``fdpose package`` and ``fdpose predict`` end to end, from a briefly trained C2f_FDConv model.

One module-scoped fixture trains the n-scale C2f_FDConv pose model for one epoch at 64 px on a tiny
generated dataset (ultralytics' own trainer, so the checkpoint is exactly what training writes) and
packages it once; the tests then load, compare, tamper with, rebuild and run that package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from box_scenes import KEYPOINTS, make_dataset
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.config import PackageParams
from pipeline.errors import FdposeError
from pipeline.formats.yolo import read_yolo
from pipeline.inference import OnnxRunner, TorchRunner, letterbox
from pipeline.metrics import data_fingerprint
from pipeline.model_io import load_packaged_model, read_onnx_meta
from pipeline.package.archive import verify
from pipeline.package.stage import package

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL_YAML = REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml"
# With the fdpose[openvino] extra installed (make install does), packages also hold an OpenVINO IR.
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
OPENVINO_FILES = ["model.bin", "model.xml"] if HAS_OPENVINO else []
METRICS = {"oks_map": 0.123456, "oks_map50": 0.5, "box_map": 0.25, "split": "val", "num_images": 2,
           "num_instances": 2}


@dataclass
class Trained:
    data_yaml: Path
    weights: Path
    eval_dir: Path
    package: Path
    root: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    from ultralytics import YOLO  # C2f_FDConv is registered: importing pipeline installed the hook

    root = tmp_path_factory.mktemp("package")
    data_yaml = make_dataset(root / "dataset")
    # Outside the repository: ultralytics' DVC callback saves a DVC experiment of the git checkout it
    # runs in (stashing its uncommitted changes); in a temporary folder it finds no repository.
    with contextlib.chdir(root):
        YOLO(str(MODEL_YAML)).train(data=str(data_yaml), epochs=1, imgsz=64, batch=4, workers=0,
                                    device="cpu", plots=False, val=False, seed=0, deterministic=True,
                                    amp=False, project=str(root / "runs"), name="train", exist_ok=True,
                                    verbose=False)
    weights = root / "runs" / "train" / "weights" / "best.pt"
    # What fdpose eval writes besides the numbers: which weights and which data they belong to.
    val = read_yolo(data_yaml).splits()["val"]
    eval_dir = root / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(json.dumps({
        **METRICS, "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "data_sha256": data_fingerprint(val)}))
    (eval_dir / "report.html").write_text("<html><body>report</body></html>")
    result = package(weights, eval_dir, root / "pkg")
    assert result.archive == root / "pkg.zip"
    return Trained(data_yaml, weights, eval_dir, root / "pkg", root)


def real_batch(trained: Trained) -> np.ndarray:
    image = cv2.imread(str(sorted((trained.data_yaml.parent / "images" / "val").iterdir())[0]))
    return letterbox(image, 64)[0]


def relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def test_package_writes_every_file_with_a_card(trained):
    names = sorted(p.relative_to(trained.package).as_posix()
                   for p in trained.package.rglob("*") if p.is_file())
    assert names == sorted(["MODEL_CARD.md", "SHA256SUMS", "eval/metrics.json", "eval/report.html",
                            "model.onnx", "model.pt", "model.safetensors", "model.yaml", *OPENVINO_FILES])
    listed = [line.split("  ", 1)[1] for line in (trained.package / "SHA256SUMS").read_text().splitlines()]
    assert listed == [n for n in names if n != "SHA256SUMS"]
    card = (trained.package / "MODEL_CARD.md").read_text()
    for fact in ("C2f_FDConv", "scale `n`", "0.123456", "eval/report.html", "left_hand | right_hand",
                 "Dataset fingerprint", "`train`: 6 images, 6 instances", "`val`: 2 images",
                 "(the packaged model's dataset split)",
                 f"torch {torch.__version__.split('+')[0]}", "ultralytics 8.4", "| epochs | 1 |",
                 "| imgsz | 64 |", "Intended use and limits", "ONNX check", "Bx3x64x64", "## Formats",
                 "| ONNX | `model.onnx` |", *(["OpenVINO check"] if HAS_OPENVINO else ["No OpenVINO IR"])):
        assert fact in card, fact
    assert str(trained.root) not in card  # nothing location-dependent

    checkpoint = torch.load(trained.package / "model.pt", map_location="cpu", weights_only=False)
    source = torch.load(trained.weights, map_location="cpu", weights_only=False)
    assert checkpoint["optimizer"] is None and checkpoint["ema"] is None and checkpoint["epoch"] == -1
    assert checkpoint["date"] == source["date"]  # the training date, not the packaging time
    assert type(checkpoint["model"].model[2]).__name__ == "C2f_FDConv"


def test_safetensors_loads_without_unpickling_and_matches_pytorch(trained, monkeypatch):
    reference = torch.load(trained.package / "model.pt", map_location="cpu", weights_only=False)["model"]

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading a package")

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = load_packaged_model(trained.package)
    monkeypatch.undo()

    assert type(model.model[2]).__name__ == "C2f_FDConv"
    assert model.kpt_names[0] == KEYPOINTS and model.names == {0: "person"}
    batch = real_batch(trained)
    meta = read_onnx_meta(trained.package / "model.onnx")
    expected = TorchRunner(reference, meta, "pt")(batch)
    from_safetensors = TorchRunner(model, meta, "safetensors")(batch)
    from_onnx = OnnxRunner(trained.package / "model.onnx", meta)(batch)
    assert expected.shape == (1, 4 + 1 + 5 * 3, 84)  # 8x8 + 4x4 + 2x2 anchors at 64 px
    assert relative_diff(from_safetensors, expected) < 1e-6
    assert relative_diff(from_onnx, expected) < 1e-4


def test_checksums_verify_and_tampering_is_detected(trained, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["package", "--verify", str(trained.package)])
    assert ok.exit_code == 0, ok.output
    assert f"OK: {7 + len(OPENVINO_FILES)} files" in ok.output
    assert verify(trained.root / "pkg.zip").ok

    copy = tmp_path / "pkg"
    shutil.copytree(trained.package, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (copy / "model.onnx").write_bytes(bytes(data))
    (copy / "notes.txt").write_text("added later")
    bad = runner.invoke(main, ["package", "verify", str(copy)])
    assert bad.exit_code == 1
    last = bad.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "checksum mismatch: model.onnx" in last and "notes.txt" in last
    assert "Traceback" not in bad.output


def test_rebuild_gives_a_byte_identical_archive(trained, tmp_path):
    again = package(trained.weights, trained.eval_dir, tmp_path / "pkg")
    assert again.archive.read_bytes() == (trained.root / "pkg.zip").read_bytes()
    import zipfile

    with zipfile.ZipFile(again.archive) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_onnx_above_tolerance_fails_and_keeps_the_previous_package(trained, tmp_path):
    out = tmp_path / "pkg"
    shutil.copytree(trained.package, out)
    with pytest.raises(FdposeError, match="ONNX output differs from PyTorch"):
        package(trained.weights, trained.eval_dir, out, PackageParams(onnx_tolerance=0.0))
    assert verify(out).ok  # untouched
    assert not (tmp_path / "pkg.zip").exists()


def test_eval_of_other_weights_is_refused(trained, tmp_path):
    other = tmp_path / "eval"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({**METRICS, "model_sha256": "0" * 64}))
    result = CliRunner().invoke(main, ["package", "--weights", str(trained.weights), "--eval", str(other),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "metrics.json: these numbers are for weights with sha256 0000" in result.output
    assert not (tmp_path / "out").exists()


def test_package_rejects_bad_weights(trained, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["package", "--weights", str(bogus), "--eval", str(trained.eval_dir),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "bogus.pt: not a loadable ultralytics checkpoint" in result.output
    assert not (tmp_path / "out").exists()


def test_exported_formats_run_any_batch_like_pytorch(trained):
    """model.onnx (and model.xml) at batch 1 and 3 against the packaged PyTorch model, same tolerance rule."""
    from pipeline.inference import OpenVinoRunner

    model = load_packaged_model(trained.package)
    meta = read_onnx_meta(trained.package / "model.onnx")
    folder = trained.data_yaml.parent / "images"
    images = [cv2.imread(str(p)) for p in sorted(folder.rglob("*.png"))[:3]]
    batches = {1: letterbox(images[0], 64)[0], 3: np.concatenate([letterbox(im, 64)[0] for im in images])}
    runners = [OnnxRunner(trained.package / "model.onnx", meta)]
    if HAS_OPENVINO:
        runners.append(OpenVinoRunner(trained.package / "model.xml", meta))
    for size, batch in batches.items():
        expected = TorchRunner(model, meta, "safetensors")(batch)
        assert expected.shape == (size, 4 + 1 + 5 * 3, 84)
        for runner in runners:
            assert relative_diff(runner(batch), expected) < 1e-4, (runner.kind, size)
    # Each sample's output is its own: the batch of 3 holds the batch-1 output of its first image.
    np.testing.assert_allclose(runners[0](batches[3])[0], runners[0](batches[1])[0], rtol=1e-5, atol=1e-4)


def test_without_openvino_the_package_says_so_and_skips_the_ir(trained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails, as without the extra
    result = CliRunner().invoke(main, ["package", "--weights", str(trained.weights), "--eval",
                                       str(trained.eval_dir), "--out", str(tmp_path / "pkg")])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if "OpenVINO" in line]
    assert len(skipped) == 1 and skipped[0].startswith("OpenVINO IR skipped: ")
    assert "pip install 'fdpose[openvino]'" in skipped[0]
    assert not (tmp_path / "pkg" / "model.xml").exists() and not (tmp_path / "pkg" / "model.bin").exists()
    assert "No OpenVINO IR: packaged without the `fdpose[openvino]` extra." in \
        (tmp_path / "pkg" / "MODEL_CARD.md").read_text()
    assert verify(tmp_path / "pkg.zip").ok
    images = trained.data_yaml.parent / "images"
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "pkg"), "--backend", "openvino",
                                       str(images), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no model.xml in the package" in result.output


@pytest.mark.skipif(not HAS_OPENVINO, reason="the fdpose[openvino] extra is not installed")
def test_openvino_ir_is_checked_covered_by_checksums_and_predicts_like_pytorch(trained, tmp_path):
    card = (trained.package / "MODEL_CARD.md").read_text()
    assert "OpenVINO check: OpenVINO vs PyTorch on `img006.png` and its mirror image (batch 2)" in card
    listed = (trained.package / "SHA256SUMS").read_text()
    assert "  model.xml\n" in listed and "  model.bin\n" in listed
    images = trained.data_yaml.parent / "images"
    common = ["--model", str(trained.package), "--conf", "0.001", "--max-det", "2", str(images)]
    _predict([*common, "--out", str(tmp_path / "torch")])
    result = _predict([*common, "--backend", "openvino", "--out", str(tmp_path / "openvino")])
    assert "(openvino)" in result.output
    torch_preds = json.loads((tmp_path / "torch" / "predictions.json").read_text())
    openvino_preds = json.loads((tmp_path / "openvino" / "predictions.json").read_text())
    assert [p["image_id"] for p in openvino_preds] == [p["image_id"] for p in torch_preds]
    for a, b in zip(openvino_preds, torch_preds, strict=True):
        np.testing.assert_allclose(a["bbox"] + a["keypoints"], b["bbox"] + b["keypoints"], atol=0.02)
    # The IR alone carries its metadata, and the archive runs it as the folder does.
    _predict(["--model", str(trained.package / "model.xml"), "--conf", "0.001", str(images),
              "--out", str(tmp_path / "xml")])
    _predict(["--model", str(trained.root / "pkg.zip"), "--backend", "openvino", "--conf", "0.001",
              "--max-det", "2", str(images), "--out", str(tmp_path / "zip")])
    assert (tmp_path / "zip" / "predictions.json").read_text() == \
        (tmp_path / "openvino" / "predictions.json").read_text()


def test_latency_goes_into_the_card_when_asked(trained, tmp_path):
    result = package(trained.weights, trained.eval_dir, tmp_path / "pkg", latency=True)
    assert set(result.latency) == {"PyTorch", "ONNX", *(["OpenVINO"] if HAS_OPENVINO else [])}
    assert all(ms > 0 for ms in result.latency.values())
    card = (tmp_path / "pkg" / "MODEL_CARD.md").read_text()
    for name, ms in result.latency.items():
        assert f"| {name} | " in card and f"| {ms:.1f} ms |" in card
    assert "measured at packaging time on the packaging machine" in card
    assert "not byte-reproducible" in result.summary()


def _video(path: Path, frames: int = 4, size: int = 64) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (size, size))
    for index in range(frames):
        frame = np.full((size, size, 3), 40, np.uint8)
        cv2.rectangle(frame, (8 + 4 * index, 10), (40 + 4 * index, 50), (200, 180, 60), -1)
        writer.write(frame)
    writer.release()
    return path


def _predict(args: list[str]) -> Result:
    result = CliRunner().invoke(main, ["predict", *args])
    assert result.exit_code == 0, result.output
    return result


def test_predict_image_folder_and_video(trained, tmp_path):
    images = trained.data_yaml.parent / "images"
    single = sorted((images / "val").iterdir())[0]
    # --conf low: a one-epoch model is unsure of everything, but its guesses must still flow through.
    common = ["--model", str(trained.package), "--conf", "0.001", "--max-det", "2"]

    _predict([*common, str(single), "--out", str(tmp_path / "one")])
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert {p["image_id"] for p in one} == {1} and 1 <= len(one) <= 2
    for prediction in one:
        assert prediction["category_id"] == 1 and len(prediction["keypoints"]) == 15
        x, y, w, h = prediction["bbox"]
        assert 0 <= x <= x + w <= 64 and 0 <= y <= y + h <= 64
    assert (tmp_path / "one" / "drawn" / single.name).is_file()

    _predict([*common, str(images), "--out", str(tmp_path / "folder")])
    index = json.loads((tmp_path / "folder" / "images.json").read_text())
    assert [im["file_name"] for im in index["images"]] == sorted(
        p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    assert index["categories"][0]["keypoints"] == KEYPOINTS
    assert all((tmp_path / "folder" / im["drawn"]).is_file() for im in index["images"])

    # The ONNX file through the same decoding gives the same detections.
    _predict([*common, "--backend", "onnx", str(images), "--out", str(tmp_path / "folder-onnx")])
    torch_preds = json.loads((tmp_path / "folder" / "predictions.json").read_text())
    onnx_preds = json.loads((tmp_path / "folder-onnx" / "predictions.json").read_text())
    assert [p["image_id"] for p in onnx_preds] == [p["image_id"] for p in torch_preds]
    for a, b in zip(onnx_preds, torch_preds, strict=True):
        np.testing.assert_allclose(a["bbox"] + a["keypoints"], b["bbox"] + b["keypoints"], atol=0.02)

    video = _video(tmp_path / "clip.avi")
    _predict([*common, str(video), "--out", str(tmp_path / "video")])
    index = json.loads((tmp_path / "video" / "images.json").read_text())
    assert [im["frame_index"] for im in index["images"]] == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "video" / "drawn" / "clip").iterdir()) == [
        f"{i:06d}.jpg" for i in range(4)]
    drawn = cv2.imread(str(tmp_path / "video" / "drawn" / "clip" / "000000.jpg"))
    assert drawn.shape == (64, 64, 3)


def test_predict_with_pt_and_onnx_files_and_bad_input(trained, tmp_path):
    image = sorted((trained.data_yaml.parent / "images" / "val").iterdir())[0]
    for name in ("model.pt", "model.onnx"):
        result = _predict(["--model", str(trained.package / name), "--conf", "0.001", str(image),
                           "--out", str(tmp_path / name)])
        assert f"({name.split('.')[1]})" in result.output
        assert json.loads((tmp_path / name / "predictions.json").read_text())
    # The archive runs as the folder does (loaded from a temporary copy of its files).
    for model in (trained.package, trained.root / "pkg.zip"):
        _predict(["--model", str(model), "--conf", "0.001", str(image), "--out", str(tmp_path / model.name)])
    assert (tmp_path / "pkg.zip" / "predictions.json").read_text() == \
        (tmp_path / "pkg" / "predictions.json").read_text()

    result = CliRunner().invoke(main, ["predict", "--model", str(trained.package / "model.onnx"), "--imgsz",
                                       "128", str(image), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "exported for 64x64 inputs" in result.output
    result = CliRunner().invoke(main, ["predict", "--model", str(trained.package),
                                       str(tmp_path / "missing.png"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "missing.png: source not found" in result.output
    assert not (tmp_path / "x").exists()


LABEL_CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="box" toName="img"><Label value="person"/></RectangleLabels>
  <KeyPointLabels name="kp" toName="img">
    <Label value="head" model_index="0"/><Label value="left_hand" model_index="1"/>
    <Label value="right_hand" model_index="2"/><Label value="left_foot" model_index="3"/>
    <Label value="right_foot" model_index="4"/>
  </KeyPointLabels>
</View>"""


@pytest.mark.integration
def test_predictions_round_trip_through_label_studio(trained, label_studio, tmp_path, monkeypatch):
    import httpx
    from label_studio_sdk import LabelStudio

    from pipeline.convert import convert

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    project = client.projects.create(title="fdpose predictions", label_config=LABEL_CONFIG)
    folder = trained.data_yaml.parent / "images" / "val"
    files = [(f"file{i}", (p.name, p.read_bytes(), "image/png"))
             for i, p in enumerate(sorted(folder.iterdir()))]
    response = httpx.post(f"{label_studio.url}/api/projects/{project.id}/import", files=files,
                          headers=client._client_wrapper.get_headers(), timeout=60)
    assert response.status_code == 201, response.text

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    # A one-epoch model is unsure of everything: low thresholds so that boxes and all keypoints go up.
    result = _predict(["--model", str(trained.package), "--conf", "0.001", "--max-det", "1",
                       "--kpt-conf", "0", str(folder), "--out", str(tmp_path / "pred"),
                       "--to-label-studio", label_studio.url, "--project", str(project.id)])
    assert "uploaded 2 predictions" in result.output
    stored = [p for task in client.tasks.list(project=project.id) for p in (task.predictions or [])]
    assert len(stored) == 2 and {p["model_version"] if isinstance(p, dict) else p.model_version
                                 for p in stored} == {_version(trained.package)}

    coco = tmp_path / "back.json"
    convert(source="label-studio", url=label_studio.url, project=project.id, to="coco", out=coco,
            annotation="predictions", split=[1.0, 0.0, 0.0])
    back = json.loads(coco.read_text())
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    index = json.loads((tmp_path / "pred" / "images.json").read_text())
    names = {im["id"]: im["file_name"] for im in index["images"]}
    back_names = {im["id"]: im["file_name"] for im in back["images"]}
    assert len(back["annotations"]) == len(predictions) == 2
    by_name = {Path(back_names[a["image_id"]]).name.split("-", 1)[-1]: a for a in back["annotations"]}
    for prediction in predictions:
        returned = by_name[names[prediction["image_id"]]]
        np.testing.assert_allclose(returned["bbox"], prediction["bbox"], atol=1e-3)
        sent = np.array(prediction["keypoints"]).reshape(-1, 3)
        got = np.array(returned["keypoints"], float).reshape(-1, 3)
        assert (got[:, 2] == 2).all()  # every keypoint came back as labelled
        np.testing.assert_allclose(got[:, :2], sent[:, :2], atol=1e-3)


def _version(package_dir: Path) -> str:
    import hashlib

    digest = hashlib.sha256((package_dir / "model.safetensors").read_bytes()).hexdigest()
    return f"fdpose-safetensors-{digest[:12]}"


def test_bench_package_times_every_runner_and_the_old_option_still_works(trained, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--sizes", "64", "--runs", "1", "--threads", "1"]
    result = CliRunner().invoke(main, ["bench", "package", str(trained.package), *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["imgsz"] == 64 and row["batch"] == 1
    assert all(row[f"{name}_ms"] > 0 for name in ("pytorch", "pytorch_fused", "onnxruntime"))
    assert row["onnx_speedup_vs_fused"] == pytest.approx(row["pytorch_fused_ms"] / row["onnxruntime_ms"])
    old = CliRunner().invoke(main, ["package", "--bench", str(trained.package), *args])
    assert old.exit_code == 0 and "fused/onnx" in old.stdout
    assert old.stderr.splitlines() == ["fdpose package --bench PATH is deprecated and goes in the next "
                                       "release: use fdpose bench package PATH"]
