"""The one adapter between fdpose and ultralytics (>= 8.4, < 8.5): every patch fdpose applies to it.

**How it is installed.** ``import pipeline`` installs an import hook (``pipeline/__init__.py``) that
calls :func:`register` right after ultralytics imports ``ultralytics.nn.tasks`` (or at once, when
that is already imported). That is the only registration: nothing else needs to call it, so after
``import pipeline`` plain ultralytics builds our model files by bare name
(``YOLO("yolov8n-pose-C2f_FDConv.yaml")``), fuses them, counts their FLOPs and loads our
checkpoints (they pickle the model; loading needs only our classes importable). fdpose's trainer
adds the run guards of :func:`install_guards` when it starts a run.

**What** :func:`register` **patches** (model level, any ultralytics user after ``import pipeline``):

1. ``tasks.parse_model``: it looks modules up in its own globals and takes channel scaling and
   repeat insertion from two frozensets local to the function, which no outside name can join. So
   rows naming one of our blocks (:data:`pipeline.nn.blocks.FDCONV_BLOCKS`: ``C2f_FDConv``,
   ``C3k2_FDConv``) are built as their stock block (getting exactly its scaling, repeats and
   per-scale switches), then converted in place by the block's ``from_stock``, which gives every
   FDConv the weight of the convolution it replaces. A row may end with a mapping of FDConv options
   (``{convs: [cv1, cv2], kernel_num: 8}``), taken off before the stock block is built.
2. ``tasks.yaml_model_load`` (and ``engine.model``'s binding of it): the scale letter is read from
   the file name only (ultralytics runs its regex over the whole path, so ``/data/run3s/`` breaks
   a scaled name), and the model files shipped in ``pipeline/cfg/models`` resolve by bare name.
3. ``tasks.BaseModel.fuse``: also folds the BatchNorm of every :class:`~pipeline.nn.blocks.FDConvBN`
   (ultralytics' fuse reads ``conv.weight``, which FDConv does not have).
4. thop's functional rules (ultralytics' GFLOPs): FDConv convolves through a functional ``conv2d``.

**What** :func:`install_guards` **patches** (training runs; fdpose's trainer installs them):

5. ``engine.trainer.check_amp`` -> :func:`offline_check_amp` (ultralytics downloads ``yolo26n.pt``).
6. ``check_font`` in ``utils.checks``, ``data.utils`` and ``utils.plotting`` -> :func:`local_font`
   (ultralytics downloads ``Arial.ttf``).
7. ``data.dataset.save_dataset_cache_file`` -> :func:`keep_dataset_unchanged` (ultralytics writes
   ``labels/<split>.cache`` into the dataset, another DVC stage's output).
8. ``utils.callbacks.add_integration_callbacks``: trainers marked ``fdpose_trainer = True`` skip
   ultralytics' DVC callback (it writes ``dvclive/`` and ``dvc.yaml`` into the working directory and
   commits a DVC experiment); fdpose logs to DVCLive itself.

Every patch is idempotent and applied once; :func:`check_version` refuses other ultralytics versions
(the internals above were checked against 8.4).
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError

SUPPORTED = ((8, 4), (8, 5))  # ultralytics >= 8.4, < 8.5: the versions parse_model was checked against
MODELS_DIR = Path(str(resources.files("pipeline") / "cfg" / "models"))  # shipped model YAMLs
MODEL_YAML = MODELS_DIR / "yolov8-pose-C2f_FDConv.yaml"  # the default model (any scale by name)
SCALES = ("n", "s", "m", "l", "x")
_SCALE_SLOT = re.compile(r"^(yolo(?:v)?\d+)([-.])")  # where ultralytics reads the scale letter
_SCALE_LETTER = re.compile(r"(\d+)([nslmx])(.+)?$")  # ultralytics' own pattern (tasks.yaml_model_load)
_ULTRALYTICS_DVC = "ultralytics.utils.callbacks.dvc"  # the module of the DVC callback we replace
# ultralytics' list of GPUs whose AMP is known to give NaN losses or zero mAP (from its check_amp).
_AMP_BAD_GPUS = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE)


def check_version(version: str) -> None:
    """Raise one clear error when ``version`` (ultralytics') is outside the supported range."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = None
    if major_minor is None or not SUPPORTED[0] <= major_minor < SUPPORTED[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED)
        raise FdposeError(
            f"fdpose supports ultralytics >={low},<{high}, but {version} is installed "
            f"(its parse_model internals differ); install 'ultralytics-opencv-headless>={low},<{high}'",
            item="ultralytics",
        )


# --- model files ------------------------------------------------------------------------------------


def unscaled(name: str) -> str:
    """The file ultralytics reads for a scaled name: ``yolo11s-pose-X.yaml`` -> ``yolo11-pose-X.yaml``."""
    return _SCALE_LETTER.sub(r"\1\3", name)


def model_cfg(scale: str = "n", yaml_path: str | Path = MODEL_YAML) -> Path:
    """The path that makes ultralytics build ``yaml_path`` at ``scale``: the scale letter after the digits.

    ultralytics maps ``yolov8n-pose-C2f_FDConv.yaml`` to the file ``yolov8-pose-C2f_FDConv.yaml``
    with scale ``n``; this returns that (non-existent, by convention) name as an absolute path.
    """
    if scale not in SCALES:
        raise FdposeError(f"unknown model scale {scale!r}; expected one of {', '.join(SCALES)}", item="scale")
    path = Path(os.path.abspath(yaml_path))
    name, count = _SCALE_SLOT.subn(rf"\g<1>{scale}\g<2>", path.name, count=1)
    if not count:
        raise FdposeError("model YAML name has no 'yolo<digits>' to put a scale letter after", path=path)
    return path.with_name(name)


def packaged_model(model: str | Path) -> Path | None:
    """The shipped model file a name stands for, or None.

    A bare name (``yolo26s-pose-C3k2_FDConv.yaml``) or ``cfg/models/NAME`` that is not a file in
    the working directory stands for ``NAME`` in :data:`MODELS_DIR` when that file, or its unscaled
    sibling, is shipped there. The returned path keeps the scale letter of ``NAME``.
    """
    path = Path(model)
    local = path.is_file() or path.with_name(unscaled(path.name)).is_file()
    if local or path.parent not in (Path("."), Path("cfg/models")):
        return None
    candidate = MODELS_DIR / path.name
    return candidate if candidate.is_file() or (MODELS_DIR / unscaled(path.name)).is_file() else None


def model_argument(model: str | Path) -> str:
    """The model as ultralytics takes it: an absolute path for a model file, a bare name for its built-ins.

    A relative YAML path is looked up in the working directory, then among the shipped model files
    (:func:`packaged_model`), so the default model works from any directory and from an installed
    wheel. A scaled name such as ``yolov8n-pose-C2f_FDConv.yaml`` need not exist itself: ultralytics
    reads the scale letter and loads ``yolov8-pose-C2f_FDConv.yaml`` beside it.
    """
    path = Path(model)
    if path.suffix == ".pt":
        if not path.is_file():
            raise FdposeError("model checkpoint not found", path=path)
        return os.path.abspath(path)
    if path.suffix not in (".yaml", ".yml"):
        raise FdposeError("expected a model YAML or a .pt checkpoint", path=path)
    if path.is_file() or path.with_name(unscaled(path.name)).is_file():
        return os.path.abspath(path)
    shipped = packaged_model(path)
    if shipped is not None:
        return str(shipped)
    if path.parent == Path("."):
        return str(path)  # ultralytics' own YAMLs (yolov8n-pose.yaml) by name
    raise FdposeError("model YAML not found", path=path)


# --- register(): model-level patches ----------------------------------------------------------------


def split_fdconv_rows(d: dict, blocks: dict) -> tuple[dict, dict[int, tuple[type, dict]]]:
    """``d`` with our block rows renamed to their stock blocks, and per layer index (block class, options)."""
    stock, swap, index = dict(d), {}, 0
    for part in ("backbone", "head"):
        rows = []
        for f, n, m, args in d[part]:
            args = copy.deepcopy(list(args))
            if m in blocks:
                options = args.pop() if args and isinstance(args[-1], dict) else {}
                swap[index] = (blocks[m], options)
                m = blocks[m].STOCK
            rows.append([f, n, m, args])
            index += 1
        stock[part] = rows
    return stock, swap


def _parse_model_with_fdconv(parse_model):
    """Wrap ultralytics' ``parse_model`` so that our block rows build like their stock blocks' rows."""

    @functools.wraps(parse_model)
    def wrapper(d, ch, verbose=True):
        from pipeline.nn.blocks import FDCONV_BLOCKS

        if not any(row[2] in FDCONV_BLOCKS for row in d["backbone"] + d["head"]):
            return parse_model(d, ch, verbose)
        from ultralytics.utils import LOGGER

        stock, swap = split_fdconv_rows(d, FDCONV_BLOCKS)
        model, save = parse_model(stock, ch, verbose)
        for i, (cls, options) in swap.items():
            block = cls.from_stock(model[i], **options)
            block.type = f"{cls.__module__}.{cls.__name__}"
            block.np = sum(p.numel() for p in block.parameters())
            model[i] = block
        if verbose:
            LOGGER.info(
                f"FDConv blocks: layers {', '.join(map(str, swap))} built as their stock blocks above, then "
                "converted (bottleneck convs -> FDConv); parameters now "
                + ", ".join(f"{i}: {model[i].np}" for i in swap)
            )
        return model, save

    wrapper.fdpose_wrapped = parse_model
    return wrapper


def _yaml_model_load_by_name(yaml_model_load):
    """Wrap ultralytics' ``yaml_model_load``: scale letter from the file name only; shipped files by name.

    ultralytics strips the scale letter (``yolov8n-x.yaml`` -> ``yolov8-x.yaml``) with a regex run
    over the whole path string, so a folder like ``/data/run3s/`` anywhere in an absolute path
    gets mangled instead and the YAML is "not found". A missing scaled name whose unscaled sibling
    exists is resolved here by name, and so is a shipped model file (:func:`packaged_model`); every
    other path goes to ultralytics unchanged.
    """

    @functools.wraps(yaml_model_load)
    def wrapper(path):
        from ultralytics.nn.tasks import guess_model_scale

        given = Path(path)
        path = packaged_model(given) or given
        sibling = path.with_name(unscaled(path.name))
        if not path.exists() and sibling != path and sibling.is_file():
            d = yaml_model_load(sibling)
            d["scale"], d["yaml_file"] = guess_model_scale(path), str(path)
            return d
        return yaml_model_load(path)

    wrapper.fdpose_wrapped = yaml_model_load
    return wrapper


def _fuse_with_fdconv(fuse):
    """Wrap ``BaseModel.fuse`` so that it also folds the BatchNorm of every FDConv block."""

    @functools.wraps(fuse)
    def wrapper(self, *args, **kwargs):
        from pipeline.nn.blocks import FDConvBN

        for module in self.modules():
            if isinstance(module, FDConvBN):
                module.fuse()
        return fuse(self, *args, **kwargs)

    wrapper.fdpose_wrapped = fuse
    return wrapper


def _count_functional_conv2d(args, kwargs, y) -> int:
    """Multiply-adds of a functional ``conv2d``, by thop's ConvNd rule: outputs x (Cin/groups) x k x k."""
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return y.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]


