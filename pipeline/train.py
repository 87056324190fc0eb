"""``fdpose train``: train the C2f_FDConv YOLOv8-pose model with ultralytics, on GPU when present.

:func:`train` runs ultralytics' pose trainer through :class:`FdposePoseTrainer`, a thin subclass that

- installs the run guards of :func:`pipeline.nn.ultralytics.install_guards` (also in the worker
  processes ultralytics' DDP launcher starts: they unpickle this class by its module path);
- starts from a stock YOLOv8-pose checkpoint (``--pretrained``) converted into the C2f_FDConv model
  by :func:`pipeline.pretrained.load_pretrained_into`;
- never downloads: ultralytics' AMP check (which fetches ``yolo26n.pt``) is replaced by
  ``offline_check_amp``, and its font lookup (which fetches ``Arial.ttf``) by ``local_font`` (both
  in :mod:`pipeline.nn.ultralytics`);
- logs to DVCLive under the run folder (``<out>/dvclive``) instead of ultralytics' own DVC callback,
  which writes ``dvclive/`` and ``dvc.yaml`` into the current directory and saves a DVC experiment
  (git commits and checkouts in the working tree) at the end of every run;
- leaves the dataset as it is (ultralytics would write ``labels/<split>.cache`` into it, changing
  another DVC stage's output);
- writes checkpoints atomically (a kill while saving cannot leave a truncated ``last.pt``) and
  ``metrics.json``, the final box and pose metrics by name.

A run trains in ``<out>.partial`` and is renamed to ``<out>`` when it completes, so a failed or
killed run never replaces a previous result; ``--resume`` continues the run in ``<out>.partial``
from its ``weights/last.pt``.

Outputs in ``<out>``: ``weights/best.pt``, ``weights/last.pt``, ``args.yaml``, ``results.csv`` (one
row per epoch: losses, metrics, learning rates), ``metrics.json``, ``dvclive/`` (``metrics.json``,
``params.yaml``, ``plots/metrics/**.tsv``; declare them as ``metrics``/``plots`` of the DVC stage)
and, with ``plots: true``, ultralytics' PNG curves (``results.png``, ``Box*_curve.png``,
``Pose*_curve.png``, confusion matrices).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch
import yaml

# Before ultralytics is imported: it then skips its connectivity probe, analytics and package
# auto-installs (a user may still set YOLO_OFFLINE=0).
os.environ.setdefault("YOLO_OFFLINE", "1")
# ultralytics rewrites its settings.json (not atomically) when it finds none or an older one: each run
# gets a settings folder of its own, removed at exit (DDP workers inherit it), so concurrent runs
# (`dvc queue start -j 2`) never share that file. A user's own YOLO_CONFIG_DIR is kept.
if "YOLO_CONFIG_DIR" not in os.environ:
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fdpose-ultralytics-")
    atexit.register(shutil.rmtree, os.environ["YOLO_CONFIG_DIR"], ignore_errors=True)

from ultralytics.models.yolo.pose import PoseTrainer  # noqa: E402
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, LOGGER, RANK  # noqa: E402

from pipeline.config import PARAMS_FILE, TrainParams, load_section, overridden
from pipeline.errors import FdposeError
from pipeline.formats.yolo import load_data_yaml
from pipeline.images import IMAGE_SUFFIXES
from pipeline.io import atomic_write_bytes, is_write_failure, replace_dir, write_failure, write_json
from pipeline.model_io import Layout, check_fits, load_model
from pipeline.nn.ultralytics import install_guards, model_argument
from pipeline.pretrained import check_start
from pipeline.skeleton import Skeleton
from pipeline.weights import resolve_weights

# Arguments train() sets itself; the params file's ``hyp:`` may set any other ultralytics train argument.
_MANAGED_ARGS = {"model", "data", "epochs", "imgsz", "batch", "device", "seed", "workers", "plots", "resume",
                 "pretrained", "project", "name", "exist_ok", "deterministic", "save_dir", "mode", "task"}


@dataclass
class TrainResult:
    """A finished run: where its outputs are and its final metrics."""

    out: Path
    best: Path
    last: Path
    metrics: dict[str, Any]
    device: str  # the ultralytics device string the run used: "cpu", "0", "0,1"
    epochs: int
    resumed: bool = False
    pretrained: str | None = None
    conversion: dict[str, Any] | None = None  # --pretrained: layers converted, copied, re-initialised
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The lines ``fdpose train`` prints: epochs, device, final mAPs, what was written."""
        scores = ", ".join(f"{kind} mAP50-95 {self.metrics[kind]['mAP50-95']:.4f}" for kind in ("box", "pose")
                           if "mAP50-95" in self.metrics.get(kind, {}))
        return (f"trained {self.epochs} epochs on {self.device}: {scores}\n"
                f"wrote {self.out}: weights/best.pt, weights/last.pt, metrics.json, results.csv, dvclive/")


