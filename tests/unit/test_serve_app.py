"""The ``fdpose serve`` app through HTTP (FastAPI's test client), with a real (untrained) packaged
model and a loopback server standing in for Label Studio's ``/data/upload/``: every bad request gets
a 4xx JSON error naming the problem, and the server keeps serving."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.config import PredictParams
from pipeline.inference import ModelMeta, run_image
from pipeline.model_io import PACKAGE_FORMAT, load_runner
from pipeline.serve.app import create_app
from pipeline.serve.command import make_settings
from pipeline.serve.state import WorkFolder
from pipeline.skeleton import Skeleton
from pipeline.uncertainty import task_score

REPO = Path(__file__).resolve().parents[2]
KEY = "unit-test-key"
KEYPOINTS = ["head", "left_hand", "right_hand"]
CONFIG = """<View><Image name="img" value="$image"/>
<RectangleLabels name="box" toName="img"><Label value="person"/></RectangleLabels>
<KeyPointLabels name="kp" toName="img"><Label value="head"/><Label value="left_hand"/>
<Label value="right_hand"/></KeyPointLabels></View>"""
IMAGE = np.full((48, 80, 3), 40, np.uint8)
cv2.rectangle(IMAGE, (10, 8), (50, 40), (200, 180, 60), -1)
MAX_IMAGE_BYTES = 200_000


def write_untrained_package(directory: Path, seed: int) -> Path:
    """A package folder (model.yaml + model.safetensors) of a freshly initialised n-scale model."""
    import torch
    from safetensors.torch import save_file
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(seed)
    model = PoseModel(str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml"), nc=1,
                      data_kpt_shape=(3, 3), verbose=False)
    architecture = json.loads(json.dumps(model.yaml))
    architecture.pop("yaml_file", None)
    meta = ModelMeta(Skeleton(KEYPOINTS, ["person"]), imgsz=64, stride=32)
    directory.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    (directory / "model.yaml").write_text(yaml.safe_dump({
        "format": PACKAGE_FORMAT, "task": "pose", "weights": "model.safetensors",
        "architecture": architecture, "meta": meta.to_dict()}))
    return directory


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve-packages")
    return write_untrained_package(root / "a", 0), write_untrained_package(root / "b", 1)


@pytest.fixture(scope="module")
def label_studio_files():
    """``/data/upload/1/<name>`` for the key, like Label Studio's uploads."""
    files = {"ok.png": cv2.imencode(".png", IMAGE)[1].tobytes(), "text.png": b"not an image at all",
             "huge.png": b"\x89PNG" + bytes(MAX_IMAGE_BYTES + 10)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            if self.headers.get("Authorization") != f"Token {KEY}":
                self.send_error(401)
            elif name == "slow.png":  # a trickle: each read is quick, the whole takes 4 s
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(10):
                    try:
                        self.wfile.write(bytes(10))
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the backend gave up, as it should
                    time.sleep(0.4)
            elif not self.path.startswith("/data/upload/1/") or name not in files:
                self.send_error(404)
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[name])))
                self.end_headers()
                self.wfile.write(files[name])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def client(packages, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(packages[0], PredictParams(conf=0.0, max_det=2, kpt_conf=0.5), tmp_path / "work",
                             REPO / "cfg" / "params.yaml", max_body_bytes=50_000,
                             max_image_bytes=MAX_IMAGE_BYTES, train_every=2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def setup_body(url: str, **changes) -> dict:
    return {"project": "1.1700000000", "schema": CONFIG, "hostname": url, "access_token": KEY, **changes}


def predict_body(*tasks: dict, **changes) -> dict:
    return {"tasks": list(tasks), "project": "1.1700000000", "label_config": CONFIG, "params": {}, **changes}


def task(image: object, task_id: int = 1) -> dict:
    return {"id": task_id, "data": {"image": image}}


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def assert_up(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "UP"


def test_setup_then_predict_writes_the_models_keypoints(client, packages, label_studio_files):
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"].startswith("fdpose-")
    response = client.post("/setup", json=setup_body(label_studio_files))
    assert response.status_code == 200 and response.json() == {"model_version": health["model_version"]}
    response = client.post("/predict", json=predict_body(task("/data/upload/1/ok.png", 7)))
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    runner = load_runner(packages[0])
    detections = run_image(runner, IMAGE, 64, 0.0, 0.7, 2)
    assert prediction["model_version"] == health["model_version"]
    assert prediction["score"] == pytest.approx(task_score(detections))
    boxes = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
    points = [r for r in prediction["result"] if r["type"] == "keypointlabels"]
    assert len(boxes) == len(detections) == 2
    expected = [(box["id"], name, x, y) for box, det in zip(boxes, detections, strict=True)
                for name, (x, y, c) in zip(KEYPOINTS, det.keypoints, strict=True) if c >= 0.5]
    got = [(p["parentID"], p["value"]["keypointlabels"][0], p["value"]["x"] / 100 * 80,
            p["value"]["y"] / 100 * 48) for p in points]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    np.testing.assert_allclose([g[2:] for g in got], [e[2:] for e in expected], atol=1e-6)
    assert all(r["original_width"] == 80 and r["original_height"] == 48 for r in prediction["result"])


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, ["malformed JSON"]),
    (b"", 400, ["empty request body"]),
    (b'["a list"]', 422, ["expected a JSON object"]),
    (json.dumps({"project": "1.1"}).encode(), 422, ["missing field 'tasks'"]),
    (json.dumps(predict_body(task("/data/upload/1/ok.png"), model="x")).encode(), 422,
     ["unknown field(s) ['model']"]),
    (json.dumps(predict_body(project="abc")).encode(), 422, ["'project'"]),
    (json.dumps(predict_body({"id": 3, "data": {"text": "no image"}})).encode(), 422,
     ["task 3", "no image reference"]),
    (json.dumps(predict_body(task("/data/upload/1/text.png"))).encode(), 422,
     ["task 1", "not a decodable image"]),
    (json.dumps(predict_body(task("/data/upload/1/huge.png"))).encode(), 413, ["larger than 200000 bytes"]),
    (json.dumps(predict_body(task("/data/upload/1/missing.png"))).encode(), 422, ["HTTP 404"]),
    (json.dumps(predict_body(task("http://example.com/x.png"))).encode(), 422,
     ["not on the Label Studio server"]),
    (json.dumps(predict_body(task("/etc/passwd"))).encode(), 422, []),
    (json.dumps(predict_body(task("photos/x.png"))).encode(), 422, ["local paths are never read"]),
    (json.dumps(predict_body(task("/data/upload/1/ok.png"), tasks="x")).encode(), 422,
     ["'tasks' must be list"]),
])
def test_bad_predict_requests_get_a_4xx_naming_the_problem(client, label_studio_files, body, status, words):
    assert client.post("/setup", json=setup_body(label_studio_files)).status_code == 200
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, status, *words)
    assert_up(client)
    assert client.post("/predict", json=predict_body(task("/data/upload/1/ok.png"))).status_code == 200


