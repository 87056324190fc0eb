"""Every way a model enters fdpose, and the one check that a model fits a dataset.

* an ultralytics checkpoint (``.pt``, a pickle: only load files you trust): :func:`load_checkpoint`
  (the dict, for packaging), :func:`load_model` (the float32 module, as ultralytics loads it) and
  :func:`load_yolo` (ultralytics' ``YOLO`` wrapper, for its predictor and validator);
* an fdpose package: a directory with ``model.yaml`` + ``model.safetensors`` (:func:`load_packaged_model`,
  no unpickling), ``model.onnx`` and, when packaged with ``fdpose[openvino]``, ``model.xml`` +
  ``model.bin``; or its ``.zip`` archive;
* ``model.onnx`` or ``model.xml`` alone, with the :class:`ModelMeta` packaging stored in its metadata
  (:func:`read_onnx_meta`, :func:`read_openvino_meta`).

:func:`load_runner` turns any of them into an inference runner (:mod:`pipeline.inference`). A file that
cannot be used is one :class:`FdposeError` naming it: ``no such ...``, ``not a loadable ultralytics
checkpoint (...)``, ``a '<task>' model, not a pose model``. :func:`check_fits` is the one
"does this model fit this dataset" check of train, eval, package and predict.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError
from pipeline.inference import ModelMeta, OnnxRunner, OpenVinoRunner, Runner, TorchRunner, import_openvino
from pipeline.io import read_yaml_mapping, sha256_file
from pipeline.skeleton import Skeleton

PACKAGE_FORMAT = "fdpose-model/1"  # model.yaml's ``format``
ONNX_META_KEY = "fdpose"  # the ONNX metadata property (and OpenVINO rt_info key) holding ModelMeta as JSON
KINDS = {".pt": "checkpoint file", ".onnx": "ONNX model", ".safetensors": "safetensors file",
         ".zip": "package archive", ".xml": "OpenVINO model"}
BACKENDS = ("auto", "torch", "onnx", "openvino")
FILE_BACKENDS = {".pt": "torch", ".safetensors": "torch", ".onnx": "onnx", ".xml": "openvino"}
PACKAGE_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}  # a package's file per non-torch backend


def _require(path: Path) -> None:
    """A missing model file or package is one line naming it and what was expected there."""
    if not path.exists():
        raise FdposeError(f"no such {KINDS.get(path.suffix, 'model package')}", path=path)


def _unloadable(path: Path, reason: str) -> FdposeError:
    return FdposeError(f"not a loadable ultralytics checkpoint ({reason})", path=path)


def _require_pose(model: Any, path: Path) -> None:
    if getattr(model, "kpt_shape", None) is None:
        from ultralytics.nn.tasks import guess_model_task

        raise FdposeError(f"a '{getattr(model, 'task', None) or guess_model_task(model)}' model, not a pose "
                          "model", path=path)


# --- ultralytics checkpoints ---------------------------------------------------------------------


def checkpoint_model(checkpoint: dict[str, Any]) -> Any:
    """The model a checkpoint carries: the EMA weights while training, else ``model``."""
    return checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint.get("model")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An ultralytics pose checkpoint as the dict ``torch.load`` gives, validated."""
    from ultralytics.utils.torch_utils import torch_load

    path = Path(path)
    _require(path)
    try:
        checkpoint = torch_load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises a zoo of types for a non-checkpoint file
        raise _unloadable(path, f"{type(error).__name__}: {error}") from None
    model = checkpoint_model(checkpoint) if isinstance(checkpoint, dict) else None
    if model is None or not hasattr(model, "yaml"):
        raise _unloadable(path, "no 'model' or 'ema' entry with a YAML")
    _require_pose(model, path)
    return checkpoint


def load_model(path: str | Path) -> Any:
    """The pose model of an ultralytics checkpoint (EMA weights first), float32, prepared the way
    ultralytics' own loader prepares it."""
    from ultralytics.nn.tasks import load_checkpoint as ultralytics_load

    path = Path(path)
    _require(path)
    try:
        model, _ = ultralytics_load(path)
    except Exception as error:  # a corrupt or foreign file: one clear line, not a traceback
        raise _unloadable(path, f"{type(error).__name__}: {error}") from None
    _require_pose(model, path)
    return model


