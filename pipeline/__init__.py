"""fdpose: keypoint labels in, a trained, evaluated and packaged YOLO-pose model with FDConv out.

Importing :mod:`pipeline` is cheap: it imports neither torch nor ultralytics. It installs a tiny
import hook that calls :func:`pipeline.nn.ultralytics.register` right after ultralytics imports
``ultralytics.nn.tasks`` (or at once, when that is already imported): the one way fdpose registers
with ultralytics, so that after ``import pipeline`` ultralytics builds (by bare name too:
``YOLO("yolov8n-pose-C2f_FDConv.yaml")``), fuses and loads our models. The model and skeleton
files ship inside the package, in ``pipeline/cfg/``.
"""

import sys

__version__ = "0.1.0"

_TRIGGER = "ultralytics.nn.tasks"


class _RegisterAfterLoad:
    """Loader wrapper: runs the real loader, then registers the C2f_FDConv integration."""

    def __init__(self, loader, hook):
        self.loader = loader
        self.hook = hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from pipeline.nn.ultralytics import register

        register()
        # only once registered: an import that failed here and is retried registers (or fails) again
        if self.hook in sys.meta_path:
            sys.meta_path.remove(self.hook)

    def __getattr__(self, name):  # get_source, is_package, ...: whatever else asks the loader
        return getattr(self.loader, name)


class _UltralyticsHook:
    """A ``sys.meta_path`` finder that acts on one module name only."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TRIGGER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _RegisterAfterLoad(spec.loader, self)
                return spec
        return None


if _TRIGGER in sys.modules:
    from pipeline.nn.ultralytics import register

    register()
elif not any(isinstance(finder, _UltralyticsHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _UltralyticsHook())
