"""fdpose: keypoint labels in, a trained, evaluated and packaged YOLOv8-pose model with FDConv out.

Importing :mod:`pipeline` is cheap. The ultralytics integration (the ``C2f_FDConv`` block and the
model YAML resolution) is registered lazily by :func:`pipeline.nn.ultralytics.register`, which every
command that builds or loads a model calls; ``import pipeline`` triggers it only when ultralytics
is already imported or importable cheaply via :func:`register`.
"""

__version__ = "0.1.0"
