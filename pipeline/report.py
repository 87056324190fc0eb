"""The evaluation report: ``report.html`` (self-contained, figures embedded as base64 PNG),
``report.md`` (figures beside it in ``figures/``) and the DVC plot data in ``plots/``.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display) and
its bundled DejaVu font, so nothing is downloaded. Everything shown is read from the
:class:`pipeline.metrics.EvalResult`; with a baseline, each number, curve and bar has the baseline's
beside it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.document import Document, Figure, Section, Table, html_page, markdown
from pipeline.io import atomic_write_bytes, atomic_write_text
from pipeline.metrics import RECALL_POINTS, EvalResult, ModelEvaluation, crosscheck_line, format_number
from pipeline.skeleton import PLACEHOLDER_SIGMA

HEADLINE = [
    ("oks_map", "OKS mAP@[.50:.95]"), ("oks_map50", "OKS mAP@.50"), ("oks_map75", "OKS mAP@.75"),
    ("oks_map_medium", "OKS mAP (medium)"), ("oks_map_large", "OKS mAP (large)"),
    ("oks_ar", "OKS AR@[.50:.95]"), ("oks_ar50", "OKS AR@.50"), ("oks_ar75", "OKS AR@.75"),
    ("oks_ar_medium", "OKS AR (medium)"), ("oks_ar_large", "OKS AR (large)"),
    ("box_map", "box mAP@[.50:.95]"), ("box_map50", "box mAP@.50"), ("box_map75", "box mAP@.75"),
]
ULTRALYTICS = [("pose_map", "pose mAP50-95"), ("pose_map50", "pose mAP50"), ("box_map", "box mAP50-95"),
               ("box_map50", "box mAP50")]
MODEL_COLORS = {"model": "#1f77b4", "baseline": "#ff7f0e"}
GT_COLOR, PRED_COLOR = "#2ca02c", "#d62728"
KEYPOINT_DRAW_SCORE = 0.5  # predicted keypoints below this score are not drawn (ultralytics' plotting rule)
THUMBNAIL = 320  # longest side of an image in the worst/best grid, in pixels


def _delta(model: float | None, baseline: float | None) -> str:
    if model is None or baseline is None:
        return "n/a"
    if isinstance(model, int) and isinstance(baseline, int):
        return f"{model - baseline:+d}"
    return f"{model - baseline:+.4f}"


# --- DVC plot data ---------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in row])
    atomic_write_text(path, buffer.getvalue())


def write_plots_data(result: EvalResult, folder: Path) -> None:
    """``pr_curve.csv`` (recall plus one precision column per curve) and ``keypoints.csv`` (PCK and pixel
    error per class and keypoint) for the model, the same under ``baseline/`` for the baseline."""
    for evaluation in result.models:
        target = folder if evaluation.label == "model" else folder / evaluation.label
        curves = evaluation.scores.pr_curves
        names = list(curves)
        header = ["recall"] + [f"precision_{_column(name)}" for name in names]
        rows = [[float(r)] + [curves[name][i] for name in names] for i, r in enumerate(RECALL_POINTS)]
        _write_csv(target / "pr_curve.csv", header, rows)
        table = evaluation.scores.keypoints
        columns = list(table[0]) if table else ["class", "keypoint", "count"]
        _write_csv(target / "keypoints.csv", columns, [[row[c] for c in columns] for row in table])


def _column(curve: str) -> str:
    """``oks@[.50:.95]`` -> ``oks_50_95``, ``box@.50`` -> ``box_50``: plain CSV column names."""
    kind, threshold = curve.split("@")
    return f"{kind}_{threshold.strip('[]').replace('.', '').replace(':', '_')}"


# --- figures -----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    # No timestamp or version metadata: the same evaluation gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def pr_figure(result: EvalResult) -> bytes:
    """Precision-recall curves: OKS at .50, .75 and averaged over .50:.95, and box; the baseline dashed."""
    figure = _figure(11, 4.2)
    axes = figure.subplots(1, 2)
    styles = {"@[.50:.95]": 1.0, "@.50": 0.75, "@.75": 0.5}
    for ax, kind in zip(axes, ("oks", "box"), strict=True):
        for evaluation in result.models:
            for name, curve in evaluation.scores.pr_curves.items():
                if not name.startswith(kind):
                    continue
                y = np.array([np.nan if v is None else v for v in curve])
                dashed = evaluation.label != "model"
                ax.plot(RECALL_POINTS, y, color=MODEL_COLORS[evaluation.label],
                        alpha=styles[name[len(kind):]], linestyle="--" if dashed else "-",
                        label=f"{evaluation.label} {name}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("keypoints (OKS)" if kind == "oks" else "boxes (IoU)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return _png(figure)


def keypoint_figure(result: EvalResult, class_name: str) -> bytes:
    """Per-keypoint bars for one class: PCK at each threshold, and mean pixel error; models side by side."""
    thresholds = result.settings["pck_thresholds"]
    names = result.keypoint_names
    figure = _figure(max(6.0, 0.6 * len(names) + 2), 6.5)
    axes = figure.subplots(2, 1)
    series = []
    for evaluation in result.models:
        rows = {r["keypoint"]: r for r in evaluation.scores.keypoints if r["class"] == class_name}
        for t in thresholds:
            series.append((f"{evaluation.label} PCK@{t:g}", evaluation.label, f"pck@{t:g}", rows))
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    for index, (label, model_label, key, rows) in enumerate(series):
        values = [np.nan if rows.get(n, {}).get(key) is None else rows[n][key] for n in names]
        shade = 0.55 + 0.45 * (thresholds.index(float(key[4:])) / max(len(thresholds) - 1, 1))
        axes[0].bar(x + (index - (len(series) - 1) / 2) * width, values, width, label=label,
                    color=MODEL_COLORS[model_label], alpha=shade)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("PCK (fraction of box diagonal)")
    axes[0].legend(fontsize=7, ncol=2)
    width = 0.8 / len(result.models)
    for index, evaluation in enumerate(result.models):
        rows = {r["keypoint"]: r for r in evaluation.scores.keypoints if r["class"] == class_name}
        values = [np.nan if rows.get(n, {}).get("mean_px_error") is None else rows[n]["mean_px_error"]
                  for n in names]
        axes[1].bar(x + (index - (len(result.models) - 1) / 2) * width, values, width,
                    label=evaluation.label, color=MODEL_COLORS[evaluation.label])
    axes[1].set_ylabel("mean error (px)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"per-keypoint accuracy, class '{class_name}' (matched instances)")
    figure.tight_layout()
    return _png(figure)


def _load_thumbnail(path: Path) -> tuple[np.ndarray, float]:
    """The image as displayed (EXIF orientation applied), shrunk to THUMBNAIL; and the scale used."""
    from PIL import Image, ImageOps

    from pipeline.images import pil_open

    with pil_open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = min(1.0, THUMBNAIL / max(image.size))
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
        return np.asarray(image), scale


def _draw_pose(ax, keypoints: np.ndarray, box: list[float], edges: list[tuple[int, int]], scale: float,
               color: str, shown: np.ndarray, linestyle: str) -> None:
    """A box, the ``shown`` keypoints and the skeleton edges between shown keypoints."""
    from matplotlib.patches import Rectangle

    x, y, w, h = (v * scale for v in box)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1, linestyle=linestyle))
    points = keypoints[:, :2] * scale
    for a, b in edges:
        if shown[a] and shown[b]:
            ax.plot(points[[a, b], 0], points[[a, b], 1], color=color, linewidth=1, linestyle=linestyle)
    ax.scatter(points[shown, 0], points[shown, 1], s=8, color=color, zorder=3)


def grid_figure(result: EvalResult, image_ids: list[int], title: str) -> bytes:
    """One row per image: ground truth, then each model's predictions: those matched to the ground truth
    (solid, every keypoint, as OKS sees them) and the other ones scoring at least ``draw_conf`` (dashed,
    keypoints from score ``KEYPOINT_DRAW_SCORE``)."""
    by_id = {image["id"]: image for image in result.gt["images"]}
    records = {image.file_name: image for image in result.images}
    columns = 1 + len(result.models)
    figure = _figure(3.2 * columns, 3.0 * len(image_ids) + 0.4)
    axes = np.asarray(figure.subplots(len(image_ids), columns, squeeze=False))
    draw_conf = result.settings["draw_conf"]
    for row, image_id in enumerate(image_ids):
        info = by_id[image_id]
        pixels, scale = _load_thumbnail(records[info["file_name"]].path)
        gts = [a for a in result.gt["annotations"] if a["image_id"] == image_id]
        labelled = [a for a in gts if a["num_keypoints"] > 0]
        # (title, [(annotation, keypoint mask, color, linestyle)])
        panels = [("ground truth",
                   [(a, np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] > 0, GT_COLOR, "-") for a in gts])]
        for evaluation in result.models:
            matched = evaluation.scores.matched.get(image_id, [])
            matched_ids = {id(p) for p in matched}
            others = [p for p in evaluation.predictions if p["image_id"] == image_id
                      and p["score"] >= draw_conf and id(p) not in matched_ids]
            poses = [(p, np.ones(len(p["keypoints"]) // 3, dtype=bool), PRED_COLOR, "-") for p in matched]
            poses += [(p, np.asarray(p["keypoints"]).reshape(-1, 3)[:, 2] >= KEYPOINT_DRAW_SCORE, PRED_COLOR,
                       "--") for p in others]
            score = evaluation.scores.image_scores.get(image_id)
            caption = (f"{evaluation.label}: OKS {format_number(score, '.2f')}, "
                       f"{len(matched)}/{len(labelled)} matched")
            panels.append((caption, poses))
        for column, (label, poses) in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(pixels)
            for annotation, mask, color, linestyle in poses:
                keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
                _draw_pose(ax, keypoints, annotation["bbox"], result.edges, scale, color, mask, linestyle)
            ax.set_xlim(0, pixels.shape[1])
            ax.set_ylim(pixels.shape[0], 0)
            ax.set_axis_off()
            ax.set_title(f"{info['file_name']}\n{label}" if column == 0 else label, fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def ranked_images(evaluation: ModelEvaluation, count: int) -> tuple[list[int], list[int]]:
    """The worst and best images by mean matched OKS (images with labelled instances only; ties broken
    by image id so the choice is deterministic): ``count`` each, fewer when the split has under
    ``2 x count`` such images, so that the two grids do not show the same images."""
    ranked = sorted(evaluation.scores.image_scores.items(), key=lambda item: (item[1], item[0]))
    count = min(count, max(1, len(ranked) // 2))
    worst = [image_id for image_id, _ in ranked[:count]]
    best = [image_id for image_id, _ in sorted(ranked, key=lambda item: (-item[1], item[0]))[:count]]
    return worst, best


def figures(result: EvalResult) -> dict[str, bytes]:
    """Every figure of the report by file name."""
    out = {"pr_curves.png": pr_figure(result)}
    for class_name in _keypoint_classes(result):
        out[f"keypoints_{_slug(class_name)}.png"] = keypoint_figure(result, class_name)
    worst, best = ranked_images(result.model, result.settings["grid_images"])
    if worst:
        out["worst.png"] = grid_figure(result, worst, "worst predictions (lowest mean OKS, model)")
        out["best.png"] = grid_figure(result, best, "best predictions (highest mean OKS, model)")
    return out


def _keypoint_classes(result: EvalResult) -> list[str]:
    names = []
    for row in result.model.scores.keypoints + (result.baseline.scores.keypoints if result.baseline else []):
        if row["class"] not in names:
            names.append(row["class"])
    return names


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# --- the documents -------------------------------------------------------------------------------


def _tables(result: EvalResult) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The report's tables as (title, header, rows, note)."""
    labels = [e.label for e in result.models]
    with_delta = result.baseline is not None
    header = ["metric"] + labels + (["model - baseline"] if with_delta else [])

    def row(name: str, getter) -> list[str]:
        values = [getter(e) for e in result.models]
        cells = [name] + [format_number(v) for v in values]
        if with_delta:
            cells.append(_delta(values[0], values[1]))
        return cells

    headline = [row(title, lambda e, k=key: e.scores.metrics[k]) for key, title in HEADLINE]
    for class_name in result.model.scores.per_class:
        for key, title in (("oks_map", "OKS mAP@[.50:.95]"), ("oks_map50", "OKS mAP@.50")):
            headline.append(row(f"{title}, class '{class_name}'",
                                lambda e, c=class_name, k=key: e.scores.per_class.get(c, {}).get(k)))
    headline.append(row("matched instances", lambda e: e.scores.matched_instances))
    headline.append(row("predictions", lambda e: e.scores.num_predictions))
    ultra = [row(title, lambda e, k=key: e.ultralytics[k] if e.ultralytics else None)
             for key, title in ULTRALYTICS]

    s = result.settings
    counts = result.counts
    settings_rows = [
        ["data", str(result.data_yaml)], ["split", result.split],
        ["images", str(counts["num_images"])],
        ["instances (labelled)", f"{counts['num_instances']} ({counts['num_labelled_instances']})"],
        ["labelled keypoints", str(counts["num_labelled_keypoints"])],
        ["OKS area", "0.53 x ground-truth box area (ultralytics' rule)"],
        ["OKS thresholds", "0.50:0.05:0.95 (COCO); 101 recall points"],
        ["detections kept", "top 20 per image for keypoints, 100 for boxes (COCO)"],
        ["prediction", f"conf >= {s['conf']}, NMS IoU {s['iou']}, imgsz {s['imgsz']}, "
                       f"max_det {s['max_det']}, device {s['device']}, batch 1"],
        ["keypoint matching", f"greedy by score, OKS >= {s['match_oks']} (COCO's rule at one threshold)"],
        ["PCK", "error <= t x ground-truth box diagonal, t in "
                + ", ".join(f"{t:g}" for t in s["pck_thresholds"])],
        ["evaluator", "faster-coco-eval COCOeval_faster (same numbers as pycocotools COCOeval)"],
        ["data sha256", result.data_fingerprint],
    ] + [[f"{e.label} weights", f"{e.weights} ({e.kind or 'predictions'} at {e.imgsz} px, sha256 "
                                 f"{e.fingerprint})"] for e in result.models] \
      + [[f"{e.label} cross-check", crosscheck_line(e.crosscheck)] for e in result.models if e.crosscheck]
    sources = result.dataset.skeleton.sigma_sources
    sigma_rows = [[name, f"{sigma:g}", SIGMA_SOURCE_TEXT[source]]
                  for name, sigma, source in zip(result.keypoint_names, result.sigmas, sources, strict=True)]
    placeholders = sources.count("placeholder")
    sigma_note = (f"{placeholders} of {len(sources)} sigmas are placeholders ({PLACEHOLDER_SIGMA}, not "
                  "measured): "
                  "OKS on those keypoints is not comparable with published numbers; estimate them with "
                  "fdpose sigmas." if placeholders else "")

    keypoint_tables = []
    for class_name in _keypoint_classes(result):
        keys = [f"pck@{t:g}" for t in s["pck_thresholds"]] + ["mean_px_error"]
        header_k = ["keypoint"] + [f"{e.label} {k}" for k in keys for e in result.models]
        rows_k = []
        for name in result.keypoint_names:
            cells = [name]
            for key in keys:
                for evaluation in result.models:
                    match = [r for r in evaluation.scores.keypoints
                             if r["class"] == class_name and r["keypoint"] == name]
                    spec = ".3f" if key.startswith("pck") else ".2f"
                    cells.append(format_number(match[0][key] if match else None, spec))
            rows_k.append(cells)
        keypoint_tables.append((f"Per-keypoint accuracy: class '{class_name}'", header_k, rows_k,
                                "Over labelled keypoints of matched instances."))

    tables = [("Headline (COCO protocol, faster-coco-eval)", header, headline,
               "n/a: no ground truth in that area range.")]
    if any(e.ultralytics is not None for e in result.models):
        tables.append(("ultralytics' own validation (for comparison)", header, ultra,
                       "model.val on the same images, sigmas and area rule; it letterboxes images its own "
                       "way (padded rectangular batches), matches per image without COCO's top-20 limit and "
                       "interpolates precision differently, so its numbers differ from the COCO ones above."))
    tables += [("Settings", ["setting", "value"], settings_rows, ""),
               ("OKS sigmas", ["keypoint", "sigma", "source"], sigma_rows, sigma_note)]
    return tables + keypoint_tables