def test_each_task_of_a_batch_succeeds_or_fails_on_its_own(client, label_studio_files, caplog):
    assert client.post("/setup", json=setup_body(label_studio_files)).status_code == 200
    batch = predict_body(task("/data/upload/1/ok.png", 1), task("/data/upload/1/missing.png", 2),
                         {"id": 3, "data": {"text": "no image"}}, task("/data/upload/1/ok.png", 4))
    with caplog.at_level("WARNING", logger="fdpose.serve"):
        response = client.post("/predict", json=batch)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1] == results[2] == [] and results[0]["result"] and results[3]["result"]
    assert results[3] == results[0]  # the same image, the same prediction
    logged = [r.getMessage() for r in caplog.records if "empty result" in r.getMessage()]
    assert len(logged) == 2 and "task 2" in logged[0] and "HTTP 404" in logged[0], logged
    health = client.get("/health").json()
    assert health["failed_tasks"] == 2
    assert [(f["task"], f["status"]) for f in health["task_failures"]] == [(2, 422), (3, 422)]
    assert "no image reference" in health["task_failures"][1]["reason"]


def test_unreachable_label_studio_and_missing_setup(client):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    assert client.post("/setup", json=setup_body(closed)).status_code == 200
    assert_error(client.post("/predict", json=predict_body(task("/data/upload/1/ok.png"))), 422,
                 "image download failed", "ConnectError")
    # A project this process never saw set up, with no URL or key in the environment.
    unknown_project = predict_body(task("/data/upload/1/ok.png"), project="9.1")
    assert_error(client.post("/predict", json=unknown_project), 422, "project 9 was not set up",
                 "LABEL_STUDIO_URL")
    assert_up(client)


