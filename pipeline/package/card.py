"""``MODEL_CARD.md``: the model, its formats, its data, training parameters, eval numbers, versions,
intended use and limits, written only from facts of the inputs (nothing location-dependent, and
nothing time-dependent unless latency measured at packaging time is given)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.inference import ModelMeta
from pipeline.metrics import format_number
from pipeline.package.export import ExportCheck


@dataclass
class DataInfo:
    """What the card says about the training data."""

    source: str  # where the keypoint layout came from
    data_yaml: Path | None = None
    fingerprint: str | None = None
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> images, instances, sha256
    sample_image: Path | None = None


@dataclass
class FormatScores:
    """The OKS mAP of each packaged format on one split, measured at packaging time."""

    split: str
    images: int
    oks_map: dict[str, float | None]  # format name (FORMAT_ROWS) -> OKS mAP@[.50:.95]

    def line(self) -> str:
        figures = ", ".join(f"{name} {format_number(value)}" for name, value in self.oks_map.items())
        return f"OKS mAP on the {self.split} split ({self.images} images): {figures}"


EVAL_METRICS = ("oks_map", "oks_map50", "oks_map75", "oks_map_medium", "oks_map_large", "oks_ar", "oks_ar50",
                "oks_ar75", "box_map", "box_map50", "box_map75")
TRAIN_KEYS = ("model", "epochs", "imgsz", "batch", "optimizer", "lr0", "lrf", "momentum", "weight_decay",
              "warmup_epochs", "seed", "deterministic", "amp", "mosaic", "fliplr", "degrees", "scale",
              "translate", "hsv_h", "hsv_s", "hsv_v", "pose", "kobj", "box", "cls", "dfl", "patience")
CARD_NUMBER = ".6g"  # how the card writes parameters and metrics
LATENCY_RUNS = 5  # timed batch-1 runs per format for the card's latency (after 2 warm-up runs)


def model_card(*, weights_name: str, weights_sha256: str, checkpoint: dict[str, Any], meta: ModelMeta,
               architecture: dict[str, Any], parameters: int, data: DataInfo, metrics: dict[str, Any] | None,
               report: str | None, checks: list[ExportCheck], opset: int,
               latency: dict[str, float] | None = None, comparison: dict[str, Any] | None = None,
               scores: FormatScores | None = None) -> str:
    """The MODEL_CARD.md text: only facts from the inputs, nothing location-dependent (and nothing
    time-dependent unless ``latency``, measured at packaging time, is given). ``comparison``: the
    ``summary.json`` of an ``fdpose compare`` report packaged under ``comparison/``, or None."""
    uses_fdconv = "C2f_FDConv" in json.dumps(architecture)
    title = "# Model card: YOLOv8-pose" + (" with C2f_FDConv (Frequency Dynamic Convolution)" if uses_fdconv
                                           else "")
    lines = [title, ""]
    lines += _card_model(weights_name, weights_sha256, checkpoint, meta, architecture, parameters, checks,
                         opset)
    lines += _card_formats(checks, latency, scores)
    lines += _card_data(data, meta)
    lines += _card_training(checkpoint.get("train_args") or {})
    lines += _card_evaluation(metrics, data, report)
    lines += _card_comparison(comparison)
    lines += _card_versions_and_limits(meta)
    return "\n".join(lines)


def _card_model(weights_name: str, weights_sha256: str, checkpoint: dict[str, Any], meta: ModelMeta,
                architecture: dict[str, Any], parameters: int, checks: list[ExportCheck],
                opset: int) -> list[str]:
    """## Model: task, architecture, source weights, the files and the export checks."""
    uses_fdconv = "C2f_FDConv" in json.dumps(architecture)
    scale = architecture.get("scale") or "?"
    k, dims = meta.skeleton.kpt_shape
    size = meta.imgsz
    lines = [
        "## Model",
        f"- Task: {k}-keypoint pose estimation (boxes + keypoints) for {meta.num_classes} class(es): "
        f"{', '.join(meta.skeleton.class_names)}.",
        f"- Architecture: ultralytics YOLOv8-pose, scale `{scale}`"
        + (", FDConv in the C2f bottlenecks of the backbone" if uses_fdconv else "")
        + f"; {parameters:,} parameters; stride {meta.stride}.",
        f"- Source weights: `{weights_name}` (sha256 `{weights_sha256}`), trained with ultralytics "
        f"{checkpoint.get('version', '?')} on {checkpoint.get('date', 'an unrecorded date')}.",
        "- Files: `model.pt` (ultralytics checkpoint, optimizer stripped; a pickle: load only if you trust "
        "it), `model.safetensors` + `model.yaml` (weights and everything to rebuild the model; loading "
        f"runs no pickled code), `model.onnx` (opset {opset}, input `images` Bx3x{size}x{size} RGB in "
        f"[0, 1] for any batch size B at the fixed input size {size}, letterboxed with grey 114; output "
        f"`output0` (B, {4 + meta.num_classes + k * dims}, N): box centre/size in input pixels, class "
        "scores, keypoints x, y" + (", visibility" if dims == 3 else "") + ")"
        + (", `model.xml` + `model.bin` (the ONNX model as an OpenVINO IR, float32, same input and output)"
           if any(check.format == "OpenVINO" for check in checks) else "") + ".",
    ]
    if "_FDConv" in json.dumps(architecture):
        lines.append("- FDConv gives every sample its own kernels: the exported graph applies them as "
                     "batched matrix products, so a batch runs as one batch (no ONNX `Loop`).")
    runtime = {"ONNX": "onnxruntime", "OpenVINO": "OpenVINO"}
    for check in checks:
        lines.append(f"- {check.format} check: {runtime.get(check.format, check.format)} vs PyTorch on "
                     f"`{check.image}` and its mirror image (batch 2): max abs difference of raw outputs "
                     f"{check.max_abs_diff:.3e} over max abs value {check.max_abs_value:.4g} = "
                     f"**{check.relative:.3e}** (tolerance {check.tolerance:.0e}).")
    return lines + [""]