def _count_fdconv_flops() -> None:
    """Let ultralytics' FLOPs counter (thop) see FDConv's convolution.

    thop counts modules with a rule (``nn.Conv2d`` ...) and a few functional products (matmul,
    einsum) run outside them. FDConv convolves with its per-sample kernels through a functional
    ``conv2d``, which thop would miss; this adds that function to thop's functional rules. Convs
    inside ruled modules are not counted twice (thop suspends functional counting there).
    """
    try:  # the submodule: the package's `profile` attribute is the function of that name
        thop_profile = importlib.import_module("thop.profile")
    except ImportError:  # ultralytics reports 0 GFLOPs without thop, for every model alike
        return
    import torch.nn.functional as F  # noqa: N812

    thop_profile.functional_hooks.setdefault(F.conv2d, _count_functional_conv2d)


def register() -> None:
    """Make ultralytics build, fuse, count and load our models (patches 1-4 above). Idempotent.

    Called by the import hook of ``pipeline/__init__.py``. Raises
    :class:`~pipeline.errors.FdposeError` when the installed ultralytics is outside the supported range.
    """
    import ultralytics
    from ultralytics.nn import tasks

    check_version(ultralytics.__version__)
    if not hasattr(tasks.parse_model, "fdpose_wrapped"):
        tasks.parse_model = _parse_model_with_fdconv(tasks.parse_model)
    if not hasattr(tasks.yaml_model_load, "fdpose_wrapped"):
        tasks.yaml_model_load = _yaml_model_load_by_name(tasks.yaml_model_load)
    # ultralytics.engine.model binds the name at import: rebind it if it got there before us (while it
    # is still importing tasks, it has no binding yet and will take the wrapped one)
    engine = sys.modules.get("ultralytics.engine.model")
    if hasattr(engine, "yaml_model_load") and not hasattr(engine.yaml_model_load, "fdpose_wrapped"):
        engine.yaml_model_load = tasks.yaml_model_load
    if not hasattr(tasks.BaseModel.fuse, "fdpose_wrapped"):
        tasks.BaseModel.fuse = _fuse_with_fdconv(tasks.BaseModel.fuse)
    _count_fdconv_flops()


