"""``fdpose serve``: the Label Studio ML backend, under uvicorn.

With ``--workers 1`` the app runs in this process; with more, uvicorn starts that many processes, each
building the app from :data:`SETTINGS_ENV` (the settings as JSON: paths and thresholds, never a key).
They share the work folder (served model, training queue, history); the key Label Studio sends to
``/setup`` reaches one process only, so several workers want ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY`` in the environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import click

from pipeline.config import PARAMS_FILE, PredictParams, load_section
from pipeline.errors import FdposeError
from pipeline.serve.app import ServeSettings, create_app
from pipeline.serve.predictor import Thresholds
from pipeline.serve.state import WorkFolder

SETTINGS_ENV = "FDPOSE_SERVE_SETTINGS"
DEFAULT_WORK_DIR = Path("runs/serve")


def settings_to_json(settings: ServeSettings) -> str:
    return json.dumps(dataclasses.asdict(settings), default=str)


def settings_from_json(text: str) -> ServeSettings:
    data = json.loads(text)
    data["thresholds"] = Thresholds(**data["thresholds"])
    for key in ("model", "work_dir", "params"):
        data[key] = Path(data[key])
    return ServeSettings(**data)


def app_from_env() -> Any:
    """uvicorn's app factory for worker processes."""
    return create_app(settings_from_json(os.environ[SETTINGS_ENV]))


def make_settings(model: str | Path, predict: PredictParams, work_dir: str | Path = DEFAULT_WORK_DIR,
                  params: str | Path = PARAMS_FILE, imgsz: int | None = None,
                  **options: Any) -> ServeSettings:
    """Settings with ``predict``'s thresholds (the params' ``package.predict``, options merged) and
    ``imgsz`` (None: the model's own); ``params`` is the file a training job reads its sections from."""
    thresholds = Thresholds(conf=predict.conf, iou=predict.iou, max_det=predict.max_det,
                            kpt_conf=predict.kpt_conf, imgsz=imgsz)
    model = Path(model).resolve()
    if not model.exists():
        raise FdposeError("model not found", path=model)
    return ServeSettings(model=model, work_dir=Path(work_dir).resolve(), params=Path(params).resolve(),
                         thresholds=thresholds, **{k: v for k, v in options.items() if v is not None})


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 9090, workers: int = 1,
          log_level: str = "info") -> None:
    """Serve until interrupted. The model is loaded (and the work folder checked) before listening."""
    import uvicorn

    app = create_app(settings)  # loads the model: a bad --model fails here, with one line
    WorkFolder(settings.work_dir).clear_stale_training()
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
        return
    os.environ[SETTINGS_ENV] = settings_to_json(settings)
    uvicorn.run("pipeline.serve.command:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, server_header=False)


@click.command("serve")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Package directory, model.safetensors, model.onnx or a .pt checkpoint to serve first.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9090, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Server processes.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORK_DIR,
              show_default=True, help="State, trained models and training runs; kept across restarts.")
@click.option("--params", type=click.Path(dir_okay=False, path_type=Path), default=PARAMS_FILE,
              show_default=True, help="Params file: package.predict thresholds, train:/eval: for training.")
@click.option("--conf", type=float, default=None, help="Detection threshold [params: package.predict.conf]")
@click.option("--iou", type=float, default=None, help="NMS IoU [params: package.predict.iou]")
@click.option("--max-det", type=int, default=None, help="[params: package.predict.max_det]")
@click.option("--kpt-conf", type=float, default=None,
              help="Keypoints below this are left out or marked occluded [params: package.predict.kpt_conf]")
@click.option("--imgsz", type=int, default=None, help="Input size (default: the model's).")
@click.option("--backend", type=click.Choice(["auto", "onnx"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="Inference threads per process.")
@click.option("--train-every", type=int, default=0, show_default=True,
              help="Also train after every N new annotations of a project (0: only on Start training).")
@click.option("--keep", type=click.IntRange(min=0), default=5, show_default=True,
              help="Trained packages and training runs kept in --work-dir after each training (the served "
                   "package always; 0: all).")
@click.option("--occlusion-choice", default=None,
              help="Per-region choice marking an occluded keypoint (default: one containing 'occlu').")
@click.option("--max-body-mb", type=float, default=16.0, show_default=True, help="Request body limit.")
@click.option("--max-image-mb", type=float, default=64.0, show_default=True, help="Downloaded image limit.")
@click.option("--connect", "label_studio", metavar="URL", default=None,
              help="Instead of serving: connect the backend at --host/--port to --project of this Label "
                   "Studio server (key: LABEL_STUDIO_API_KEY), then exit.")
@click.option("--project", type=int, default=None, help="Label Studio project id for --connect.")
def serve_command(model: Path | None, host: str, port: int, workers: int, work_dir: Path, params: Path,
                  max_body_mb: float, max_image_mb: float, label_studio: str | None, project: int | None,
                  **options: Any) -> None:
    """Label Studio ML backend: pre-annotate keypoints, train from the labelling UI."""
    if (label_studio is None) != (project is None):
        raise FdposeError("--connect and --project go together", item="options")
    if label_studio is not None:
        from pipeline.serve.connect import connect

        click.echo(connect(label_studio, project, f"http://{host}:{port}"))
        return
    if model is None:
        raise FdposeError("--model is required to serve", item="--model")
    # Options win over the params' package.predict; create_app checks the thresholds, naming the option.
    given = {key: options.pop(key) for key in ("conf", "iou", "max_det", "kpt_conf")}
    predict = dataclasses.replace(load_section("package", params).predict,
                                  **{key: value for key, value in given.items() if value is not None})
    settings = make_settings(model, predict, work_dir, params, max_body_bytes=int(max_body_mb * 2**20),
                             max_image_bytes=int(max_image_mb * 2**20), **options)
    serve(settings, host, port, workers)