FORMAT_ROWS = (("PyTorch", "`model.safetensors` + `model.yaml`", "PyTorch (`predict --backend torch`)"),
               ("ONNX", "`model.onnx`", "onnxruntime (`--backend onnx`)"),
               ("OpenVINO", "`model.xml` + `model.bin`", "OpenVINO (`--backend openvino`)"))


def _card_formats(checks: list[ExportCheck], latency: dict[str, float] | None,
                  scores: FormatScores | None) -> list[str]:
    """## Formats: each packaged format, its runtime, its OKS mAP and its batch-1 latency (when
    measured)."""
    present = {"PyTorch", "ONNX"} | {check.format for check in checks}
    lines = ["## Formats", "", "| format | files | runs with | OKS mAP | batch-1 latency |",
             "|---|---|---|---|---|"]
    for name, files, runtime in FORMAT_ROWS:
        if name in present:
            value = f"{latency[name]:.1f} ms" if latency and name in latency else "not measured"
            score = (format_number(scores.oks_map.get(name), CARD_NUMBER) if scores is not None
                     else "not scored")
            lines.append(f"| {name} | {files} | {runtime} | {score} | {value} |")
    if scores is not None:
        lines += ["", f"OKS mAP@[.50:.95] of each file as it ships, run through its own runtime on "
                  f"`fdpose eval`'s path (letterbox, decoding, NMS) on the `{scores.split}` split of the "
                  f"dataset below ({scores.images} images), at the fixed input size; `fdpose eval "
                  "--weights <package>/model.onnx` (or `model.xml`) measures it again."]
    else:
        lines += ["", "OKS mAP per format not scored (the package stage was given no eval split to score "
                  "on)."]
    if "OpenVINO" not in present:
        lines += ["", "No OpenVINO IR: packaged without the `fdpose[openvino]` extra."]
    if latency:
        lines += ["", f"Latency: median of {LATENCY_RUNS} runs at batch 1 on the CPU, measured at packaging "
                  f"time on the packaging machine ({os.cpu_count()} cores); other machines differ. "
                  "`fdpose bench deploy` compares every format with the stock model side by side."]
    else:
        lines += ["", "Latency not measured (`fdpose package --latency` measures it; `fdpose bench deploy` "
                  "compares every format with the stock model side by side)."]
    return lines + [""]


def _card_data(data: DataInfo, meta: ModelMeta) -> list[str]:
    """## Data: where the layout came from, the splits, and the keypoint table."""
    skeleton = meta.skeleton
    names = skeleton.keypoint_names
    lines = ["## Data", f"- Keypoint layout from {data.source}."]
    if data.fingerprint:
        lines.append(f"- Dataset fingerprint (sha256 of data.yaml and the splits'): `{data.fingerprint}`.")
    for split, counts in sorted(data.counts.items()):
        lines.append(f"- `{split}`: {counts['images']} images, {counts['instances']} instances "
                     f"(sha256 `{counts['sha256']}`).")
    lines += ["", "| # | keypoint | flips to | OKS sigma |", "|---|---|---|---|"]
    for index, name in enumerate(names):
        lines.append(f"| {index} | {name} | {names[skeleton.flip_permutation[index]]} | "
                     f"{skeleton.sigmas[index]:.3f} |")
    if skeleton.edges:
        edges = ", ".join(f"{names[a]}-{names[b]}" for a, b in skeleton.edges)
        lines += ["", f"Skeleton edges: {edges}."]
    return lines


