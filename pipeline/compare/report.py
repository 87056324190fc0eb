"""The comparison's numbers and files: ``runs.csv``, ``summary.json``, ``report.md``, ``report.html``.

:func:`summarize` turns the run records and the measured costs into a :class:`Summary` (per-model
mean and standard deviation over seeds, the paired differences with their t intervals, sign-flip
p-values, detectable effects and verdicts, the image bootstrap of evaluation noise, cost ratios,
per-keypoint PCK); the writers render that one summary, so the Markdown and
HTML reports and the JSON always agree.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.compare.cost import ModelCost
from pipeline.compare.images import ImageNoise
from pipeline.compare.runs import METRICS, RunRecord
from pipeline.document import Block, Bullets, Document, Figure, Section, Table, html_page
from pipeline.document import markdown as render_markdown
from pipeline.io import atomic_write_bytes, atomic_write_text, write_json
from pipeline.stats import PairedComparison, mean_std, paired_comparison

METRIC_NAMES = {"oks_map": "OKS mAP", "oks_map50": "OKS mAP50", "oks_map75": "OKS mAP75",
                "box_map": "box mAP", "box_map50": "box mAP50"}
RUN_COLUMNS = ["model", "seed", *METRICS, "train_seconds", "epochs", "latency_ms", "run"]
PLOT_FILE = "oks_map_vs_latency.png"


@dataclass(frozen=True)
class StatsSettings:
    """How the seeds' paired differences are tested (:func:`pipeline.stats.paired_comparison`)."""

    confidence: float = 0.95
    permutations: int = 100_000
    seed: int = 0
    effect: float | None = None


@dataclass
class ModelSummary:
    """One model over its seeds."""

    label: str
    model: str
    seeds: list[int]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    parameters: int
    gflops: float
    latency_ms: float  # median over its runs' medians
    train_seconds: float  # mean over its runs
    epochs: int


