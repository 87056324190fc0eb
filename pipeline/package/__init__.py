"""``fdpose package``: ship trained weights in forms someone else can load safely and run anywhere.

``fdpose package --weights W --eval DIR --out OUT`` writes ``OUT/`` and ``OUT.zip``:

* ``model.pt`` — the ultralytics checkpoint with the optimizer stripped (``strip_optimizer``), the
  checkpoint's own training date kept so a rebuild is byte-identical;
* ``model.safetensors`` + ``model.yaml`` — the weights without pickle, and everything needed to
  rebuild the model: the architecture dict (with its scale), ``kpt_shape``, keypoint and class names,
  flip permutation, OKS sigmas, skeleton edges, input size and stride.
  :func:`pipeline.model_io.load_packaged_model` reads them with ``yaml.safe_load`` and
  ``safetensors``: no pickled code runs;
* ``model.onnx`` — exported from the safetensors model by the TorchScript exporter in eval mode, so
  FDConv's export form enters the graph (FFT-free FBM projections, so the input size is fixed,
  ``meta.imgsz`` in ``model.yaml``; its basis rebuilt from the Fourier parameter at load; per-sample
  kernels as batched matrix products); any batch size, run as one batch (no ONNX ``Loop``).
  Checked with onnxruntime against PyTorch on a real image and its mirror image; packaging fails
  when the max abs difference of the raw outputs over their max abs value exceeds the tolerance
  (``package.onnx_tolerance``, 1e-4);
* ``model.xml`` + ``model.bin`` — with the ``fdpose[openvino]`` extra installed, the ONNX model as an
  OpenVINO IR (float32), checked against PyTorch the same way; without it, packaging says so in one
  line and leaves it out;
* ``MODEL_CARD.md`` — the model, its formats, its data, training parameters, eval numbers
  (``eval/metrics.json`` and ``eval/report.html`` copied from ``--eval DIR``), versions, intended use
  and limits; with ``--latency``, each format's batch-1 latency measured on the packaging machine;
* ``SHA256SUMS`` — every other file, in ``sha256sum -c`` format; ``fdpose package verify OUT``
  (or ``OUT.zip``) checks them and names every mismatched, missing or unlisted file.

The eval numbers must belong to the packaged weights: a ``metrics.json`` whose ``model_sha256``
names other weights is refused. ``fdpose bench package OUT`` times the package at batch 1 on the
CPU: PyTorch as packaged, PyTorch with Conv+BN fused, and onnxruntime (:mod:`pipeline.bench.package`).

The archive is reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions 0644, and
nothing time- or location-dependent in any file (ONNX doc strings cleared, OpenVINO operations named
by position, no absolute paths in the card), so packaging the same weights again gives a
byte-identical ``OUT.zip`` (not with ``--latency``: measured times differ from run to run).

The modules: :mod:`~pipeline.package.export` (ONNX and OpenVINO export, their checks),
:mod:`~pipeline.package.card` (``MODEL_CARD.md``), :mod:`~pipeline.package.archive` (checksums, the
zip, verification), :mod:`~pipeline.package.stage` (the stage function) and
:mod:`~pipeline.package.command` (the ``fdpose package`` command and its ``verify`` subcommand).
"""