def _card_training(train_args: dict[str, Any]) -> list[str]:
    """## Training parameters: the checkpoint's own record of them."""
    lines = ["", "## Training parameters", ""]
    shown = [(key, train_args[key]) for key in TRAIN_KEYS if key in train_args]
    if not shown:
        return lines + ["The checkpoint records no training arguments."]
    lines += ["| parameter | value |", "|---|---|"]
    return lines + [f"| {key} | {format_number(value, CARD_NUMBER)} |" for key, value in shown]


def _card_evaluation(metrics: dict[str, Any] | None, data: DataInfo, report: str | None) -> list[str]:
    """## Evaluation: the model's numbers (and the baseline's), on which split and data."""
    lines = ["", "## Evaluation", ""]
    if not metrics:
        return lines + ["Not evaluated (packaged without `--eval`)."]
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    lines += ["| metric | this model |" + (" baseline |" if baseline else ""),
              "|---|---|" + ("---|" if baseline else "")]
    for key in EVAL_METRICS:
        if key in metrics:
            row = f"| {key} | {format_number(metrics[key], CARD_NUMBER)} |"
            lines.append(row + (f" {format_number(baseline.get(key), CARD_NUMBER)} |" if baseline else ""))
    lines.append("")
    split = metrics.get("split", "?")
    evaluated = (f"Evaluated on split `{split}`: {metrics.get('num_images', '?')} images, "
                 f"{metrics.get('num_instances', '?')} instances")
    if "data_sha256" in metrics:
        same = data.counts.get(split, {}).get("sha256") == metrics["data_sha256"]
        evaluated += (f", data sha256 `{metrics['data_sha256']}` ("
                      + ("the packaged model's dataset split" if same else
                         "NOT the training dataset's split listed above") + ")")
    lines.append(evaluated + ". OKS mAP by the COCO protocol with the sigmas above "
                 "(`eval/metrics.json`)." + (f" Full report: [{report}]({report})." if report else ""))
    return lines


def _card_comparison(summary: dict[str, Any] | None) -> list[str]:
    """## Comparison: whether ``fdpose compare`` measured this architecture against its stock twin, and
    its verdict (with the effect size it could have missed) and report, packaged under ``comparison/``."""
    lines = ["", "## Comparison with the stock model", ""]
    if summary is None:
        return lines + ["No comparison was run for this package: nothing here says whether FDConv beats the "
                        "stock model on this data. `fdpose compare` measures it over seeds (README, \"Does "
                        "FDConv pay?\"); `fdpose package --comparison REPORT_DIR` links its verdict here."]
    settings = summary.get("settings") or {}
    models = " against ".join(f"`{m}`" for m in settings.get("models") or [])
    start = f"from `{settings['pretrained']}`" if settings.get("pretrained") else "from scratch"
    seeds = len(settings.get("seeds") or [])
    return lines + [f"A comparison was run: {models}, {seeds} paired seeds, {start}, on "
                    f"`{settings.get('data', '?')}`. Verdict: {summary.get('verdict', '?')}",
                    "", "Full report: [comparison/report.md](comparison/report.md) (numbers in "
                    "`comparison/summary.json`)."]


def _card_versions_and_limits(meta: ModelMeta) -> list[str]:
    """## Versions, and ## Intended use and limits."""
    import torch
    import ultralytics

    k = meta.skeleton.num_keypoints
    return [
        "",
        "## Versions",
        f"- fdpose {__version__}, torch {torch.__version__.split('+')[0]}, "
        f"ultralytics {ultralytics.__version__}.",
        "",
        "## Intended use and limits",
        f"- Intended for detecting the {k} keypoints above on images like the training data, e.g. to "
        "pre-annotate the next labelling batch (`fdpose predict --to-label-studio`).",
        "- Accuracy outside the training distribution (other viewpoints, lighting, object sizes, "
        "crowding) is unknown; the eval numbers hold only for the evaluated split.",
        "- Keypoints come with a confidence, not a calibrated probability; occluded points may be "
        "placed plausibly yet wrongly. Not for safety-critical or identity-related decisions.",
        f"- The ONNX file (and the OpenVINO IR) has a fixed input size of {meta.imgsz} and any batch "
        f"size; the safetensors model accepts any multiple of {meta.stride}.",
        "",
    ]

