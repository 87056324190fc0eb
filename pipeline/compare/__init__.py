"""``fdpose compare``: does FDConv pay on your data? Two models over seeds, with intervals and cost.

Both models train with identical settings on every seed (the same pretrained start when one is
given: the stock checkpoint as it is for the stock model, converted for the FDConv one), and every
run is evaluated by the eval stage on the same split. With a single FDConv model, its stock twin
(:func:`stock_model_file`) is the second. Runs are cached one folder per (model, seed)
(:mod:`pipeline.compare.runs`): more seeds train only the new runs, an interrupted compare resumes.
The report (:mod:`pipeline.compare.report`) gives per-model mean and standard deviation, the paired
difference per seed (first - second) with a t interval, a sign-flip p-value, the effect it could
detect and a verdict (:mod:`pipeline.stats`), the evaluation noise from a bootstrap over the val
images (:mod:`pipeline.compare.images`), cost beside accuracy (:mod:`pipeline.compare.cost`) and
per-keypoint PCK.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import click

from pipeline.compare.cost import ModelCost, measure_latency, model_cost
from pipeline.compare.images import ImageNoise, image_bootstrap, run_predictions
from pipeline.compare.ledger import find as ledger_find
from pipeline.compare.ledger import record as ledger_record
from pipeline.compare.report import StatsSettings, Summary, pck_rows, summarize, write_reports
from pipeline.compare.runs import (
    RunRecord,
    RunSettings,
    RunSpec,
    dataset_fingerprint,
    execute_all,
    model_code_fingerprint,
)
from pipeline.config import PARAMS_FILE, CompareParams, EvalParams, as_dict, load_section, overridden
from pipeline.errors import FdposeError
from pipeline.formats.yolo import load_data_yaml
from pipeline.io import write_json
from pipeline.skeleton import Skeleton
from pipeline.train import resolve_device
from pipeline.weights import resolve_weights

_FDCONV_BLOCK = re.compile(r"-[A-Za-z0-9]+_FDConv(?=\.ya?ml$)")  # yolov8n-pose-C2f_FDConv.yaml


def stock_model_file(model: str) -> str:
    """The stock model of the same family and scale as an FDConv model YAML: ultralytics' own YAML of
    that name without the FDConv block (``yolov8n-pose-C2f_FDConv.yaml`` -> ``yolov8n-pose.yaml``,
    ``yolo11s-pose-C3k2_FDConv.yaml`` -> ``yolo11s-pose.yaml``)."""
    name = Path(model).name
    twin, count = _FDCONV_BLOCK.subn("", name)
    if not count:
        raise FdposeError("not an FDConv model YAML (<family><scale>-pose-<Block>_FDConv.yaml), so it has no "
                          "stock twin; give the second model as --models A,B", item=f"--models {model}")
    return twin


def keypoint_names(data_yaml: Path) -> list[str]:
    """The keypoint names of a YOLO-pose dataset, in order."""
    data, _ = load_data_yaml(data_yaml)
    return list(Skeleton.from_data_yaml(data, source=data_yaml).keypoint_names)


def labels_for(models: list[str]) -> list[str]:
    """Report labels: file names without the suffix, a duplicate told apart by ``#2``."""
    labels = [Path(model).stem for model in models]
    if len(labels) == 2 and labels[0] == labels[1]:
        labels[1] += "#2"
    return labels


def image_noise(records: list[RunRecord], labels: list[str], data: Path, cache_dir: Path, resamples: int,
                seed: int) -> ImageNoise | None:
    """The image bootstrap of the seeds' OKS mAP differences (:mod:`pipeline.compare.images`), cached in
    ``cache_dir`` (the ledger, else the run cache) under a hash of the runs, their evaluation and the
    bootstrap settings; None when ``resamples`` is 0, no seed has both runs, or it is not cached and
    some run's predictions are not on this machine."""
    import hashlib
    import json

    by_seed = {label: {r.seed: r for r in records if r.label == label} for label in labels}
    seeds = sorted(set(by_seed[labels[0]]) & set(by_seed[labels[1]]))
    if not resamples or not seeds:
        return None
    pairs = [(by_seed[labels[0]][s], by_seed[labels[1]][s]) for s in seeds]
    key = json.dumps([[a.key, a.eval_key, b.key, b.eval_key] for a, b in pairs] + [resamples, seed])
    cache = cache_dir / f"image-noise-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if cache.is_file():
        values = json.loads(cache.read_text(encoding="utf-8"))
        values["per_seed"] = {int(k): v for k, v in values["per_seed"].items()}
        return ImageNoise(**values)
    evaluated = [Path(r.folder) / f"eval-{r.eval_key}" for pair in pairs for r in pair]
    if not all((folder / "predictions.json").is_file() for folder in evaluated):
        return None
    gt = None
    predictions = {}
    for s, (a, b) in zip(seeds, pairs, strict=True):
        gt, first = run_predictions(Path(a.folder) / f"eval-{a.eval_key}")
        predictions[s] = (first, run_predictions(Path(b.folder) / f"eval-{b.eval_key}")[1])
    sigmas = list(Skeleton.from_data_yaml(load_data_yaml(data)[0], source=data).sigmas)
    noise = image_bootstrap(gt, predictions, sigmas, resamples, seed)
    write_json(cache, noise.to_dict())
    return noise