def load_yolo(path: str | Path) -> Any:
    """ultralytics' ``YOLO`` wrapper of a pose checkpoint (ours with ``C2f_FDConv`` or a stock one)."""
    from ultralytics import YOLO

    path = Path(path)
    _require(path)
    try:
        model = YOLO(str(path))
    except Exception as error:  # a corrupt or foreign file: one line, not ultralytics' traceback
        raise _unloadable(path, f"{type(error).__name__}: {error}") from None
    if model.task != "pose":
        raise FdposeError(f"a '{model.task}' model, not a pose model", path=path)
    return model


def meta_from_model(model: Any, imgsz: int) -> ModelMeta:
    """Metadata from the attributes ultralytics' pose trainer sets on the model."""
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    class_names = [str(names[i]) for i in sorted(names)]
    kpt_shape = [int(v) for v in model.kpt_shape]
    kpt_names = getattr(model, "kpt_names", None) or {}
    keypoint_names = (list(kpt_names[sorted(kpt_names)[0]]) if kpt_names
                      else [f"kp{i}" for i in range(kpt_shape[0])])
    skeleton = Skeleton(keypoint_names=keypoint_names, class_names=class_names, kpt_dims=kpt_shape[1],
                        sigmas=getattr(model, "kpt_oks_sigmas", None))
    return ModelMeta(skeleton, imgsz=imgsz, stride=int(max(model.stride)))


# --- fdpose packages -----------------------------------------------------------------------------


def read_package_yaml(directory: str | Path) -> dict[str, Any]:
    """A package's ``model.yaml`` (architecture and metadata), read with ``yaml.safe_load``."""
    directory = Path(directory)
    path = directory / "model.yaml"
    if not path.is_file():
        raise FdposeError("model.yaml not found (not an fdpose package?)", path=directory)
    data = read_yaml_mapping(path, "model.yaml", expected=f"an {PACKAGE_FORMAT} file")
    if data.get("format") != PACKAGE_FORMAT:
        raise FdposeError(f"not an {PACKAGE_FORMAT} file", path=path)
    return data