@dataclass
class Summary:
    """Everything the reports show."""

    settings: dict[str, Any]
    models: list[ModelSummary]
    comparisons: dict[str, PairedComparison]
    ratios: dict[str, float | None]  # first model / second: parameters, gflops, latency, train_time
    pck: list[dict[str, Any]]  # per keypoint: mean PCK of each model at each threshold
    runs: list[RunRecord]
    latencies: dict[str, float]  # run folder name -> median ms
    noise: ImageNoise | None = None  # the image bootstrap of the OKS mAP differences
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """summary.json: headline numbers first (what ``dvc metrics show`` lists), then the details."""
        a, b = self.models
        headline = {name: {"difference": c.mean, "ci_low": c.ci_low, "ci_high": c.ci_high,
                           "p_value": c.p_value, "detectable": c.detectable, "significant": c.significant,
                           a.label: a.mean[name], b.label: b.mean[name]}
                    for name, c in self.comparisons.items()}
        if self.noise is not None:
            headline["oks_map"]["image_sd"] = self.noise.mean_sd
        return {
            **headline,
            "ratios": self.ratios,
            "verdict": self.comparisons["oks_map"].verdict(),
            "models": [asdict(m) for m in self.models],
            "comparisons": {name: c.to_dict() for name, c in self.comparisons.items()},
            "image_noise": self.noise.to_dict() if self.noise is not None else None,
            "pck": self.pck,
            "runs": [{**run.to_dict(), "latency_ms": self.latencies[Path(run.folder).name]}
                     for run in self.runs],
            "settings": self.settings,
            "notes": self.notes,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def pck_rows(labels: list[str], runs: list[RunRecord], keypoint_names: list[str],
             thresholds: list[float]) -> list[dict[str, Any]]:
    """Per keypoint, each model's PCK at each threshold averaged over its seeds, and first - second.

    From the eval's per-keypoint rows of class ``all`` when the dataset has several classes, else of
    its one class; None where a model matched no instance (nothing to measure)."""
    columns = [f"pck@{t:g}" for t in thresholds]
    classes = {row["class"] for run in runs for row in run.keypoints}
    wanted = "all" if "all" in classes else min(classes, default=None)
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for row in run.keypoints:
            for column in columns:
                if row["class"] == wanted and row.get(column) is not None:
                    values.setdefault((run.label, row["keypoint"], column), []).append(row[column])
    table = []
    for keypoint in keypoint_names:
        row: dict[str, Any] = {"keypoint": keypoint}
        for column in columns:
            for label in labels:
                row[f"{label} {column}"] = mean_std(values.get((label, keypoint, column), []))[0]
            first, second = (row[f"{label} {column}"] for label in labels)
            row[f"difference {column}"] = first - second if first is not None and second is not None else None
        table.append(row)
    return table


def _latency_note(runs: int, now: int) -> str:
    note = ("Latency: batch 1 on the CPU at the eval image size, fused models, measured side by side "
            "(round-robin over the runs' checkpoints); each run's figure is the median of its calls.")
    if now == runs:
        return note + " All runs were timed in this sitting."
    return note + (f" {now} of the {runs} runs were timed in this sitting; the others' figures are the "
                   "ledger's, from the sitting that last timed them (their weights are not on this machine), "
                   "so ratios across sittings carry the machine's drift.")


def summarize(settings: dict[str, Any], labels: list[str], models: list[str], runs: list[RunRecord],
              costs: dict[str, ModelCost], latencies: dict[str, float], pck: list[dict[str, Any]],
              stats: StatsSettings = StatsSettings(), noise: ImageNoise | None = None) -> Summary:
    """The summary of two models' runs: ``costs`` by label, ``latencies`` by run folder name, ``pck``
    from :func:`pck_rows`, ``noise`` from :func:`pipeline.compare.images.image_bootstrap`."""
    summaries = []
    for label, model in zip(labels, models, strict=True):
        own = sorted((run for run in runs if run.label == label), key=lambda run: run.seed)
        spread = {name: mean_std([run.metrics[name] for run in own]) for name in METRICS}
        summaries.append(ModelSummary(
            label=label, model=model, seeds=[run.seed for run in own],
            mean={name: value[0] for name, value in spread.items()},
            std={name: value[1] for name, value in spread.items()},
            parameters=costs[label].parameters, gflops=costs[label].gflops,
            latency_ms=float(_median([latencies[Path(run.folder).name] for run in own])),
            train_seconds=float(mean_std([run.train_seconds for run in own])[0]),
            epochs=max(run.epochs for run in own)))
    a, b = labels
    by_seed = {label: {run.seed: run for run in runs if run.label == label} for label in labels}
    common = sorted(set(by_seed[a]) & set(by_seed[b]))
    comparisons = {name: paired_comparison(METRIC_NAMES[name], a, b,
                                           {s: (by_seed[a][s].metrics[name], by_seed[b][s].metrics[name])
                                            for s in common}, stats.confidence, stats.permutations,
                                           stats.seed, stats.effect)
                   for name in METRICS}
    first, second = summaries
    ratios = {"parameters": _ratio(first.parameters, second.parameters),
              "gflops": _ratio(first.gflops, second.gflops),
              "latency": _ratio(first.latency_ms, second.latency_ms),
              "train_time": _ratio(first.train_seconds, second.train_seconds)}
    notes = [f"Paired difference = {a} - {b} on the same seed. Interval: paired Student-t interval of the "
             "mean difference over seeds (n - 1 degrees of freedom). p: two-sided sign-flip permutation test "
             f"(exact over all 2^n sign patterns up to {stats.permutations:,}, else that many seeded draws); "
             "it cannot go below 2 / 2^n, so fewer than 6 seeds never reach 0.05. Significant: the interval "
             "excludes zero and p < 1 - confidence. Detectable: the true difference the t-test finds with "
             "80% power at the observed spread of the differences.",
             *([noise.note()] if noise is not None else
               ["Evaluation noise: not measured (compare.resamples 0, or the runs' predictions are not "
                "on this machine and the ledger has no bootstrap of them)."]),
             _latency_note(len(runs), settings.get("latency_measured_now", len(runs)))]
    return Summary(settings, summaries, comparisons, ratios, pck, runs, latencies, noise, notes)


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


# --- rendering --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}"


def tables(summary: Summary) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables: (title, header, rows)."""
    a, b = summary.models
    n = len(summary.comparisons["oks_map"].seeds)
    accuracy = [[m.label, str(len(m.seeds)), *(_pm(m.mean[k], m.std[k]) for k in METRICS)]
                for m in summary.models]
    paired_header = ["seed", *(f"{METRIC_NAMES[k]} {a.label} - {b.label}" for k in METRICS)]
    seeds = summary.comparisons["oks_map"].seeds
    paired = [[str(s), *(f"{summary.comparisons[k].differences[i]:+.4f}" for k in METRICS)]
              for i, s in enumerate(seeds)]
    paired.append(["mean", *(f"{summary.comparisons[k].mean:+.4f}" for k in METRICS)])
    level = f"{summary.comparisons['oks_map'].confidence:.0%}"
    comparisons = [summary.comparisons[k] for k in METRICS]
    intervals = ("n/a" if c.ci_low is None else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]" for c in comparisons)
    paired.append([f"{level} t interval", *intervals])
    paired.append(["sign-flip p", *(_fmt(c.p_value, 3) for c in comparisons)])
    paired.append(["detectable (80% power)", *("none" if c.detectable is None else f"±{c.detectable:.4f}"
                                              for c in comparisons)])
    if comparisons[0].effect is not None:
        paired.append([f"seeds for {comparisons[0].effect:g}",
                       *(_fmt(c.seeds_for_effect) for c in comparisons)])
    imgsz = summary.settings["eval_imgsz"]
    threads = summary.settings["latency_threads"]
    cost_header = ["model", "parameters", f"GFLOPs@{imgsz}", f"CPU latency ms@{imgsz} ({threads} thr)",
                   "training time s (mean)", "epochs"]
    cost = [[m.label, f"{m.parameters:,}", f"{m.gflops:.2f}", f"{m.latency_ms:.2f}", f"{m.train_seconds:.1f}",
             str(m.epochs)] for m in summary.models]
    r = summary.ratios
    cost.append([f"ratio {a.label} / {b.label}", _fmt(r["parameters"]), _fmt(r["gflops"]),
                 _fmt(r["latency"], 3), _fmt(r["train_time"], 3), ""])
    pck_keys = [key for key in (summary.pck[0] if summary.pck else {}) if key != "keypoint"]
    pck = [[row["keypoint"], *(_fmt(row[key], 3) if not key.startswith("difference")
                               else ("n/a" if row[key] is None else f"{row[key]:+.3f}") for key in pck_keys)]
           for row in summary.pck]
    runs = [[run.label, str(run.seed), *(_fmt(run.metrics[k]) for k in METRICS), f"{run.train_seconds:.1f}",
             str(run.epochs), f"{summary.latencies[Path(run.folder).name]:.2f}", Path(run.folder).name]
            for run in summary.runs]
    noise = summary.noise
    noise_rows = [] if noise is None else [
        [str(s), f"{v['difference']:+.4f}", f"{v['sd']:.4f}", f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"]
        for s, v in sorted(noise.per_seed.items())] + [
        ["mean over seeds", f"{comparisons[0].mean:+.4f}", f"{noise.mean_sd:.4f}",
         f"[{noise.mean_low:+.4f}, {noise.mean_high:+.4f}]"]]
    noise_table = [] if noise is None else [
        (f"Evaluation noise: OKS mAP difference, paired bootstrap over the {noise.images} val images "
         f"({noise.resamples} resamples)", ["seed", "difference", "bootstrap sd", "95% of resamples"],
         noise_rows)]
    return [
        (f"Accuracy: mean ± standard deviation over seeds (eval split: {summary.settings['split']})",
         ["model", "seeds", *(METRIC_NAMES[k] for k in METRICS)], accuracy),
        (f"Paired difference per seed ({a.label} - {b.label}), {n} seeds", paired_header, paired),
        *noise_table,
        ("Cost", cost_header, cost),
        ("Per-keypoint PCK (mean over seeds)", ["keypoint", *pck_keys], pck),
        ("Runs", ["model", "seed", *(METRIC_NAMES[k] for k in METRICS), "train s", "epochs", "latency ms",
                  "run"], runs),
    ]


def _settings_line(summary: Summary) -> str:
    s = summary.settings
    return (f"Data `{s['data']}`; {s['epochs']} epochs at {s['imgsz']} px, batch {s['batch']}, device "
            f"{s['device']}, hyp {s['hyp']}; pretrained: {s['pretrained'] or 'none (from scratch)'}; seeds "
            f"{', '.join(map(str, s['seeds']))}; evaluated at {s['eval_imgsz']} px on the {s['split']} "
            "split.")


def document(summary: Summary, plot: bytes) -> Document:
    """The report: settings, verdicts, the tables (the OKS mAP vs latency ``plot`` under Cost), notes."""
    a, b = summary.models
    sections = [Section("Verdict", [Bullets([summary.comparisons[k].verdict() for k in METRICS])])]
    for title, header, rows in tables(summary):
        blocks: list[Block] = [Table(header, rows)]
        if title == "Cost":
            blocks.append(Figure("OKS mAP vs latency", PLOT_FILE, plot))
        sections.append(Section(title, blocks))
    sections.append(Section("Notes", [Bullets(summary.notes)]))
    return Document(f"Comparison: {a.label} vs {b.label}", [_settings_line(summary)], sections)


def markdown(summary: Summary) -> str:
    """report.md (the plot is linked as the file beside it)."""
    return render_markdown(document(summary, b""))


def plot_png(summary: Summary) -> bytes:
    """OKS mAP against CPU latency: one small point per run, each model's mean as a large cross with
    its standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    ax = figure.add_subplot()
    for colour, model in zip(("tab:blue", "tab:orange"), summary.models, strict=False):
        own = [run for run in summary.runs if run.label == model.label]
        ax.scatter([summary.latencies[Path(r.folder).name] for r in own],
                   [r.metrics["oks_map"] or 0.0 for r in own], color=colour, alpha=0.6, s=25,
                   label=f"{model.label} (runs)")
        ax.errorbar([model.latency_ms], [model.mean["oks_map"] or 0.0], yerr=[model.std["oks_map"] or 0.0],
                    color=colour, marker="X", markersize=12, capsize=4, label=f"{model.label} (mean)")
    ax.set_xlabel(f"CPU latency, ms (batch 1, {summary.settings['eval_imgsz']} px)")
    ax.set_ylabel("OKS mAP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def runs_csv(summary: Summary) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    for run in summary.runs:
        folder = Path(run.folder).name
        metrics = ["" if run.metrics[k] is None else f"{run.metrics[k]:.6f}" for k in METRICS]
        writer.writerow([run.label, run.seed, *metrics, f"{run.train_seconds:.3f}", run.epochs,
                         f"{summary.latencies[folder]:.3f}", folder])
    return buffer.getvalue()


def write_reports(summary: Summary, out: Path) -> list[Path]:
    """Write the five files into ``out`` (each atomically); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    png = plot_png(summary)
    paths = [out / "runs.csv", out / "summary.json", out / PLOT_FILE, out / "report.md", out / "report.html"]
    atomic_write_text(paths[0], runs_csv(summary))
    write_json(paths[1], summary.to_dict())
    atomic_write_bytes(paths[2], png)
    atomic_write_text(paths[3], markdown(summary))
    atomic_write_text(paths[4], html_page(document(summary, png)))
    return paths