def _from_ledger(ledger: Path, folder: Path, key: str, eval_key: str, label: str) -> RunRecord | None:
    entry = ledger_find(ledger, folder, key, eval_key)
    return entry.run_record(folder, label) if entry else None


def measure_costs(records: list[RunRecord], labels: list[str], imgsz: int, params: CompareParams,
                  ledger: Path | None) -> tuple[dict[str, ModelCost], dict[str, float], int]:
    """Each model's parameters and GFLOPs, each run's latency (by run folder name) and how many runs
    were timed now: side by side, those whose weights are here; the ledger's figures for the others
    (runs taken from it, measured in the sitting that wrote them)."""
    here = [r for r in records if r.weights.is_file()]
    entries = {}
    for run in (r for r in records if not r.weights.is_file()):
        entry = ledger_find(ledger, Path(run.folder), run.key, run.eval_key) if ledger else None
        if entry is None:
            raise FdposeError("the run's weights are missing and no ledger entry has its key",
                              path=run.weights)
        entries[Path(run.folder).name] = (run.label, entry)
    costs = {}
    for label in labels:
        present = next((r for r in here if r.label == label), None)
        costs[label] = (model_cost(present.weights, imgsz) if present else
                        next(e.model_cost() for own, e in entries.values() if own == label))
    timed = measure_latency([r.weights for r in here], imgsz, repeats=params.latency_repeats,
                            threads=params.latency_threads) if here else []
    latencies = {Path(r.folder).name: ms for r, ms in zip(here, timed, strict=True)}
    latencies.update({name: entry.latency_ms for name, (_, entry) in entries.items()})
    return costs, latencies, len(here)


@dataclass
class CompareResult:
    """A finished comparison: where it wrote its reports and what it ran now."""

    out: Path
    report: Summary
    files: list[Path]
    trained: list[str] = field(default_factory=list)  # run folders trained, resumed or evaluated now

    def summary(self) -> str:
        """The lines ``fdpose compare`` prints: runs, each model's mean, the verdict, the files."""
        a, b = self.report.models
        cached = len(self.report.runs) - len(self.trained)
        lines = [f"{len(self.report.runs)} runs ({len(self.trained)} run now, {cached} cached)"]
        for model in (a, b):
            lines.append(f"{model.label}: OKS mAP {model.mean['oks_map']:.4f} ± {model.std['oks_map']:.4f}, "
                         f"latency {model.latency_ms:.2f} ms, {model.parameters:,} parameters")
        lines.append(self.report.comparisons["oks_map"].verdict())
        if self.report.noise is not None:
            lines.append(self.report.noise.note())
        lines.append(f"wrote {self.out}: runs.csv, summary.json, report.md, report.html")
        return "\n".join(lines)


def _settings(data: Path, params: CompareParams, eval_params: dict) -> RunSettings:
    device, _ = resolve_device(params.device)
    eval_imgsz = params.eval_imgsz or params.imgsz
    eval_settings = {k: v for k, v in eval_params.items() if k not in ("split", "imgsz")}
    return RunSettings(data=data, epochs=params.epochs, imgsz=params.imgsz, batch=params.batch,
                       device=device, hyp=dict(params.hyp), split=params.split, eval_imgsz=eval_imgsz,
                       eval_params=eval_settings, code_sha256=model_code_fingerprint())


