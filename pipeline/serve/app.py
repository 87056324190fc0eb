"""The ASGI app of ``fdpose serve`` (FastAPI): Label Studio's ML-backend endpoints.

``GET /health``  ``{"status": "UP", "model_version", "training", "queued", "last_training", "error",
                 "failed_tasks", "task_failures"}`` (tasks answered with an empty result, the latest
                 with their reasons)
``POST /setup``  checks the project's label config against the model, keeps the server URL and key
                 (in memory) and answers ``{"model_version"}``
``POST /predict`` ``{"results": [{"result", "score", "model_version"}, ...]}``, one per task; a task
                 that fails gets ``[]``, no prediction (reason in the log and /health), unless all do
``POST /webhook`` START_TRAINING (and annotation events with ``--train-every``) -> ``{"status"}``
``POST /train``  the same training request, from servers that post annotations there
``GET /versions`` ``{"versions": [...], "current", "history"}``

Bad requests are answered with a 4xx status and ``{"error": "<what and why>"}``; the server keeps
running. Label Studio reports a failed ``/setup`` only by the HTTP status line and the final URL (it
drops the body), so a rejected label config is answered with a redirect to
``/setup/rejected?reason=...`` which then fails: the reason reaches Label Studio's error message.
Optional HTTP basic auth: ``BASIC_AUTH_USER`` and ``BASIC_AUTH_PASS`` in the environment (Label
Studio's ML backend settings send them). Request bodies over ``max_body_bytes`` are refused (413).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from pipeline.errors import FdposeError
from pipeline.labelstudio.client import API_KEY_ENV, URL_ENV, ImageFetcher
from pipeline.labelstudio.layout import ProjectLayout, match_label_config
from pipeline.model_io import model_version
from pipeline.serve.models import ModelSlot, ServedModel
from pipeline.serve.predictor import TaskFailure, Thresholds, predict_tasks
from pipeline.serve.protocol import RequestError, check_known, field, parse_body, project_id
from pipeline.serve.state import WorkFolder, now
from pipeline.serve.training import Trainer

log = logging.getLogger("fdpose.serve")
AUTH_ENV = ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")
PROJECTS_KEPT = 256  # projects whose setup this process remembers (oldest forgotten first)
FAILURES_KEPT = 20  # the latest failed tasks /health lists
SETUP_FIELDS = {"project", "schema", "hostname", "access_token", "extra_params", "model_version"}
PREDICT_FIELDS = {"tasks", "project", "label_config", "params", "model_version"}
TRAIN_FIELDS = {"annotations", "project", "label_config", "params"}
TRAINING_ACTIONS = {"START_TRAINING"}
ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"}


@dataclass(frozen=True)
class ServeSettings:
    """Everything a server process needs; no secrets (those come from the environment)."""

    model: Path
    work_dir: Path
    params: Path
    thresholds: Thresholds
    backend: str = "auto"
    threads: int | None = None
    train_every: int = 0
    keep: int = 5  # trained packages and runs kept (WorkFolder.prune); 0: all
    occlusion_choice: str | None = None
    max_body_bytes: int = 16 * 2**20
    max_image_bytes: int = 64 * 2**20
    download_timeout_s: float = 15.0


@dataclass
class ProjectSession:
    layout: ProjectLayout
    images: ImageFetcher
    source: tuple[str, str, str, str]  # (label config, URL, key, model version) it was made from


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _send_error(send, 413, f"request body over {self.limit} bytes")
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RequestError(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _basic_auth_ok(header: str | None) -> bool:
    user, password = (os.environ.get(name) for name in AUTH_ENV)
    if not user or not password:
        return True
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), f"{user}:{password}".encode())


def check_thresholds(thresholds: Thresholds, model: ServedModel) -> None:
    """Refuse settings no request could be served with, before listening."""
    for name in ("conf", "iou", "kpt_conf"):
        if not 0.0 <= getattr(thresholds, name) <= 1.0:
            raise FdposeError(f"must be in [0, 1], got {getattr(thresholds, name)}", item=f"--{name}")
    if thresholds.max_det < 1:
        raise FdposeError(f"must be at least 1, got {thresholds.max_det}", item="--max-det")
    imgsz, fixed, stride = thresholds.imgsz, model.runner.fixed_imgsz, model.meta.stride
    if imgsz is not None and (imgsz <= 0 or imgsz % stride or (fixed and imgsz != fixed)):
        expected = f"{fixed} (the ONNX export's size)" if fixed else f"a positive multiple of {stride}"
        raise FdposeError(f"expected {expected}, got {imgsz}", item="--imgsz")


class Backend:
    """The state one server process serves from: model slot, trainer, projects set up."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.work = WorkFolder(settings.work_dir)
        self.work.initialise(settings.model, model_version(settings.model, settings.backend))
        self.slot = ModelSlot(self.work, settings.backend, settings.threads)
        check_thresholds(settings.thresholds, self.slot.refresh())
        self.trainer = Trainer(self.work, settings.params, settings.train_every, settings.keep)
        self.projects: OrderedDict[int, ProjectSession] = OrderedDict()
        self._lock = threading.Lock()
        self.failed_tasks = 0  # tasks of /predict batches answered with an empty result, since start
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_KEPT)

    def layout(self, schema: str, where: str) -> ProjectLayout:
        skeleton = self.slot.refresh().meta.skeleton
        try:
            return match_label_config(schema, skeleton.keypoint_names, skeleton.class_names,
                                      skeleton.kpt_dims, self.settings.occlusion_choice, source=where)
        except FdposeError as error:
            raise RequestError(422, str(error)) from None

    def remember(self, project: int, schema: str, url: str, key: str) -> ProjectSession:
        """The project's session for this config, URL, key and model: the current one when they are
        the same (Label Studio calls /setup before every batch of predictions), else a new one."""
        source = (schema, url, key, self.slot.refresh().version)
        with self._lock:
            session = self.projects.get(project)
            if session is not None and session.source == source:
                self.projects.move_to_end(project)
                return session
        layout = self.layout(schema, f"project {project} label config")
        images = ImageFetcher(url, key, timeout_s=self.settings.download_timeout_s,
                              max_bytes=self.settings.max_image_bytes)
        with self._lock:
            old = self.projects.pop(project, None)
            self.projects[project] = session = ProjectSession(layout, images, source)
            excess = len(self.projects) - PROJECTS_KEPT
            forgotten = [self.projects.popitem(last=False)[1] for _ in range(excess)]
        for stale in ([old] if old is not None else []) + forgotten:
            stale.images.close()
        self.trainer.remember(project, url, key)
        return session

    def connection(self, data: dict[str, Any], where: str) -> tuple[str, str]:
        """Label Studio's URL and key: the environment's when set, else what the request carries."""
        url = os.environ.get(URL_ENV) or data.get("hostname")
        key = os.environ.get(API_KEY_ENV) or data.get("access_token")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RequestError(422, f"{where}: no Label Studio URL ('hostname' of /setup, or {URL_ENV})")
        if not isinstance(key, str) or not key:
            raise RequestError(422, f"{where}: no Label Studio key ('access_token' of /setup, or "
                                    f"{API_KEY_ENV})")
        return url, key

    def session(self, data: dict[str, Any], project: int) -> ProjectSession:
        """The project's session: from its /setup, else built from the request's label config and the
        environment's URL and key (a worker process that did not see the /setup)."""
        session = self.projects.get(project)
        if session is not None and session.source[3] != self.slot.refresh().version:
            session = self.remember(project, *session.source[:3])  # the model changed: map it again
        if session is None:
            schema = field(data, "label_config", str, "predict")
            where = (f"predict: project {project} was not set up in this process (with several workers, "
                     f"set {URL_ENV} and {API_KEY_ENV})")
            url, key = self.connection({}, where)
            session = self.remember(project, schema, url, key)
        return session

    def setup(self, data: dict[str, Any]) -> dict[str, Any]:
        check_known(data, SETUP_FIELDS, "setup")
        project = project_id(field(data, "project", (str, int)), "setup")
        schema = field(data, "schema", str, "setup")
        self.layout(schema, f"project {project} label config")  # a config that does not fit fails first
        url, key = self.connection(data, "setup")
        self.remember(project, schema, url, key)
        return {"model_version": self.slot.refresh().version}

    def predict(self, data: dict[str, Any]) -> dict[str, Any]:
        check_known(data, PREDICT_FIELDS, "predict")
        tasks = field(data, "tasks", list, "predict")
        project = project_id(field(data, "project", (str, int)), "predict")
        session = self.session(data, project)
        model = self.slot.refresh()
        results, failures = predict_tasks(tasks, model, session.layout, session.images,
                                          self.settings.thresholds)
        self.record_failures(project, failures)
        return {"results": results}

    def record_failures(self, project: int, failures: list[TaskFailure]) -> None:
        """Failed tasks of a batch that otherwise succeeded: in the log and in ``/health``."""
        for failure in failures:
            log.warning("predict: project %s task %s: empty result (%s)", project, failure.task,
                        failure.reason)
        with self._lock:
            self.failed_tasks += len(failures)
            self.failures.extend({"project": project, "task": failure.task, "status": failure.status,
                                  "reason": failure.reason, "at": now()} for failure in failures)

    def webhook(self, data: dict[str, Any]) -> dict[str, Any]:
        action = field(data, "action", str, "webhook")
        if action in TRAINING_ACTIONS:
            project = project_id(field(data, "project", (dict, int, str)), "webhook")
            return {"status": self.trainer.request(project), "project": project}
        if action in ANNOTATION_ACTIONS:
            project = project_id(field(data, "project", (dict, int, str)), "webhook")
            annotations = data.get("annotation")  # ANNOTATIONS_CREATED carries a list
            new = len(annotations) if isinstance(annotations, list) else 1
            outcome = self.trainer.count_annotations(project, new)
            return {"status": outcome or "counted", "project": project}
        return {"status": "ignored", "action": action}

    def train(self, data: dict[str, Any]) -> dict[str, Any]:
        check_known(data, TRAIN_FIELDS, "train")
        project = project_id(field(data, "project", (str, int)), "train")
        return {"status": self.trainer.request(project), "project": project}

    def health(self) -> dict[str, Any]:
        state = self.work.read()
        history = state.get("history") or []
        return {"status": "UP", "model_class": "fdpose", "model_version": self.slot.refresh().version,
                "training": state.get("training"), "queued": state.get("queued"),
                "last_training": history[-1] if history else None, "error": state.get("last_error"),
                "failed_tasks": self.failed_tasks, "task_failures": list(self.failures)}

    def versions(self) -> dict[str, Any]:
        state = self.work.read()
        history = state.get("history") or []
        versions = [state["base_version"]] + [h["version"] for h in history if h.get("status") == "accepted"]
        return {"versions": versions, "current": state["current"]["version"], "history": history}