def test_wrong_key_is_refused_by_the_image_server(client, label_studio_files):
    assert client.post("/setup", json=setup_body(label_studio_files, access_token="wrong")).status_code == 200
    assert_error(client.post("/predict", json=predict_body(task("/data/upload/1/ok.png"))), 422, "HTTP 401")


def test_bad_setup_requests_carry_the_reason_into_the_final_url(client, label_studio_files):
    no_keypoints = CONFIG.replace("KeyPointLabels", "PolygonLabels")
    response = client.post("/setup", json=setup_body(label_studio_files, schema=no_keypoints))
    assert_error(response, 422, "no <KeyPointLabels>")
    # Label Studio shows the status line and the final URL of a failed /setup: the reason is in it.
    assert "/setup/rejected?reason=" in str(response.url) and "KeyPointLabels" in str(response.url)
    missing = CONFIG.replace('<Label value="right_hand"/>', "")
    assert_error(client.post("/setup", json=setup_body(label_studio_files, schema=missing)), 422,
                 "['right_hand']")
    assert_error(client.post("/setup", json={"schema": CONFIG}), 422, "missing field 'project'")
    assert_error(client.post("/setup", json=setup_body(label_studio_files, hostname="ftp://x")), 422,
                 "no Label Studio URL")
    assert_error(client.post("/setup", json=setup_body(label_studio_files, access_token="")), 422,
                 "no Label Studio key")
    assert_error(client.post("/setup", json=setup_body(label_studio_files, extra="1")), 422, "unknown field")
    assert_up(client)


def test_body_size_limit(client):
    big = json.dumps(predict_body(*[task("/data/upload/1/ok.png", i) for i in range(2000)])).encode()
    assert len(big) > 50_000
    assert_error(client.post("/predict", content=big, headers={"Content-Type": "application/json"}), 413,
                 "request body over 50000 bytes")
    assert_up(client)


def test_basic_auth_from_the_environment(client, monkeypatch):
    monkeypatch.setenv("BASIC_AUTH_USER", "ls")
    monkeypatch.setenv("BASIC_AUTH_PASS", "s3cret")
    assert_error(client.get("/health"), 401, "authentication required")
    wrong = base64.b64encode(b"ls:nope").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert client.get("/health", headers={"Authorization": "Basic %%%"}).status_code == 401
    right = base64.b64encode(b"ls:s3cret").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {right}"}).status_code == 200


def test_webhooks_and_a_failed_training_leave_the_model_serving(client):
    version = client.get("/health").json()["model_version"]
    assert_error(client.post("/webhook", json={"project": {"id": 1}}), 422, "missing field 'action'")
    assert_error(client.post("/webhook", json={"action": "START_TRAINING"}), 422, "missing field 'project'")
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).json() == {
        "status": "ignored", "action": "PROJECT_UPDATED"}
    # train_every=2: the first annotation is counted, the second asks for a training.
    annotation = {"action": "ANNOTATION_CREATED", "project": {"id": 4}, "annotation": {"id": 1}}
    assert client.post("/webhook", json=annotation).json()["status"] == "counted"
    assert client.post("/webhook", json=annotation).json()["status"] == "started"
    backend = client.app.state.backend
    backend.trainer.wait(60)
    health = client.get("/health").json()
    # No key for project 4 (it was never set up, none in the environment): the training fails cleanly.
    assert health["last_training"]["status"] == "failed" and "no Label Studio URL and key" in health["error"]
    assert health["model_version"] == version and health["training"] is None
    assert_error(client.post("/train", json={"project": "x"}), 422, "'project'")
    assert_up(client)