def compare(data: str | Path, out: str | Path, params: CompareParams | None = None,
            eval_params: EvalParams | None = None) -> CompareResult:
    """Train and evaluate two models on every seed (cached per run), then write the reports into ``out``.

    ``params``: the ``compare:`` section (default: its built-in defaults); ``eval_params``: the
    ``eval:`` section, whose scoring settings every run's evaluation uses.
    """
    params = params or CompareParams()
    eval_params = eval_params or EvalParams()
    models = [str(m) for m in params.models]
    if len(models) == 1:
        models.append(stock_model_file(models[0]))
    if len(models) != 2:
        raise FdposeError(f"compare takes one or two models, got {len(models)}", item="--models")
    if len(set(params.seeds)) != len(params.seeds):
        raise FdposeError(f"seeds repeat: {params.seeds}", item="--seeds")
    given, data = str(data), Path(data).resolve()
    if not data.is_file():
        raise FdposeError("data.yaml not found", path=data)
    pretrained = str(resolve_weights(params.pretrained)) if params.pretrained else None
    settings = _settings(data, params, as_dict(eval_params))
    labels = labels_for(models)
    data_hash = dataset_fingerprint(data)
    ledger = Path(params.ledger) if params.ledger else None
    reuse = functools.partial(_from_ledger, ledger) if ledger else None
    # Seed by seed: an interrupted compare leaves complete pairs behind.
    specs = [RunSpec(label, model, seed, pretrained) for seed in params.seeds
             for label, model in zip(labels, models, strict=True)]
    records = execute_all(specs, settings, Path(params.runs), data_hash, reuse, params.jobs)
    costs, latencies, measured = measure_costs(records, labels, settings.eval_imgsz, params, ledger)
    report_settings = {"data": given, "models": models, "seeds": list(params.seeds),
                       "epochs": settings.epochs, "imgsz": settings.imgsz, "batch": settings.batch,
                       "device": settings.device, "hyp": settings.hyp, "pretrained": params.pretrained,
                       "split": settings.split, "eval_imgsz": settings.eval_imgsz,
                       "latency_threads": params.latency_threads, "runs": str(params.runs),
                       "ledger": params.ledger, "latency_measured_now": measured}
    pck = pck_rows(labels, records, keypoint_names(data), settings.eval_params["pck_thresholds"])
    noise = image_noise(records, labels, data, ledger or Path(params.runs), params.resamples,
                        params.bootstrap_seed)
    summary = summarize(report_settings, labels, models, records, costs, latencies, pck,
                        StatsSettings(params.confidence, params.permutations, params.bootstrap_seed,
                                      params.effect), noise)
    out = Path(out)
    files = write_reports(summary, out)
    for run in (r for r in records if ledger and r.weights.is_file()):
        ledger_record(ledger, run, costs[run.label], latencies[Path(run.folder).name])
    return CompareResult(out, summary, files, [Path(r.folder).name for r in records if not r.cached])


def _int_list(value: str | None, option: str) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise FdposeError("expected comma-separated integers, e.g. 0,1,2", item=f"{option} {value}") from None


@click.command("compare")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YOLO-pose data.yaml: both models train on its train split and are evaluated on --split.")
@click.option("--models", default=None,
              help="FDCONV.yaml[,STOCK.yaml]; one FDConv model: its stock twin is the second.  [params]")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2.  [params: compare.seeds]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/compare"),
              show_default=True, help="Report folder: runs.csv, summary.json, report.md, report.html.")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run cache folder, one subfolder per (model, seed).  [params: compare.runs]")
@click.option("--ledger", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to commit: each finished run's key, record and cost; a run missing from --runs "
                   "whose key matches is reused from it.  [params: compare.ledger]")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Runs trained at once, each in its own process on its share of the cores.  "
                   "[params: compare.jobs]")
@click.option("--epochs", type=int, default=None, help="[params: compare.epochs]")
@click.option("--imgsz", type=int, default=None, help="Training image size.  [params: compare.imgsz]")
@click.option("--eval-imgsz", type=int, default=None, help="Eval and latency size (default: --imgsz).")
@click.option("--batch", type=int, default=None, help="[params: compare.batch]")
@click.option("--device", default=None, help="auto | cpu | 0 | 0,1  [params: compare.device]")
@click.option("--pretrained", default=None,
              help="Stock pose checkpoint both models start from (converted for the FDConv one): a file, an "
                   "official name (yolov8n-pose.pt) or an http(s) URL (optionally #sha256=<hex>).")
@click.option("--effect", type=float, default=None,
              help="A difference worth finding (e.g. 0.01 OKS mAP): the report says how many seeds detect it "
                   "with 80% power.  [params: compare.effect]")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default=PARAMS_FILE,
              show_default=True, help="Params file whose compare: section sets the defaults.")
def compare_command(data: Path, models: str | None, seeds: str | None, out: Path, runs: Path | None,
                    ledger: Path | None, jobs: int | None, epochs: int | None, imgsz: int | None,
                    eval_imgsz: int | None, batch: int | None, device: str | None, pretrained: str | None,
                    effect: float | None, params_path: Path) -> None:
    """Train two models on several seeds; report accuracy with confidence intervals, and cost."""
    model_list = [part.strip() for part in models.split(",") if part.strip()] if models else None
    params = overridden(load_section("compare", params_path), models=model_list,
                        seeds=_int_list(seeds, "--seeds"), runs=str(runs) if runs is not None else None,
                        ledger=str(ledger) if ledger is not None else None, jobs=jobs,
                        epochs=epochs, imgsz=imgsz, eval_imgsz=eval_imgsz, batch=batch, device=device,
                        pretrained=pretrained, effect=effect)
    result = compare(data, out, params, load_section("eval", params_path))
    click.echo(result.summary())