def read_model_yaml(directory: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` of a package directory."""
    return ModelMeta.from_dict(read_package_yaml(directory)["meta"], Path(directory) / "model.yaml")


def load_packaged_model(directory: str | Path) -> Any:
    """Rebuild the pose model from ``model.yaml`` + ``model.safetensors``: no pickle is involved.

    The architecture dict goes to ultralytics' ``PoseModel`` (C2f_FDConv registered first), the
    weights are loaded strictly (every tensor present, no extras) in float32, and the model comes
    back in eval mode with ultralytics' ``names``, ``kpt_shape``, ``kpt_names`` attributes set.
    """
    import torch
    from safetensors.torch import load_file
    from ultralytics.nn.tasks import PoseModel

    directory = Path(directory)
    data = read_package_yaml(directory)
    meta = ModelMeta.from_dict(data["meta"], directory / "model.yaml")
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FdposeError("model.safetensors not found", path=directory)
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises SafetensorError / OSError for a damaged file
        raise FdposeError(f"unreadable safetensors file ({error})", path=weights) from None
    torch.manual_seed(0)  # the weights are overwritten below; a fixed seed keeps construction repeatable
    skeleton = meta.skeleton
    model = PoseModel(data["architecture"], ch=3, nc=meta.num_classes,
                      data_kpt_shape=tuple(skeleton.kpt_shape), verbose=False)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                              strict=True)
    except RuntimeError as error:
        raise FdposeError(f"weights do not fit the architecture in model.yaml ({error})",
                          path=weights) from None
    model.names = dict(enumerate(skeleton.class_names))
    model.kpt_names = {i: list(skeleton.keypoint_names) for i in range(meta.num_classes)}
    model.kpt_oks_sigmas = list(skeleton.sigmas)
    return model.float().eval()


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` that packaging stores in the ONNX file's ``fdpose`` metadata property."""
    import onnx

    path = Path(path)
    _require(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends for a corrupt file
        raise FdposeError(f"not a readable ONNX model ({error})", path=path) from None
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise FdposeError(f"no '{ONNX_META_KEY}' metadata (not exported by fdpose package)", path=path)
    return ModelMeta.from_dict(json.loads(props[ONNX_META_KEY]), path)


def read_openvino_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` that packaging stores in the OpenVINO IR's ``fdpose`` runtime info."""
    path = Path(path)
    _require(path)
    openvino = import_openvino()
    try:
        model = openvino.Core().read_model(str(path))
    except Exception as error:  # OpenVINO raises RuntimeError for a malformed or partial IR
        raise FdposeError(f"not a readable OpenVINO model ({error})", path=path) from None
    if not model.has_rt_info([ONNX_META_KEY]):
        raise FdposeError(f"no '{ONNX_META_KEY}' runtime info (not exported by fdpose package)", path=path)
    return ModelMeta.from_dict(json.loads(model.get_rt_info([ONNX_META_KEY]).astype(str)), path)


# --- runners -------------------------------------------------------------------------------------


def load_runner(path: str | Path, backend: str = "auto", threads: int | None = None,
                device: str = "cpu") -> Runner:
    """A runner for a package directory or ``.zip``, ``model.safetensors``, ``model.onnx``, ``model.xml``
    (OpenVINO) or a ``.pt``.

    For a package, ``backend`` ``auto`` and ``torch`` run ``model.safetensors`` in PyTorch (no unpickling),
    ``onnx`` its ``model.onnx`` under onnxruntime, ``openvino`` its ``model.xml`` under OpenVINO. A single
    file runs in its own format (``auto`` or that format's backend). A ``.pt`` checkpoint is a pickle:
    only load checkpoints you trust. ``threads`` sets onnxruntime's / OpenVINO's intra-op threads;
    ``device`` (a torch device) is where a PyTorch model runs (ONNX and OpenVINO run on the CPU).
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise FdposeError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})",
                          item="backend")
    _require(path)
    if path.is_file() and path.suffix == ".zip":
        return _archive_runner(path, backend, threads, device)
    if path.is_dir() or path.suffix == ".safetensors":
        directory = path if path.is_dir() else path.parent
        if backend in PACKAGE_FILES:
            model_file = directory / PACKAGE_FILES[backend]
            if not model_file.is_file():
                raise FdposeError(f"no {model_file.name} in the package"
                                  + (" (packaged without fdpose[openvino])" if backend == "openvino" else ""),
                                  path=directory)
            return load_runner(model_file, backend, threads)
        return TorchRunner(load_packaged_model(directory), read_model_yaml(directory), "safetensors", device)
    own = FILE_BACKENDS.get(path.suffix)
    if own is None:
        raise FdposeError("expected a package directory or .zip, model.safetensors, model.onnx, model.xml "
                          "or a .pt checkpoint", path=path)
    if backend not in ("auto", own):
        raise FdposeError(f"a {path.suffix} file runs with backend {own}, not {backend}", path=path)
    if own == "onnx":
        return OnnxRunner(path, read_onnx_meta(path), threads)
    if own == "openvino":
        return OpenVinoRunner(path, read_openvino_meta(path), threads)
    checkpoint = load_checkpoint(path)
    model = checkpoint_model(checkpoint)
    imgsz = int((checkpoint.get("train_args") or {}).get("imgsz") or 640)
    return TorchRunner(model, meta_from_model(model, imgsz), "pt", device)


def _archive_runner(path: Path, backend: str, threads: int | None, device: str) -> Runner:
    """A package ``.zip`` (one top folder, as ``fdpose package`` writes it) loaded from a temporary copy:
    every runner holds its weights in memory once built."""
    try:
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory(prefix="fdpose-model-") as tmp:
            roots = {name.split("/", 1)[0] for name in archive.namelist()}
            if len(roots) != 1:
                raise FdposeError("not an fdpose package archive (expected one top folder)", path=path)
            archive.extractall(tmp)  # extractall drops absolute and '..' parts of member names
            return load_runner(Path(tmp) / roots.pop(), backend, threads, device)
    except zipfile.BadZipFile as error:
        raise FdposeError(f"not a readable zip archive ({error})", path=path) from None


# --- does this model fit this dataset? -----------------------------------------------------------


@dataclass
class Layout:
    """What a model and a dataset must agree on: keypoint shape and classes."""

    kpt_shape: list[int]
    names: list[str]

    @classmethod
    def of_skeleton(cls, skeleton: Skeleton) -> Layout:
        return cls(list(skeleton.kpt_shape), list(skeleton.class_names))

    @classmethod
    def of_model(cls, model: Any) -> Layout:
        """The layout of an ultralytics pose model (its head's ``kpt_shape``, its ``names``)."""
        names = model.names
        names = ([str(names[key]) for key in sorted(names)] if isinstance(names, dict)
                 else [str(n) for n in names])
        return cls([int(v) for v in model.model[-1].kpt_shape], names)

    def mismatch(self, other: Layout, requires: frozenset[str] = frozenset({"kpt_shape", "classes"})
                 ) -> str | None:
        """Why ``other`` (a dataset) does not fit this layout (a model) in what ``requires`` names; None
        when it fits."""
        if "kpt_shape" in requires and list(self.kpt_shape) != list(other.kpt_shape):
            return f"kpt_shape {list(self.kpt_shape)} vs the dataset's {list(other.kpt_shape)}"
        if "classes" in requires and len(self.names) != len(other.names):
            return f"{len(self.names)} classes {self.names} vs the dataset's {len(other.names)} {other.names}"
        return None


SAME_LAYOUT = frozenset({"kpt_shape", "classes"})
# What a model in each role must share with the dataset it meets. A pretrained start shares nothing
# with it: the head branches that follow kpt_shape and nc are re-initialised for the dataset; its family
# and scale must be the model's (pipeline.pretrained.check_start).
FIT_REQUIRES = {"model": SAME_LAYOUT, "baseline": SAME_LAYOUT, "resumed": SAME_LAYOUT,
                "pretrained": frozenset(), "packaged": SAME_LAYOUT}


def check_fits(model: Layout, data: Layout, *, role: str, model_path: object, data_path: object) -> list[str]:
    """Raise one :class:`FdposeError` naming ``model_path`` when the model, in ``role``
    (:data:`FIT_REQUIRES`), does not fit the dataset; returns warnings (class names that differ while
    their count matches)."""
    reason = model.mismatch(data, FIT_REQUIRES[role])
    if reason:
        raise FdposeError(f"{role} checkpoint does not fit the dataset {data_path}: {reason}",
                          path=model_path)
    if model.names != data.names and len(model.names) == len(data.names):
        return [f"{role} checkpoint {model_path} names its classes {model.names}, the dataset {data.names}; "
                "training uses the dataset's names"]
    return []


WEIGHTS_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "openvino": "model.bin"}


def model_version(model: str | Path, kind: str = "auto") -> str:
    """``fdpose-<kind>-<sha256 prefix of the weights file>``: names exactly the weights that predict (in
    a package folder: ``model.safetensors`` for the PyTorch backends, else that backend's file). Label
    Studio shows it beside every prediction; ``fdpose predict`` and ``fdpose serve`` write the same."""
    model = Path(model)
    if model.is_dir():
        kind = kind if kind in WEIGHTS_FILES else "safetensors"
        model = model / WEIGHTS_FILES[kind]
    return f"fdpose-{kind}-{sha256_file(model)[:12]}"


def weights_sha256(model: str | Path, kind: str = "auto") -> str:
    """sha256 of the weights file that runs for ``model`` with a runner of ``kind``: in a package folder
    that backend's file (``model.safetensors`` for the PyTorch ones), for ``model.xml`` its ``model.bin``,
    otherwise the file itself (a checkpoint, an ONNX file, a package archive)."""
    model = Path(model)
    if model.is_dir():
        model = model / WEIGHTS_FILES.get(kind, WEIGHTS_FILES["safetensors"])
    elif model.suffix == ".xml":
        model = model.with_suffix(".bin")
    return sha256_file(model)

