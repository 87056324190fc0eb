"""The model files a package ships in portable form, and their checks against PyTorch.

:func:`export_onnx` writes ``model.onnx`` from the model rebuilt from safetensors: the TorchScript
exporter in eval mode, so FDConv's export form enters the graph: FFT-free FBM projections (the
input size is fixed), its basis kernels rebuilt from the Fourier parameter by operations the
runtimes fold at load, and its per-sample kernels applied as batched matrix products, so any batch
size runs as one batch, with no ``Loop``. :func:`export_openvino` converts that file to an
OpenVINO IR (float32) as it is, basis unfolded. :func:`check_export` runs an exported file and
PyTorch on a real image and its mirror image and refuses a relative difference above the tolerance.
Both exports are deterministic: no doc strings, source locations or process-wide counters reach the files.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__
from pipeline.errors import FdposeError
from pipeline.inference import ModelMeta, Runner, TorchRunner, import_openvino, letterbox
from pipeline.model_io import ONNX_META_KEY, read_onnx_meta

BATCH_AXES = {"images": {0: "batch"}, "output0": {0: "batch"}}


def export_onnx(model: Any, meta: ModelMeta, imgsz: int, path: Path, opset: int = 17) -> Path:
    """Export ``model`` for ``(batch, 3, imgsz, imgsz)`` inputs, any batch, deterministically.

    The TorchScript exporter runs in eval mode, which records FDConv's export form (FFT-free FBM
    projections, so the spatial size is fixed; see :mod:`pipeline.nn.fdconv`) with a symbolic batch
    axis like every other layer's. The head's ``export`` flag makes it return the decoded
    tensor alone. Doc strings (which may carry source locations) are cleared; the metadata is JSON.
    """
    import copy

    import onnx
    import torch

    export_model = copy.deepcopy(model).float().eval()
    for module in export_model.modules():
        if hasattr(module, "export") and hasattr(module, "kpt_shape"):
            module.export = True
            module.format = "onnx"
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python values (FDConv's projection sizes, its kernel-or-activation side
        # choice) are meant to become constants, as the tracer warns.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(export_model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], do_constant_folding=True,
                          dynamic_axes=BATCH_AXES)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    proto.producer_name, proto.producer_version = "fdpose", __version__
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps({**meta.to_dict(), "imgsz": imgsz}, sort_keys=True)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString(deterministic=True))
    return path


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """Convert an ONNX file :func:`export_onnx` wrote to an OpenVINO IR (``xml_path`` + its ``.bin``),
    float32, deterministically: operations named by their position (OpenVINO numbers unnamed ones from
    a process-wide counter) and the ONNX file's metadata stored as the ``fdpose`` runtime info.

    The ONNX frontend reads the graph as it is (``Core.read_model``): ``convert_model``'s extra
    transformations would fold FDConv's basis kernels, which the graph rebuilds from the Fourier
    parameter, into ``kernel_num`` constants per layer and double the ``.bin``. The CPU plugin folds
    them when it compiles the IR instead (the same outputs, bit for bit; about a second more to compile).
    """
    openvino = import_openvino()
    meta = read_onnx_meta(onnx_path)
    model = openvino.Core().read_model(str(onnx_path))
    _name_operations(model)
    model.set_rt_info(json.dumps(meta.to_dict(), sort_keys=True), [ONNX_META_KEY])
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def _name_operations(model: Any, prefix: str = "") -> None:
    """Name every operation (loop bodies included) by its type and position in the graph."""
    for index, operation in enumerate(model.get_ordered_ops()):
        name = f"{prefix}{operation.get_type_name()}_{index}"
        operation.set_friendly_name(name)
        if hasattr(operation, "get_function"):
            _name_operations(operation.get_function(), name + "/")


@dataclass
class ExportCheck:
    """An exported format vs PyTorch on one real image and its mirror image (a batch of 2): raw output
    difference, absolute and relative to the output scale."""

    image: str
    max_abs_diff: float
    max_abs_value: float
    relative: float
    tolerance: float
    format: str = "ONNX"

    def line(self) -> str:
        return (f"{self.format} vs PyTorch relative diff {self.relative:.2e} (tolerance "
                f"{self.tolerance:.0e})")


def check_export(model: Any, meta: ModelMeta, runner: Runner, image_path: Path, tolerance: float,
                 path: Path) -> ExportCheck:
    """Compare raw outputs of ``model`` (PyTorch) and ``runner`` (the exported ``path``) on the image
    ``image_path`` and its mirror image; raise :class:`FdposeError` naming ``path`` above ``tolerance``."""
    import cv2

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise FdposeError("cannot read the image for the export check", path=image_path)
    single, _ = letterbox(image, meta.imgsz)
    batch = np.ascontiguousarray(np.concatenate([single, single[..., ::-1]]))
    expected = TorchRunner(model, meta, "safetensors")(batch)
    actual = runner(batch)
    name = FORMAT_NAMES[runner.kind]
    if actual.shape != expected.shape:
        raise FdposeError(f"{name} output shape {actual.shape} differs from PyTorch's {expected.shape}",
                          path=path)
    max_abs_diff = float(np.abs(actual.astype(np.float64) - expected).max())
    max_abs_value = float(np.abs(expected).max())
    relative = max_abs_diff / max(max_abs_value, 1e-12)
    check = ExportCheck(image_path.name, max_abs_diff, max_abs_value, relative, tolerance, name)
    if not check.relative <= tolerance:
        raise FdposeError(f"{name} output differs from PyTorch by {check.relative:.3e} of the output scale "
                          f"(max abs diff {check.max_abs_diff:.3e}) > tolerance {tolerance:.0e}", path=path)
    return check


FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO", "safetensors": "PyTorch"}