# --- inputs ---------------------------------------------------------------------------------------


def dataset_layout(data_yaml: Path) -> Layout:
    """The keypoint shape and class names of a YOLO-pose ``data.yaml``; checks its train/val folders exist."""
    data, root = load_data_yaml(data_yaml)
    skeleton = Skeleton.from_data_yaml(data, source=data_yaml)
    folders = {}
    for split in ("train", "val"):
        entry = data.get(split)
        if not entry:
            raise FdposeError(f"no '{split}' split (ultralytics needs train and val)", path=data_yaml)
        folders[split] = [root / folder for folder in (entry if isinstance(entry, list) else [entry])]
        for folder in folders[split]:
            if not folder.exists():
                raise FdposeError(f"'{split}' folder {folder} does not exist", path=data_yaml)
    for split, found in folders.items():
        if all(folder.is_dir() for folder in found) and not any(map(_holds_image, found)):
            raise FdposeError(f"split '{split}' has no images (training needs train and val images; for a "
                              "handful of images: convert.fill_splits)", path=data_yaml)
    return Layout.of_skeleton(skeleton)


def _holds_image(folder: Path) -> bool:
    return any(path.suffix.lower() in IMAGE_SUFFIXES for path in folder.rglob("*"))


def mirror_overrides(data_yaml: Path, hyp: dict[str, Any]) -> dict[str, Any]:
    """``fliplr: 0, flipud: 0`` for a dataset whose flip is unknown (its data.yaml has no ``flip_idx``:
    mirroring would teach left as right); asking for a flip there is an error."""
    data, _ = load_data_yaml(data_yaml)
    if data.get("flip_idx"):
        return {}
    asked = [key for key in ("fliplr", "flipud") if hyp.get(key)]
    if asked:
        raise FdposeError("the dataset has no flip_idx (its left/right pairs are unknown), so it must not be "
                          f"mirrored; drop {', '.join(asked)} or convert with a skeleton that has flip_pairs",
                          path=data_yaml, item=f"train.hyp.{asked[0]}")
    return {"fliplr": 0.0, "flipud": 0.0}


def check_checkpoint_fits(checkpoint: Path, data_yaml: Path, data: Layout, role: str) -> list[str]:
    """Raise one clear error when the checkpoint does not fit the dataset in ``role``
    (:func:`pipeline.model_io.check_fits`); returns warnings (class names that differ)."""
    return check_fits(Layout.of_model(load_model(checkpoint)), data, role=role, model_path=checkpoint,
                      data_path=data_yaml)


def resolve_device(device: str | int | None) -> tuple[str, str]:
    """ultralytics' device string for ``device`` (``auto``, ``cpu``, ``0``, ``0,1``) and a line saying which.

    ``auto`` takes CUDA device 0 when CUDA is available, else the CPU. GPU ids must exist.
    """
    request = "auto" if device is None else str(device).strip().lower().replace(" ", "")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if request in ("auto", ""):
        if available:
            return "0", f"device auto -> CUDA:0 ({torch.cuda.get_device_name(0)})"
        return "cpu", "device auto -> CPU (no CUDA device available)"
    if request == "cpu":
        return "cpu", "device cpu"
    ids = request.removeprefix("cuda:").split(",")
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise FdposeError("expected auto, cpu, a GPU id (0) or GPU ids (0,1)", item=f"--device {device}")
    missing = [i for i in ids if int(i) >= available]
    if missing:
        raise FdposeError(f"GPU {','.join(missing)} not available ({available} CUDA devices found)",
                          item=f"--device {device}")
    joined = ",".join(ids)
    names = ", ".join(f"CUDA:{i} ({torch.cuda.get_device_name(int(i))})" for i in ids)
    mode = "DDP over " if len(ids) > 1 else ""
    return joined, f"device {joined} -> {mode}{names}"