def create_app(settings: ServeSettings) -> Any:
    """The FastAPI app over a :class:`Backend` (loads the current model)."""
    backend = Backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        backend.trainer.stop()  # a training job does not outlive its server

    app = FastAPI(title="fdpose ML backend", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.backend = backend

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if not _basic_auth_ok(request.headers.get("authorization")):
            return JSONResponse({"error": "authentication required"}, 401,
                                headers={"WWW-Authenticate": 'Basic realm="fdpose"'})
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> Any:
        log.info("%s %s -> %d: %s", request.method, request.url.path, error.status, error.message)
        if request.url.path == "/setup" and error.status == 422:
            # Characters requests leaves as they are stay readable in Label Studio's message.
            reason = urlencode({"reason": error.message}, safe="'():;[],=!*@/")
            return RedirectResponse(f"/setup/rejected?{reason}", 307)
        return JSONResponse({"error": error.message}, error.status)

    async def body(request: Request) -> dict[str, Any]:
        return parse_body(await request.body())

    @app.get("/health")
    def health() -> dict[str, Any]:
        return backend.health()

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        data = await body(request)
        return await _in_thread(backend.setup, data)

    @app.post("/setup/rejected")
    def setup_rejected(reason: str = "") -> Any:
        return JSONResponse({"error": reason}, 422)

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await body(request)
        return await _in_thread(backend.predict, data)

    @app.post("/webhook")
    async def webhook(request: Request) -> Any:
        return JSONResponse(backend.webhook(await body(request)), 201)

    @app.post("/train")
    async def train(request: Request) -> Any:
        return JSONResponse(backend.train(await body(request)), 201)

    @app.get("/versions")
    def versions() -> dict[str, Any]:
        return backend.versions()

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


async def _in_thread(function: Any, *args: Any) -> Any:
    """Run blocking work (downloads, inference) off the event loop, so /health keeps answering."""
    return await run_in_threadpool(function, *args)
