"""The ``fdpose`` command line.

Commands are registered by import path and loaded only when invoked, so ``fdpose --help`` answers
without importing torch or ultralytics. Each command is a thin click wrapper over a stage function
of the same name; errors of type :class:`pipeline.errors.FdposeError` become one ``Error:`` line
and exit code 1 (click's own usage errors keep exit code 2).
"""

from __future__ import annotations

import importlib

import click

from pipeline import __version__
from pipeline.errors import FdposeError
from pipeline.io import is_write_failure, write_failure


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules, imported on first use.

    ``lazy`` maps a command name to ``("package.module:attribute", "short help")``; the short help is
    what ``--help`` lists, so listing never imports the command modules.
    """

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            target, _ = self.lazy[name]
            module_name, attribute = target.split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{target} is not a click command")
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                command = super().get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FdposeError as error:
            raise click.ClickException(str(error)) from None
        except Exception as error:  # a write that failed outside the atomic helpers (they name the output)
            if not is_write_failure(error):
                raise
            target = getattr(error, "filename", None) or ctx.invoked_subcommand or "output"
            raise click.ClickException(str(write_failure(error, target))) from None


COMMANDS = {
    "convert": ("pipeline.convert:convert_command",
                "Label Studio / COCO / YOLO keypoints to a YOLO-pose dataset (or COCO)."),
    "augment": ("pipeline.augment:augment_command",
                "Keypoint-aware offline augmentation of a dataset's training split."),
    "train": ("pipeline.train:train_command", "Train a pose model with FDConv (YOLOv8, YOLO11, YOLO26)."),
    "eval": ("pipeline.evaluate:eval_command", "OKS mAP by the COCO protocol, with a report."),
    "package": ("pipeline.package.command:package_command",
                "Package weights (pt, safetensors, ONNX) with a model card and checksums."),
    "predict": ("pipeline.predict:predict_command",
                "Run a packaged model on images, folders or videos."),
    "serve": ("pipeline.serve.command:serve_command",
              "Label Studio ML backend: pre-annotate keypoints, train from the labelling UI."),
    "demo-data": ("pipeline.demo:demo_data_command",
                  "Generate the bundled demo dataset (Label Studio export)."),
    "demo-video": ("pipeline.video.clip:demo_video_command",
                   "Render the demo clip (figures crossing, turning, corrupted frames) with ground truth."),
    "frames": ("pipeline.video.frames:frames_command",
               "Pick diverse video frames worth labelling (k-means), with a Label Studio import file."),
    "outliers": ("pipeline.video.outliers_command:outliers_command",
                 "Rank tracked video frames by how likely the model is wrong there; send the top ones."),
    "model": ("pipeline.nn.info:model_command", "Inspect model configurations (layers, params, GFLOPs)."),
    "compare": ("pipeline.compare:compare_command",
                "Two models over seeds: accuracy with confidence intervals, and cost."),
    "skeleton": ("pipeline.skeleton.command:skeleton_group",
                 "Keypoint layouts: infer one to edit, check a file, write its Label Studio config."),
    "sigmas": ("pipeline.sigmas:sigmas_command",
               "Estimate OKS sigmas from repeated annotations (COCO's definition) into a skeleton file."),
    "bench": ("pipeline.cli:bench", "Benchmarks: print figures and ratios, write JSON."),
}

BENCHMARKS = {
    "fdconv": ("pipeline.bench.fdconv:command", "FDConv layer vs nn.Conv2d of the same shape."),
    "model": ("pipeline.bench.model:command", "C2f_FDConv YOLOv8-pose vs stock YOLOv8-pose."),
    "convert": ("pipeline.bench.convert:command", "fdpose convert vs ultralytics' convert_coco."),
    "augment": ("pipeline.bench.augment:command", "Augmentation throughput, 1 worker vs all."),
    "deploy": ("pipeline.bench.deploy:command",
               "FDConv vs stock in PyTorch, onnxruntime and OpenVINO: latency, throughput, ratios."),
    "profile": ("pipeline.bench.profile:command",
                "onnxruntime and OpenVINO per-operator profiles, FDConv vs stock."),
    "gpu": ("pipeline.bench.gpu:command", "FDConv vs stock on a CUDA GPU, AMP: speed, memory, FFT dtype."),
    "serve": ("pipeline.bench.serve:command", "fdpose serve under concurrent /predict clients."),
    "package": ("pipeline.bench.package:command",
                "A package's batch-1 latency: PyTorch, PyTorch fused, onnxruntime."),
    "video": ("pipeline.bench.video:command",
              "Tracking, smoothing and outlier ranking on the demo clip vs its ground truth; speed."),
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: print figures and ratios, write JSON."""


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fdpose")
def main() -> None:
    """fdpose: keypoint labels in, a trained, evaluated and packaged YOLOv8-pose model with FDConv out."""


if __name__ == "__main__":  # pragma: no cover
    main()