def _hyp_overrides(hyp: dict[str, Any] | None, source: object) -> dict[str, Any]:
    hyp = dict(hyp or {})
    for key in hyp:
        if key in _MANAGED_ARGS:
            raise FdposeError(f"'{key}' is set by fdpose train itself (use its option)", path=source,
                              item=f"train.hyp.{key}")
        if key not in DEFAULT_CFG_DICT:
            raise FdposeError("not an ultralytics train argument", path=source, item=f"train.hyp.{key}")
    return hyp


# --- logging --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A YAML-safe version of an ultralytics argument value (paths and other objects as strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def final_metrics(trainer: PoseTrainer, last_epoch: dict[str, Any]) -> dict[str, Any]:
    """The run's final metrics by name: box and pose precision/recall/mAP of ``best.pt`` (the trainer's
    metrics after its final validation), and the losses of the last epoch (``last_epoch``)."""
    out: dict[str, dict[str, float]] = {"box": {}, "pose": {}, "train_loss": {}, "val_loss": {}}
    kinds = {"B": "box", "P": "pose"}
    losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
    last_losses = {key: value for key, value in last_epoch.items() if key.startswith("val/")}
    for key, value in {**losses, **last_losses, **(trainer.metrics or {})}.items():
        if match := re.fullmatch(r"metrics/(.+)\(([BP])\)", key):
            out[kinds[match[2]]][match[1]] = float(value)
        elif key.startswith(("train/", "val/")):
            prefix, name = key.split("/", 1)
            out[f"{prefix}_loss"][name] = float(value)
    result: dict[str, Any] = {key: value for key, value in out.items() if value}
    result["epochs"] = int(trainer.epoch) + 1
    result["best_epoch"] = int(trainer.stopper.best_epoch)
    if trainer.best_fitness is not None:
        result["best_fitness"] = float(trainer.best_fitness)
    return result


class DvcLiveLogger:
    """Logs a run to DVCLive in ``<run>/dvclive``: parameters, per-epoch metrics, and the final metrics.

    ``save_dvc_exp=False`` and ``dvcyaml=False``: it never touches git or the project's ``dvc.yaml``
    and works outside any repository; a DVC stage declares ``dvclive/metrics.json`` and
    ``dvclive/plots/metrics`` as its metrics and plots.
    """

    def __init__(self) -> None:
        self.live = None
        self.in_epoch = False  # on_fit_epoch_end also fires for the final validation; log epochs only

    @staticmethod
    def available() -> bool:
        try:
            import dvclive  # noqa: F401
        except ImportError:
            return False
        return True

    def attach(self, trainer: PoseTrainer) -> None:
        trainer.add_callback("on_train_start", self.on_train_start)
        trainer.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        trainer.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        trainer.add_callback("on_train_end", self.on_train_end)

    def on_train_start(self, trainer: PoseTrainer) -> None:
        from dvclive import Live

        self.live = Live(dir=str(Path(trainer.save_dir) / "dvclive"), resume=bool(trainer.resume),
                         save_dvc_exp=False, dvcyaml=False, report=None)
        # One step per epoch; a resumed run continues at its first unfinished epoch (DVCLive's own
        # resume would repeat step 0 after a single finished epoch).
        self.live.step = int(trainer.start_epoch)
        self.live.log_params(_plain(vars(trainer.args)))

    def on_train_epoch_start(self, trainer: PoseTrainer) -> None:
        self.in_epoch = True

    def on_fit_epoch_end(self, trainer: PoseTrainer) -> None:
        if self.live is None or not self.in_epoch:
            return
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        for name, value in {**losses, **(trainer.metrics or {}), **trainer.lr}.items():
            self.live.log_metric(name, float(value))
        self.live.next_step()
        self.in_epoch = False

    def on_train_end(self, trainer: PoseTrainer) -> None:
        if self.live is None:
            return
        # The final metrics (best.pt validated) become the summary, not a point of the curves.
        for name, value in (trainer.metrics or {}).items():
            self.live.log_metric(name, float(value), plot=False)
        self.live.end()
        self.live = None