def test_one_training_at_a_time_and_one_queued(client):
    backend = client.app.state.backend
    with backend.work.update() as state:  # as while another worker process trains
        state["training"] = {"project": 1, "started": "now"}
    start = {"action": "START_TRAINING", "project": {"id": 2}}
    assert client.post("/webhook", json=start).json()["status"] == "queued"
    assert client.post("/webhook", json=start).json()["status"] == "already queued"
    # Depth one: another project's request is refused while one waits, and the waiting one stays.
    assert_error(client.post("/train", json={"project": "3.17", "annotations": []}), 429,
                 "a training of project 1 is running and one of project 2 is waiting")
    assert backend.work.read()["queued"]["project"] == 2
    assert_up(client)


def test_a_new_current_model_is_swapped_in_and_listed(client, packages):
    backend = client.app.state.backend
    before = client.get("/health").json()["model_version"]
    with backend.work.update() as state:  # what an accepted training records
        state["current"] = {"version": "fdpose-trained", "path": str(packages[1])}
        state["history"].append({"status": "accepted", "version": "fdpose-trained", "path": str(packages[1])})
    assert client.get("/health").json()["model_version"] == "fdpose-trained"
    assert backend.slot.refresh().runner is not None and backend.slot.refresh().path == packages[1]
    versions = client.get("/versions").json()
    assert versions["versions"] == [before, "fdpose-trained"] and versions["current"] == "fdpose-trained"


def test_a_current_model_that_does_not_load_leaves_the_working_one_serving(client, tmp_path):
    backend = client.app.state.backend
    before = client.get("/health").json()["model_version"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.yaml").write_text("format: something else\n")
    with backend.work.update() as state:
        state["current"] = {"version": "fdpose-broken", "path": str(broken)}
    assert client.get("/health").json()["model_version"] == before


def test_a_worker_that_missed_the_setup_uses_the_environment(client, label_studio_files, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio_files)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    response = client.post("/predict", json=predict_body(task("/data/upload/1/ok.png"), project="5.1"))
    assert response.status_code == 200 and len(response.json()["results"]) == 1
    bad_config = predict_body(task("/data/upload/1/ok.png"), project="6.1", label_config="<View/>")
    assert_error(client.post("/predict", json=bad_config), 422, "project 6 label config",
                 "no <KeyPointLabels>")


def test_the_command_refuses_bad_options_with_one_line(packages, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["serve", *args])
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("Error:")
        return line

    assert "--model is required" in run("--work-dir", str(tmp_path / "w"))
    assert "model not found" in run("--model", str(tmp_path / "nope"), "--work-dir", str(tmp_path / "w"))
    assert "--connect and --project go together" in run("--connect", "http://127.0.0.1:1")
    assert "--connect and --project go together" in run("--project", "3")
    fresh = ["--model", str(packages[0]), "--work-dir", str(tmp_path / "fresh")]
    assert "--imgsz: expected a positive multiple of 32, got 70" in run(*fresh, "--imgsz", "70")
    assert "--conf: must be in [0, 1], got 1.5" in run(*fresh, "--conf", "1.5")
    assert "--max-det: must be at least 1" in run(*fresh, "--max-det", "0")
    work = tmp_path / "w"
    WorkFolder(work).initialise(packages[0], "fdpose-a")
    assert "serves models derived from" in run("--model", str(packages[1]), "--work-dir", str(work))
    usage = CliRunner().invoke(main, ["serve", "--model", str(packages[0]), "--workers", "0"])
    assert usage.exit_code == 2 and "--workers" in usage.output


def test_a_trickling_download_stops_at_the_timeout(packages, tmp_path, label_studio_files):
    from fastapi.testclient import TestClient

    settings = make_settings(packages[0], PredictParams(conf=0.0), tmp_path / "work",
                             REPO / "cfg" / "params.yaml", download_timeout_s=1.0)
    with TestClient(create_app(settings)) as client:
        assert client.post("/setup", json=setup_body(label_studio_files)).status_code == 200
        # Read to the end, the 100 bytes would be "not a decodable image": the deadline came first.
        response = client.post("/predict", json=predict_body(task("/data/upload/1/slow.png")))
        assert_error(response, 422, "took over 1 s")
