"""The one adapter between fdpose and ultralytics: teaches ultralytics the ``C2f_FDConv`` block.

ultralytics' ``parse_model`` finds a YAML module by name in its own globals and decides channel
scaling (``base_modules``) and repeat insertion (``repeat_modules``) from two frozensets local to
the function, which no outside name can join. So :func:`register` wraps ``parse_model``: a model
YAML's ``C2f_FDConv`` rows are built as stock ``C2f`` (getting exactly C2f's scaling and repeats),
then each is converted in place by :meth:`C2f_FDConv.from_c2f`, which keeps the block's structure
and gives every FDConv the weight of the convolution it replaces. It also hooks ``BaseModel.fuse``
so that ``model.fuse()`` folds the BatchNorm of the FDConv blocks too, teaches ultralytics' FLOPs
counter (thop) FDConv's functional convolution, and reads a YAML name's scale letter from the
file name only (ultralytics reads it from the whole path).

``import pipeline`` calls :func:`register` as soon as ``ultralytics.nn.tasks`` is imported (see
``pipeline/__init__.py``), so after ``import pipeline``, ``ultralytics.YOLO(
"cfg/models/yolov8n-pose-C2f_FDConv.yaml")`` builds the n-scale model and ``YOLO("best.pt")`` loads
our checkpoints (they pickle the model; loading needs only our classes importable).
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from pathlib import Path

from pipeline.errors import FdposeError

SUPPORTED = ((8, 4), (8, 5))  # ultralytics >= 8.4, < 8.5: the versions parse_model was checked against
MODEL_YAML = Path(__file__).resolve().parents[2] / "cfg" / "models" / "yolov8-pose-C2f_FDConv.yaml"
SCALES = ("n", "s", "m", "l", "x")
BLOCK_NAME = "C2f_FDConv"
_SCALE_SLOT = re.compile(r"^(yolov\d+)([-.])")  # where ultralytics reads the scale letter
_SCALE_LETTER = re.compile(r"(\d+)([nslmx])(.+)?$")  # ultralytics' own pattern (tasks.yaml_model_load)


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


def model_cfg(scale: str = "n", yaml_path: str | Path = MODEL_YAML) -> Path:
    """The path that makes ultralytics build ``yaml_path`` at ``scale``: the scale letter after the digits.

    ultralytics maps ``yolov8n-pose-C2f_FDConv.yaml`` to the file ``yolov8-pose-C2f_FDConv.yaml``
    with scale ``n``; this returns that (non-existent, by convention) name as an absolute path.
    """
    if scale not in SCALES:
        raise FdposeError(f"unknown model scale {scale!r}; expected one of {', '.join(SCALES)}", item="scale")
    path = Path(yaml_path).resolve()
    name, count = _SCALE_SLOT.subn(rf"\g<1>{scale}\g<2>", path.name, count=1)
    if not count:
        raise FdposeError("model YAML name has no 'yolov<digits>' to put a scale letter after", path=path)
    return path.with_name(name)



def _parse_model_with_fdconv(parse_model):
    """Wrap ultralytics' ``parse_model`` so that ``C2f_FDConv`` rows build like ``C2f`` rows."""

    @functools.wraps(parse_model)
    def wrapper(d, ch, verbose=True):
        rows = d["backbone"] + d["head"]
        swap = [i for i, row in enumerate(rows) if row[2] == BLOCK_NAME]
        if not swap:
            return parse_model(d, ch, verbose)
        from ultralytics.utils import LOGGER

        from pipeline.nn.blocks import C2f_FDConv

        stock = dict(d)
        stock["backbone"], stock["head"] = (
            [[f, n, "C2f" if m == BLOCK_NAME else m, args] for f, n, m, args in d[part]]
            for part in ("backbone", "head")
        )
        model, save = parse_model(stock, ch, verbose)
        for i in swap:
            block = C2f_FDConv.from_c2f(model[i])
            block.type = f"{C2f_FDConv.__module__}.{C2f_FDConv.__name__}"
            block.np = sum(p.numel() for p in block.parameters())
            model[i] = block
        if verbose:
            LOGGER.info(
                f"{BLOCK_NAME}: layers {', '.join(map(str, swap))} built as C2f above, then converted "
                f"(bottleneck cv2 -> FDConv); parameters now "
                + ", ".join(f"{i}: {model[i].np}" for i in swap)
            )
        return model, save

    wrapper.fdpose_wrapped = parse_model
    return wrapper


def _yaml_model_load_by_name(yaml_model_load):
    """Wrap ultralytics' ``yaml_model_load`` so the scale letter is read from the file name only.

    ultralytics strips the scale letter (``yolov8n-x.yaml`` -> ``yolov8-x.yaml``) with a regex run
    over the whole path string, so a folder like ``/data/run3s/`` anywhere in an absolute path
    gets mangled instead and the YAML is "not found". A missing scaled name whose unscaled sibling
    exists is resolved here by name; every other path goes to ultralytics unchanged.
    """

    @functools.wraps(yaml_model_load)
    def wrapper(path):
        from ultralytics.nn.tasks import guess_model_scale

        path = Path(path)
        sibling = path.with_name(_SCALE_LETTER.sub(r"\1\3", path.name))
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
    """Make ultralytics build, fuse and load C2f_FDConv models. Idempotent.

    Raises :class:`~pipeline.errors.FdposeError` when the installed ultralytics is outside the
    supported range.
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