# --- trainer --------------------------------------------------------------------------------------


class FdposePoseTrainer(PoseTrainer):
    """ultralytics' pose trainer for the C2f_FDConv model: offline, DVCLive-logged, atomically saved.

    Importable by module path (``pipeline.train.FdposePoseTrainer``), as ultralytics' DDP workers
    need: they unpickle the class and construct it from the saved arguments (importing
    :mod:`pipeline` registers our blocks with ultralytics there too).
    """

    fdpose_trainer = True  # ultralytics' DVC callback is skipped (pipeline.nn.ultralytics.install_guards)

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None,
                 _callbacks: dict | None = None):
        install_guards()
        super().__init__(cfg, overrides, _callbacks)
        # One logger per run: callbacks handed over from another trainer may already carry one.
        has_logger = any(isinstance(getattr(callback, "__self__", None), DvcLiveLogger)
                         for callbacks in self.callbacks.values() for callback in callbacks)
        if RANK in {-1, 0} and not self.ddp and not has_logger and DvcLiveLogger.available():
            DvcLiveLogger().attach(self)

    def get_model(self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True):
        """The pose model from ``cfg`` with the dataset's classes and keypoints; ``weights`` (a stock or
        C2f_FDConv pose model) are converted into it layer by layer, never partially dropped. What was
        converted and copied goes to ``pretrained.json`` in the run folder."""
        if weights is None or self.resume:
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        from pipeline.pretrained import load_pretrained_into

        model = super().get_model(cfg=cfg, weights=None, verbose=verbose)
        source = self.args.pretrained if isinstance(self.args.pretrained, str) else str(self.args.model)
        conversion = load_pretrained_into(model, weights.float(), source=source).to_dict()
        LOGGER.info(f"Pretrained from {source}: {len(conversion['converted'])} layers converted to FDConv "
                    f"blocks, {len(conversion['copied'])} copied, head branches re-initialised for the "
                    f"dataset's layout: {', '.join(conversion['reinitialised']) or 'none'}")
        if RANK in {-1, 0}:
            write_json(Path(self.save_dir) / "pretrained.json", conversion)
        return model

    def save_model(self) -> bool:
        """ultralytics' checkpoint save, written to temporary names and renamed into place, so a kill
        during the write leaves the previous ``last.pt`` (and ``best.pt``) intact for ``--resume``."""
        final_last, final_best = self.last, self.best
        staged = {final_last: final_last.with_name(f".{final_last.name}.tmp"),
                  final_best: final_best.with_name(f".{final_best.name}.tmp")}
        self.last, self.best = staged[final_last], staged[final_best]
        try:
            saved = super().save_model()
        finally:
            self.last, self.best = final_last, final_best
        for final, temporary in staged.items():
            if temporary.exists():
                os.replace(temporary, final)
        return saved

    def final_eval(self) -> None:
        """ultralytics' final validation of ``best.pt``, then ``metrics.json`` (also in a DDP worker)."""
        last_epoch = dict(self.metrics or {})
        super().final_eval()
        if RANK in {-1, 0}:
            write_json(Path(self.save_dir) / "metrics.json", final_metrics(self, last_epoch))


# --- the stage ------------------------------------------------------------------------------------


def _staging_dir(out: Path) -> Path:
    return out.with_name(f"{out.name}.partial")


def _finish_run_dir(staging: Path, out: Path) -> None:
    """Point ``args.yaml`` at the final folder, then move the run there."""
    args_file = staging / "args.yaml"
    if args_file.exists():
        args = yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}
        args.update(save_dir=str(out), project=str(out.parent), name=out.name)
        atomic_write_bytes(args_file, yaml.safe_dump(args, sort_keys=False, allow_unicode=True).encode())
    replace_dir(staging, out)


def _write_failed(error: Exception, staging: Path, out: Path) -> FdposeError:
    """A write that failed during training (a full disk): the run so far stays for ``--resume`` when
    it has a whole ``last.pt`` (save_model renames it into place), else it is removed."""
    weights = staging / "weights"
    if (weights / "last.pt").is_file():
        for partial in weights.glob(".*.tmp"):
            partial.unlink()
        return write_failure(error, out, f"{out} is unchanged; the run so far is in {staging}: "
                                         "`fdpose train --resume` continues it once there is room")
    shutil.rmtree(staging, ignore_errors=True)
    return write_failure(error, out)


