"""``fdpose serve`` connected to a real Label Studio server as its ML backend.

A module fixture packages a freshly initialised n-scale C2f_FDConv model (64 px). Its class scores
start near 0.012 (the head's bias initialisation), so at the test's ``eval.conf`` of 0.5 it predicts
nothing and scores OKS mAP 0 on any data: the one-epoch retraining from Label Studio is then "at least
as good" whatever its own numbers, and the swap can be tested without depending on how well a
one-epoch model learns. The tests start ``fdpose serve`` on loopback, connect it to a project with
``fdpose serve --connect`` (``/api/ml``), make Label Studio retrieve predictions and read them back
from Label Studio, then label the tasks, press "Start training" through the API and wait for the new
model to be served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.formats.yolo import write_yolo
from pipeline.inference import run_image
from pipeline.model_io import load_runner
from pipeline.skeleton import Skeleton
from pipeline.uncertainty import task_score

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEYPOINTS = ["head", "left_hand", "right_hand"]
SIZE = 64
CONF, MAX_DET, KPT_CONF = 0.0, 2, 0.5
# Label names differ from the model's on purpose: model_index maps them.
CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="box" toName="img"><Label value="person"/></RectangleLabels>
  <KeyPointLabels name="kp" toName="img">
    <Label value="R hand" model_index="2"/><Label value="Head" model_index="0"/>
    <Label value="L hand" model_index="1"/>
  </KeyPointLabels>
  <Choices name="visibility" toName="img" perRegion="true"><Choice value="occluded"/></Choices>
</View>"""
LABELS = ["Head", "L hand", "R hand"]  # in model order
TASKS = 6
START_TIMEOUT_S = 120.0
TRAIN_TIMEOUT_S = 600.0


def scene(index: int) -> tuple[np.ndarray, list[float], list[list[float]]]:
    """A generated image with one bright box; keypoints at its top centre and side centres."""
    rng = np.random.default_rng(index)
    image = np.full((SIZE, SIZE, 3), 40, np.uint8)
    x0, y0 = (int(v) for v in rng.integers(4, SIZE // 2, 2))
    w, h = (int(v) for v in rng.integers(SIZE // 4, SIZE // 2, 2))
    cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), (200, 180, 60), -1)
    keypoints = [[x0 + w / 2, y0, 2], [x0, y0 + h / 2, 2], [x0 + w, y0 + h / 2, 2]]
    return image, [x0, y0, x0 + w, y0 + h], keypoints


@dataclass
class Model:
    package: Path
    params: Path
    root: Path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    import torch
    from ultralytics.nn.tasks import PoseModel

    from pipeline.config import load_section
    from pipeline.package.stage import package

    root = tmp_path_factory.mktemp("serve-model")
    records = []
    for index in range(2):  # the image the ONNX check runs on
        image, box, keypoints = scene(index)
        path = root / "originals" / f"img{index}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), image)
        records.append(ImageRecord(path=path, file_name=path.name, width=SIZE, height=SIZE,
                                   instances=[Instance(0, box, keypoints)], split="train"))
    skeleton = Skeleton(keypoint_names=KEYPOINTS, class_names=["person"])
    data_yaml = write_yolo(Dataset(skeleton=skeleton, images=records), root / "data")
    model_yaml = REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml"
    torch.manual_seed(0)
    network = PoseModel(str(model_yaml), nc=1, data_kpt_shape=(len(KEYPOINTS), 3), verbose=False)
    network.args, network.task = {"task": "pose", "imgsz": SIZE}, "pose"
    network.names, network.kpt_names = {0: "person"}, {0: list(KEYPOINTS)}
    checkpoint = root / "untrained.pt"  # what an ultralytics checkpoint holds, before any training
    torch.save({"model": network, "ema": None, "train_args": {"imgsz": SIZE}, "date": "2026-01-01"},
               checkpoint)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({
        "convert": {"split": [0.5, 0.5, 0.0], "seed": 0},
        "train": {"model": str(model_yaml), "epochs": 1, "imgsz": SIZE, "batch": 4, "device": "cpu",
                  "workers": 0, "plots": False, "seed": 0, "hyp": {}},
        "eval": {"device": "cpu", "imgsz": SIZE, "conf": 0.5},
    }))
    package(checkpoint, None, root / "pkg", load_section("package", params), data=data_yaml)
    return Model(root / "pkg", params, root)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    work: Path

    def get(self, path: str) -> dict:
        return httpx.get(self.url + path, timeout=10, trust_env=False).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_serve(model: Model, work: Path, env: dict[str, str], *extra: str) -> Server:
    import labelstudio_server

    port = labelstudio_server.free_port()
    log = work.with_suffix(".log")
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model.package), "--port",
               str(port), "--work-dir", str(work), "--params", str(model.params), "--conf", str(CONF),
               "--max-det", str(MAX_DET), "--kpt-conf", str(KPT_CONF), *extra]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                                   stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", process, log, work)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(server.url + "/health", timeout=2, trust_env=False).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.stop()
    raise AssertionError(f"fdpose serve did not start:\n{log.read_text()}")


