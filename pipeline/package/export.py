"""The model files a package ships in portable form, and their checks against PyTorch.

:func:`export_onnx` writes ``model.onnx`` from the model rebuilt from safetensors: the TorchScript
exporter in eval mode, so FDConv's cached basis kernels and FFT-free FBM projections enter the graph
as constants (the input size is fixed); any batch size (a model with FDConv runs its batch-1 graph
once per sample in an ONNX ``Loop``, :func:`batch_loop`). :func:`export_openvino` converts that file
to an OpenVINO IR (float32). :func:`check_export` runs an exported file and PyTorch on a real image
and its mirror image and refuses a relative difference above the tolerance. Both exports are
deterministic: no doc strings, source locations or process-wide counters reach the files.
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
LOOP_PREFIX = "fdpose_loop_"  # names of the values the per-sample loop adds around the batch-1 graph


def runs_per_sample(model: Any) -> bool:
    """True when ``model`` has a dynamic FDConv: it convolves each sample with its own kernel as one
    grouped convolution whose group count is the batch size, which ONNX fixes in the graph."""
    from pipeline.nn.fdconv import FDConv

    return any(isinstance(module, FDConv) and module.is_dynamic for module in model.modules())


def export_onnx(model: Any, meta: ModelMeta, imgsz: int, path: Path, opset: int = 17) -> Path:
    """Export ``model`` for ``(batch, 3, imgsz, imgsz)`` inputs, any batch, deterministically.

    The TorchScript exporter runs in eval mode: FDConv uses cached basis kernels and FFT-free FBM
    projections, traced as constants, so the spatial size is fixed. A model with FDConv is traced for
    one sample and wrapped in an ONNX ``Loop`` over the batch (:func:`batch_loop`); others are
    exported with a dynamic batch axis. The head's ``export`` flag makes it return the decoded
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
    per_sample = runs_per_sample(export_model)
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python values (FDConv's projection sizes, its kernel-or-activation side
        # choice) are meant to become constants, as the tracer warns.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(export_model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], do_constant_folding=True,
                          dynamic_axes=None if per_sample else BATCH_AXES)
    proto = onnx.load_from_string(buffer.getvalue())
    if per_sample:
        proto = batch_loop(proto)
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


def batch_loop(proto: Any) -> Any:
    """The batch-1 model ``proto`` (input ``images``, output ``output0``) as a model of any batch size:
    an ONNX ``Loop`` runs the graph once per sample and stacks the outputs. The weights live in the
    loop body, where onnxruntime and OpenVINO optimise them as constants of the graph they feed."""
    import onnx
    from onnx import TensorProto, helper

    graph = proto.graph
    (images,), (output,) = graph.input, graph.output
    p = LOOP_PREFIX
    names = {images.name: p + "sample", output.name: p + "sample_raw"}
    nodes = []
    for node in graph.node:
        node = copy_node(node)
        node.doc_string = ""
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
        nodes.append(node)
    sample_dims = [d.dim_value for d in output.type.tensor_type.shape.dim][1:]
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", [p + "iter", p + "axis"], [p + "start"]),
         helper.make_node("Add", [p + "start", p + "one"], [p + "end"]),
         helper.make_node("Slice", [images.name, p + "start", p + "end", p + "axis"], [p + "sample"]),
         *nodes,
         helper.make_node("Squeeze", [p + "sample_raw", p + "axis"], [p + "sample_out"]),
         helper.make_node("Identity", [p + "cond_in"], [p + "cond_out"])],
        "sample",
        [helper.make_tensor_value_info(p + "iter", TensorProto.INT64, []),
         helper.make_tensor_value_info(p + "cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + "sample_out", TensorProto.FLOAT, sample_dims)],
        initializer=[helper.make_tensor(p + "one", TensorProto.INT64, [1], [1]),
                     helper.make_tensor(p + "axis", TensorProto.INT64, [1], [0]), *graph.initializer],
        # The sample's static shape, so that runtimes fold the shape arithmetic inside as they do in the
        # batch-1 graph (without it, onnxruntime runs ~50 more small operations per sample).
        value_info=[helper.make_tensor_value_info(p + "sample", TensorProto.FLOAT,
                                                  [d.dim_value for d in images.type.tensor_type.shape.dim])])
    input_dims = ["batch"] + [d.dim_value for d in images.type.tensor_type.shape.dim][1:]
    outer = helper.make_graph(
        [helper.make_node("Shape", [images.name], [p + "shape"]),
         helper.make_node("Gather", [p + "shape", p + "zero"], [p + "count"], axis=0),
         helper.make_node("Loop", [p + "count", ""], [output.name], body=body)],
        graph.name,
        [helper.make_tensor_value_info(images.name, TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(output.name, TensorProto.FLOAT, ["batch", *sample_dims])],
        initializer=[helper.make_tensor(p + "zero", TensorProto.INT64, [], [0])])
    looped = onnx.ModelProto()
    looped.CopyFrom(proto)
    looped.graph.CopyFrom(outer)
    return looped


def copy_node(node: Any) -> Any:
    """A copy of an ONNX node (protobuf messages are mutable and shared by reference)."""
    import onnx

    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    return copied


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """Convert an ONNX file :func:`export_onnx` wrote to an OpenVINO IR (``xml_path`` + its ``.bin``),
    float32, deterministically: operations named by their position (OpenVINO numbers unnamed ones from
    a process-wide counter), the conversion's own record (the source file name) left out, and the ONNX
    file's metadata stored as the ``fdpose`` runtime info."""
    openvino = import_openvino()
    meta = read_onnx_meta(onnx_path)
    model = openvino.convert_model(str(onnx_path))
    _name_operations(model)
    info = model.get_rt_info()
    if "conversion_parameters" in info:
        del info["conversion_parameters"]
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