def _resume_overrides(data: Path, out: Path, params: TrainParams, given: set[str], layout: Layout,
                      warnings: list[str]) -> dict[str, Any]:
    """ultralytics' arguments to continue the run in ``<out>.partial`` from its ``last.pt``."""
    if "pretrained" in given:
        raise FdposeError("a resumed run continues from its last.pt; drop --pretrained", item="--resume")
    last = _staging_dir(out) / "weights" / "last.pt"
    if not last.is_file():
        finished = (out / "weights" / "last.pt").is_file()
        reason = (f"the run in {out} has finished; nothing to resume" if finished
                  else f"no interrupted run to resume ({last} not found)")
        raise FdposeError(reason, path=out, item="--resume")
    warnings += check_checkpoint_fits(last, data, layout, "resumed")
    ignored = [name for name in KEPT_ON_RESUME if name in given]
    if ignored:
        warnings.append(f"resuming keeps the run's own {', '.join(ignored)} (from {last})")
    return {"resume": str(last), "data": str(data),
            **{name: getattr(params, name) for name in RESUMABLE if name in given}}


def _fresh_overrides(data: Path, staging: Path, params: TrainParams, params_source: object) -> dict[str, Any]:
    """ultralytics' arguments of a new run in ``staging`` (an interrupted run there is discarded)."""
    extra = _hyp_overrides(params.hyp, params_source)
    no_mirror = mirror_overrides(data, extra)
    model_arg = model_argument(params.model)
    # A file, an official pose weight name or a URL (pipeline.weights).
    pretrained = resolve_weights(params.pretrained) if params.pretrained is not None else None
    # A checkpoint to start from (--model X.pt, --pretrained) may have another keypoint layout or
    # classes than the dataset (the head branches that follow them are re-initialised); it must be
    # a pose model of the model's family and scale.
    check_start(model_arg, pretrained)
    if staging.exists():
        click.echo(f"fdpose train: discarding the interrupted run in {staging} "
                   "(use --resume to continue it)", err=True)
        shutil.rmtree(staging)
    return {
        **extra, **no_mirror,
        "epochs": params.epochs, "imgsz": params.imgsz, "batch": params.batch, "seed": params.seed,
        "workers": params.workers, "plots": params.plots,
        "model": model_arg, "data": str(data), "deterministic": True,
        "project": str(staging.parent), "name": staging.name, "exist_ok": True,
        # ultralytics' pretrained=True: "the weights of a .pt model"; a path: "start from these".
        "pretrained": str(pretrained) if pretrained is not None else True,
    }


# Settings a resumed run takes from the caller when given (the others come from its last.pt; the device
# is always the caller's); given, the rest are named in a warning.
RESUMABLE = ("imgsz", "batch", "workers", "plots")
KEPT_ON_RESUME = ("model", "epochs", "seed", "hyp")