@dataclass
class Project:
    id: int
    tasks: dict[int, int]  # task id -> scene index
    client: object
    ml_id: int


@pytest.fixture(scope="module")
def serve(model, label_studio, tmp_path_factory):
    # Label Studio sends its project creator's legacy token to /setup, which a new organisation
    # refuses: the backend takes a personal access token from its environment, as documented.
    server = start_serve(model, tmp_path_factory.mktemp("serve") / "work",
                         {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(serve, label_studio, tmp_path_factory) -> Project:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    created = client.projects.create(title="fdpose serve", label_config=CONFIG)
    # Local-files storage keeps the file names (uploads get a random prefix), so the dataset's
    # hash-based split, and with it the whole training, is the same on every run.
    folder = label_studio.local_files_root / "fdpose-serve"
    folder.mkdir()
    for index in range(TASKS):
        cv2.imwrite(str(folder / f"scene{100 + index}.png"), scene(100 + index)[0])
    storage = client.import_storage.local.create(project=created.id, path=str(folder), recursive_scan=True,
                                                 regex_filter=r".*\.png", use_blob_urls=True, title="scenes")
    client.import_storage.local.sync(id=storage.id)
    tasks = {task.id: int(task.data["image"].rsplit("scene", 1)[1].split(".")[0])
             for task in client.tasks.list(project=created.id)}
    assert sorted(tasks.values()) == list(range(100, 100 + TASKS))
    run = connect(serve, label_studio, created.id)
    assert run.exit_code == 0, run.output
    assert "connected: ML backend" in run.output and serve.url in run.output
    (backend,) = client.ml.list(project=created.id)
    assert backend.url == serve.url and backend.state == "CO"  # Connected
    return Project(created.id, tasks, client, backend.id)


def connect(serve: Server, label_studio, project_id: int):
    """``fdpose serve --connect`` (the key in the environment only)."""
    from click.testing import CliRunner

    from pipeline.cli import main

    port = serve.url.rsplit(":", 1)[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
        return CliRunner().invoke(main, ["serve", "--connect", label_studio.url, "--project", str(project_id),
                                         "--port", port])


def predictions_by_task(project: Project) -> dict[int, list]:
    found: dict[int, list] = {}
    for prediction in project.client.predictions.list(project=project.id):
        found.setdefault(prediction.task, []).append(prediction)
    return found


def check_prediction(prediction, image: np.ndarray, runner, version: str) -> None:
    """Every keypoint at the pixel the model predicts (within 1e-3 px), with score and version."""
    detections = run_image(runner, image, runner.meta.imgsz, CONF, 0.7, MAX_DET)
    assert prediction.model_version == version
    assert prediction.score == pytest.approx(task_score(detections), abs=1e-9)
    boxes = [r for r in prediction.result if r["type"] == "rectanglelabels"]
    points = [r for r in prediction.result if r["type"] == "keypointlabels"]
    choices = [r for r in prediction.result if r["type"] == "choices"]
    assert len(boxes) == len(detections) > 0
    by_parent = {box["id"]: [p for p in points if p["parentID"] == box["id"]] for box in boxes}
    for box, det in zip(boxes, detections, strict=True):
        assert box["value"]["rectanglelabels"] == ["person"]
        x0, y0, x1, y1 = det.bbox
        assert box["value"]["x"] / 100 * SIZE == pytest.approx(x0, abs=1e-3)
        assert box["value"]["width"] / 100 * SIZE == pytest.approx(x1 - x0, abs=1e-3)
        assert box["value"]["y"] / 100 * SIZE == pytest.approx(y0, abs=1e-3)
        regions = by_parent[box["id"]]
        assert [r["value"]["keypointlabels"][0] for r in regions] == LABELS
        for region, (x, y, conf) in zip(regions, det.keypoints, strict=True):
            assert region["original_width"] == SIZE and region["original_height"] == SIZE
            assert abs(region["value"]["x"] / 100 * SIZE - x) < 1e-3
            assert abs(region["value"]["y"] / 100 * SIZE - y) < 1e-3
            occluded = [c for c in choices if c["id"] == region["id"]]
            if abs(conf - KPT_CONF) > 1e-4:  # float noise between processes decides nothing here
                assert bool(occluded) == (conf < KPT_CONF)
            if occluded:
                assert occluded[0]["value"]["choices"] == ["occluded"]


def test_label_studio_retrieves_predictions_at_the_predicted_pixels(project, model, serve):
    runner = load_runner(model.package)
    version = serve.get("/health")["model_version"]
    project.client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                                  selected_items={"all": True})
    found = predictions_by_task(project)
    assert sorted(found) == sorted(project.tasks)
    for task_id, index in project.tasks.items():
        (prediction,) = found[task_id]
        check_prediction(prediction, scene(index)[0], runner, version)


def test_a_batch_with_one_unreachable_image_gets_predictions_for_the_others(project, model, serve,
                                                                           label_studio):
    client = project.client
    other = client.projects.create(title="one unreachable image", label_config=CONFIG)
    folder = label_studio.local_files_root / "fdpose-serve-batch"
    folder.mkdir()
    for index in (200, 201):
        cv2.imwrite(str(folder / f"scene{index}.png"), scene(index)[0])
    storage = client.import_storage.local.create(project=other.id, path=str(folder), recursive_scan=True,
                                                 regex_filter=r".*\.png", use_blob_urls=True, title="batch")
    client.import_storage.local.sync(id=storage.id)
    good = {task.id: int(task.data["image"].rsplit("scene", 1)[1].split(".")[0])
            for task in client.tasks.list(project=other.id)}
    reference = next(iter(client.tasks.list(project=other.id))).data["image"]
    missing = client.tasks.create(project=other.id, data={"image": reference.rsplit("/", 1)[0] + "/gone.png"})
    assert connect(serve, label_studio, other.id).exit_code == 0
    failed_before = serve.get("/health")["failed_tasks"]
    # One /predict request for the three tasks (Label Studio sends the selection as one batch).
    client.actions.create(id="retrieve_tasks_predictions", project=other.id, selected_items={"all": True})
    found = predictions_by_task(Project(other.id, good, client, 0))
    assert sorted(found) == sorted(good), found  # none stored for the unreachable one
    runner, version = load_runner(model.package), serve.get("/health")["model_version"]
    for task_id, index in good.items():
        (prediction,) = found[task_id]
        check_prediction(prediction, scene(index)[0], runner, version)
    health = serve.get("/health")
    assert health["status"] == "UP" and health["failed_tasks"] == failed_before + 1
    failure = health["task_failures"][-1]
    assert failure["task"] == missing.id and "image download failed" in failure["reason"], failure
    assert f"task {missing.id}: empty result" in serve.log.read_text()


def test_a_label_config_without_the_model_keypoints_is_refused_with_the_reason(project, serve, label_studio):
    other = project.client.projects.create(title="wrong keypoints",
                                           label_config=CONFIG.replace('model_index="2"', 'model_index="7"'))
    run = connect(serve, label_studio, other.id)
    assert run.exit_code == 1
    (line,) = run.output.strip().splitlines()
    # Label Studio's own message, carrying the backend's reason.
    assert line.startswith("Error:") and "HTTP 400" in line and "doesn't look like a valid ML backend" in line
    assert "no+keypoint+label+with+model_index+for+model+keypoint(s)+2+('right_hand')" in line
    assert list(project.client.ml.list(project=other.id)) == []
    assert serve.get("/health")["status"] == "UP"
    again = connect(serve, label_studio, project.id)  # the good project: kept as it is
    assert again.exit_code == 0 and "already connected" in again.output


def test_training_from_label_studio_serves_a_new_model_version(project, model, serve, label_studio):
    before = serve.get("/health")["model_version"]
    for task_id, index in project.tasks.items():
        _, (x0, y0, x1, y1), keypoints = scene(index)
        result = [{"id": "b", "type": "rectanglelabels", "from_name": "box", "to_name": "img",
                   "original_width": SIZE, "original_height": SIZE, "image_rotation": 0,
                   "value": {"x": x0 / SIZE * 100, "y": y0 / SIZE * 100, "width": (x1 - x0) / SIZE * 100,
                             "height": (y1 - y0) / SIZE * 100, "rotation": 0, "rectanglelabels": ["person"]}}]
        for n, (x, y, _) in enumerate(keypoints):
            result.append({"id": f"k{n}", "parentID": "b", "type": "keypointlabels", "from_name": "kp",
                           "to_name": "img", "original_width": SIZE, "original_height": SIZE,
                           "image_rotation": 0, "value": {"x": x / SIZE * 100, "y": y / SIZE * 100,
                                                          "width": 0.5, "keypointlabels": [LABELS[n]]}})
        project.client.annotations.create(id=task_id, result=result)
    project.client.ml.train(id=project.ml_id)  # "Start training": Label Studio posts START_TRAINING
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    health = serve.get("/health")
    while (health["training"] or not health["last_training"]) and time.monotonic() < deadline:
        time.sleep(2)
        health = serve.get("/health")
    last = health["last_training"]
    assert last is not None and last["status"] == "accepted", (last, serve.log.read_text()[-3000:])
    assert health["model_version"] == last["version"] != before
    assert health["error"] is None
    assert set(last["metrics"]["new"]) >= {"oks_map"} and "old" in last["metrics"]
    versions = serve.get("/versions")
    assert versions["versions"] == [before, last["version"]] and versions["current"] == last["version"]
    # Label Studio now asks for the new version's predictions, from the new package.
    project.client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                                  selected_items={"all": True})
    runner = load_runner(last["path"])
    for task_id, predictions in predictions_by_task(project).items():
        (newest,) = [p for p in predictions if p.model_version == last["version"]]
        check_prediction(newest, scene(project.tasks[task_id])[0], runner, last["version"])
    # No key in the work folder or the server's log.
    key = label_studio.api_key.encode()
    assert not [p for p in serve.work.rglob("*") if p.is_file() and key in p.read_bytes()]
    assert key not in serve.log.read_bytes()


def test_bench_serve_runs_a_small_count_without_errors(model, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "bench.json"
    run = CliRunner().invoke(main, ["bench", "serve", "--model", str(model.package), "--clients", "2",
                                    "--requests", "60", "--seconds", "60", "--json", str(out)])
    assert run.exit_code == 0, run.output
    figures = json.loads(out.read_text())
    assert figures["requests"] == 60 and figures["errors"] == 0
    assert figures["requests_per_s"] > 0
    assert figures["latency_ms"]["p50"] <= figures["latency_ms"]["p95"] <= figures["latency_ms"]["p99"]
    assert figures["rss_mb"]["before"] > 0 and figures["rss_mb"]["after"] > 0
    assert "requests/s" in run.output and "p99" in run.output