# --- install_guards(): training-run patches ---------------------------------------------------------


def local_font(font: str | Path = "Arial.ttf") -> Path:
    """A font file on this machine for ultralytics' plot labels: matplotlib's bundled DejaVu Sans.

    Replaces ultralytics' ``check_font``, which downloads ``Arial.ttf`` (or ``Arial.Unicode.ttf``)
    when it is not installed. ``font`` is accepted for the same call signature; an existing file is
    used as it is.
    """
    if Path(font).is_file():
        return Path(font)
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def amp_outputs_agree(model: Any, device: Any, dtype: Any = None, imgsz: int = 256) -> bool:
    """Whether the model's outputs under autocast (``dtype``, default float16) match its float32 outputs.

    The input is a fixed ramp (no random numbers, so the training RNG is untouched). An error under
    autocast (e.g. an FFT size half precision does not support) or a non-finite output counts as
    disagreement.
    """
    import torch
    from ultralytics.utils import LOGGER

    dtype = torch.float16 if dtype is None else dtype
    probe = copy.deepcopy(model).to(device).float().eval()
    stride = int(probe.stride.max()) if hasattr(probe, "stride") else 32
    imgsz = max(imgsz, stride * 4)
    image = torch.linspace(0, 1, 3 * imgsz * imgsz, device=device).reshape(1, 3, imgsz, imgsz)
    try:
        with torch.no_grad():
            reference = probe(image)
            with torch.autocast(device.type, dtype=dtype):
                mixed = probe(image)
    except RuntimeError as error:
        LOGGER.warning(f"AMP: forward pass under {dtype} autocast failed ({error})")
        return False
    reference = reference[0] if isinstance(reference, (tuple, list)) else reference
    mixed = mixed[0] if isinstance(mixed, (tuple, list)) else mixed
    mixed = mixed.float()
    if not torch.isfinite(mixed).all():
        return False
    return reference.shape == mixed.shape and torch.allclose(reference, mixed, rtol=2e-2, atol=0.5)