def train(data: str | Path, out: str | Path, params: TrainParams | None = None, *, resume: bool = False,
          given: Collection[str] = (), params_source: object = "train()",
          callbacks: dict[str, list[Callable]] | None = None) -> TrainResult:
    """Train a YOLOv8-pose model (C2f_FDConv by default) on a YOLO-pose dataset; outputs in ``out``.

    ``params`` is the ``train:`` section (:class:`pipeline.config.TrainParams`; its defaults when None):
    the model, ``pretrained`` (a stock or C2f_FDConv YOLOv8-pose checkpoint to start from), the run's
    size and seed, and ``hyp``, further ultralytics train arguments (``lr0``, ``mosaic``, ...);
    ``params_source`` is what a bad ``hyp`` key's error names. ``resume`` continues the interrupted run
    in ``<out>.partial``: model, epochs, seed and hyperparameters come from its ``last.pt``, and so do
    ``imgsz``, ``batch``, ``workers`` and ``plots`` unless named in ``given`` (the fields the caller set,
    such as the options of a command line). ``callbacks`` maps ultralytics callback events to extra
    functions of the trainer. The dataset, device and any checkpoint are checked before training: a
    model/dataset mismatch is one :class:`FdposeError`.
    """
    params = params if params is not None else TrainParams()
    data = Path(data).resolve()
    out = Path(out).resolve()
    staging = _staging_dir(out)
    layout = dataset_layout(data)
    device_arg, device_line = resolve_device(params.device)
    click.echo(f"fdpose train: {device_line}", err=True)
    warnings: list[str] = []
    if resume:
        overrides = _resume_overrides(data, out, params, set(given), layout, warnings)
    else:
        overrides = _fresh_overrides(data, staging, params, params_source)
    overrides["device"] = device_arg
    for message in warnings:
        click.echo(f"fdpose train: warning: {message}", err=True)

    try:
        trainer = FdposePoseTrainer(overrides=overrides)
    except (FileNotFoundError, RuntimeError, SyntaxError) as error:  # ultralytics' dataset/argument checks
        raise FdposeError(f"ultralytics rejected the run ({error})", item="fdpose train") from None
    for event, functions in (callbacks or {}).items():
        for function in functions:
            trainer.add_callback(event, function)
    try:
        trainer.train()
    except Exception as error:
        if not is_write_failure(error):
            raise
        raise _write_failed(error, staging, out) from None

    if not (staging / "metrics.json").is_file():
        raise FdposeError("training ended without final metrics (see the log above)", path=staging)
    _finish_run_dir(staging, out)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    conversion_file = out / "pretrained.json"  # written when the run started from a checkpoint
    conversion = json.loads(conversion_file.read_text(encoding="utf-8")) if conversion_file.exists() else None
    return TrainResult(
        out=out, best=out / "weights" / "best.pt", last=out / "weights" / "last.pt", metrics=metrics,
        device=device_arg, epochs=int(trainer.epochs), resumed=bool(resume),
        pretrained=start if isinstance(start := overrides.get("pretrained"), str) else None,
        conversion=conversion, warnings=warnings,
    )


# --- the command ----------------------------------------------------------------------------------


@click.command("train")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YOLO-pose data.yaml (from fdpose convert or augment).")
@click.option("--model", default=None, help="Model YAML or .pt  [params: train.model]")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: weights/, results.csv, metrics.json, dvclive/, plots.")
@click.option("--epochs", type=int, default=None, help="[params: train.epochs]")
@click.option("--imgsz", type=int, default=None, help="Training image size.  [params: train.imgsz]")
@click.option("--batch", type=int, default=None, help="[params: train.batch]")
@click.option("--device", default=None, help="auto | cpu | 0 | 0,1 (DDP)  [params: train.device]")
@click.option("--seed", type=int, default=None, help="[params: train.seed]")
@click.option("--workers", type=int, default=None,
              help="Dataloader workers (0 on CPU).  [params: train.workers]")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in OUT.partial from its last.pt.")
@click.option("--pretrained", default=None,
              help="Pose checkpoint to start from: stock or FDConv, the model's family and scale, any "
                   "keypoints and classes (head branches that follow them restart). A file, an official "
                   "name (yolov8n-pose.pt) or an http(s) URL (optionally #sha256=<hex>).  "
                   "[params: train.pretrained]")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              default=PARAMS_FILE, show_default=True,
              help="Params file whose train: section sets the defaults.")
def train_command(data: Path, model: str | None, out: Path, epochs: int | None, imgsz: int | None,
                  batch: int | None, device: str | None, seed: int | None, workers: int | None, resume: bool,
                  pretrained: str | None, params_file: Path) -> None:
    """Train the C2f_FDConv YOLOv8-pose model; options default to the params file's train: section."""
    options = {"model": model, "epochs": epochs, "imgsz": imgsz, "batch": batch, "device": device,
               "seed": seed, "workers": workers,
               "pretrained": str(pretrained) if pretrained is not None else None}
    params = overridden(load_section("train", params_file), **options)
    # Resuming keeps the run's own settings, but for what this command line changes (and the params'
    # device and plots).
    given = {name for name, value in options.items() if value is not None} | {"plots"}
    result = train(data, out, params, resume=resume, given=given, params_source=params_file)
    click.echo(result.summary())