SIGMA_SOURCE_TEXT = {"coco": "COCO", "file": "skeleton file", "estimated": "estimated (fdpose sigmas)",
                     "placeholder": "PLACEHOLDER"}


def _figure_sections(result: EvalResult, names: list[str]) -> list[tuple[str, str]]:
    sections = [("Precision-recall curves", "pr_curves.png")]
    sections += [(f"Per-keypoint bars: class '{c}'", f"keypoints_{_slug(c)}.png") for c in
                 _keypoint_classes(result)]
    sections += [("Worst predictions", "worst.png"), ("Best predictions", "best.png")]
    return [(title, name) for title, name in sections if name in names]


def document(result: EvalResult, images: dict[str, bytes]) -> Document:
    """The report: the tables, then the figures (linked from ``figures/`` in Markdown, embedded in HTML)."""
    sections = [Section(title, [Table(header, rows, note)]) for title, header, rows, note in _tables(result)]
    sections += [Section(title, [Figure(title, f"figures/{name}", images[name])])
                 for title, name in _figure_sections(result, list(images))]
    name = result.model.weights.name
    return Document(f"Evaluation: {name} on {result.data_yaml} ({result.split})", sections=sections,
                    page_title=f"fdpose eval: {name}")


def write_reports(result: EvalResult, folder: Path) -> None:
    """report.md, report.html and figures/*.png into ``folder``."""
    images = figures(result)
    for name, data in images.items():
        atomic_write_bytes(folder / "figures" / name, data)
    report = document(result, images)
    atomic_write_text(folder / "report.md", markdown(report))
    atomic_write_text(folder / "report.html", html_page(report))