def offline_check_amp(model: Any) -> bool:
    """ultralytics' ``check_amp`` without its download: whether to train ``model`` with AMP.

    ultralytics compares a downloaded ``yolo26n.pt`` in float32 and under AMP. This compares the model
    about to be trained instead (which also catches layers that fail in half precision, such as an
    FFT of an unsupported size), keeps ultralytics' list of GPUs with broken AMP, and falls back to
    float32 training whenever the check fails. CPU training never uses AMP.
    """
    import torch
    from ultralytics.utils import LOGGER

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    gpu = torch.cuda.get_device_name(device)
    if _AMP_BAD_GPUS.search(gpu):
        LOGGER.warning(f"AMP: disabled on {gpu}, whose AMP gives NaN losses or zero mAP")
        return False
    if amp_outputs_agree(model, device):
        LOGGER.info("AMP: checks passed (float32 and float16 outputs of the model agree)")
        return True
    LOGGER.warning("AMP: float16 outputs differ from float32; training in float32")
    return False


def without_ultralytics_dvc(add_integration_callbacks):
    """Wrap ultralytics' ``add_integration_callbacks`` so that fdpose's trainers skip its DVC callback.

    A trainer is fdpose's when its class sets ``fdpose_trainer = True``. That callback writes
    ``dvclive/`` and ``dvc.yaml`` into the current directory and saves a DVC experiment (git commits
    and checkouts) at the end of a run; fdpose's trainer logs to DVCLive itself.
    """

    @functools.wraps(add_integration_callbacks)
    def wrapper(instance: Any) -> None:
        add_integration_callbacks(instance)
        if getattr(instance, "fdpose_trainer", False):
            for event, callbacks in instance.callbacks.items():
                instance.callbacks[event] = [callback for callback in callbacks
                                             if getattr(callback, "__module__", "") != _ULTRALYTICS_DVC]

    wrapper.fdpose_wrapped = add_integration_callbacks
    return wrapper


def keep_dataset_unchanged(prefix: str, path: Path, x: dict, version: str) -> None:
    """Replaces ultralytics' ``save_dataset_cache_file``, which writes ``labels/<split>.cache`` into the
    dataset: the dataset is the input of the run (in a DVC pipeline, another stage's output) and stays
    as it is. The labels are scanned again on every run instead."""
    from ultralytics.utils import LOGGER

    x["version"] = version  # the caller reads the cache dict back as if it had been saved
    LOGGER.info(f"{prefix}label cache not written into the dataset folder {Path(path).parent}")


def install_guards() -> None:
    """Point ultralytics' AMP check, font lookup, DVC callback and label cache at the versions above
    (patches 5-8). Idempotent."""
    import ultralytics.data.dataset
    import ultralytics.data.utils
    import ultralytics.engine.trainer
    import ultralytics.utils.callbacks
    import ultralytics.utils.checks
    import ultralytics.utils.plotting

    ultralytics.engine.trainer.check_amp = offline_check_amp
    ultralytics.data.dataset.save_dataset_cache_file = keep_dataset_unchanged
    for module in (ultralytics.utils.checks, ultralytics.data.utils, ultralytics.utils.plotting):
        module.check_font = local_font
    callbacks = ultralytics.utils.callbacks
    if not hasattr(callbacks.add_integration_callbacks, "fdpose_wrapped"):
        callbacks.add_integration_callbacks = without_ultralytics_dvc(callbacks.add_integration_callbacks)
