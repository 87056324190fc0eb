"""``fdpose compare``: does FDConv pay on your data? Two models over seeds, with intervals and cost.

Both models train with identical settings on every seed (the same pretrained start when one is
given: the stock checkpoint as it is for the stock model, converted for the FDConv one), and every
run is evaluated by the eval stage on the same split. With a single FDConv model, its stock twin
(:func:`stock_model_file`) is the second. Runs are cached one folder per (model, seed)
(:mod:`pipeline.compare.runs`): more seeds train only the new runs, an interrupted compare resumes.
The report (:mod:`pipeline.compare.report`) gives per-model mean and standard deviation, the paired
difference per seed (first - second) with a bootstrap interval and a verdict, cost beside accuracy
(:mod:`pipeline.compare.cost`) and per-keypoint PCK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import click

from pipeline.compare.cost import measure_latency, model_cost
from pipeline.compare.report import Summary, pck_rows, summarize, write_reports
from pipeline.compare.runs import (
    RunRecord,
    RunSettings,
    RunSpec,
    dataset_fingerprint,
    execute,
    model_code_fingerprint,
)
from pipeline.config import PARAMS_FILE, apply_overrides, as_dict, load_section
from pipeline.errors import FdposeError
from pipeline.formats.yolo import load_data_yaml
from pipeline.skeleton import Skeleton
from pipeline.train import resolve_device

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
        lines.append(f"wrote {self.out}: runs.csv, summary.json, report.md, report.html")
        return "\n".join(lines)


def _settings(data: Path, params: dict, eval_params: dict) -> RunSettings:
    device, _ = resolve_device(params["device"])
    eval_imgsz = params["eval_imgsz"] or params["imgsz"]
    eval_settings = {k: v for k, v in eval_params.items() if k not in ("split", "imgsz")}
    return RunSettings(data=data, epochs=params["epochs"], imgsz=params["imgsz"], batch=params["batch"],
                       device=device, hyp=dict(params["hyp"]), split=params["split"], eval_imgsz=eval_imgsz,
                       eval_params=eval_settings, code_sha256=model_code_fingerprint())


def compare(data: str | Path, out: str | Path, models: list[str] | None = None,
            seeds: list[int] | None = None, *, runs: str | Path | None = None,
            params_path: str | Path = PARAMS_FILE, **overrides) -> CompareResult:
    """Train and evaluate two models on every seed (cached per run), then write the reports into ``out``.

    Settings left None come from the ``compare:`` section of ``params_path``; ``overrides``: ``epochs``,
    ``imgsz``, ``batch``, ``device``, ``pretrained``, ``eval_imgsz``, ``hyp``.
    """
    params = apply_overrides(as_dict(load_section("compare", params_path)), models=models, seeds=seeds,
                             runs=runs, **overrides)
    models = [str(m) for m in params["models"]]
    if len(models) == 1:
        models.append(stock_model_file(models[0]))
    if len(models) != 2:
        raise FdposeError(f"compare takes one or two models, got {len(models)}", item="--models")
    if len(set(params["seeds"])) != len(params["seeds"]):
        raise FdposeError(f"seeds repeat: {params['seeds']}", item="--seeds")
    given, data = str(data), Path(data).resolve()
    if not data.is_file():
        raise FdposeError("data.yaml not found", path=data)
    pretrained = str(Path(params["pretrained"]).resolve()) if params["pretrained"] else None
    if pretrained and not Path(pretrained).is_file():
        raise FdposeError("pretrained checkpoint not found", path=pretrained)
    settings = _settings(data, params, as_dict(load_section("eval", params_path)))
    labels = labels_for(models)
    data_hash = dataset_fingerprint(data)
    records: list[RunRecord] = []
    for seed in params["seeds"]:  # seed by seed: an interrupted compare leaves complete pairs behind
        for label, model in zip(labels, models, strict=True):
            spec = RunSpec(label, model, seed, pretrained)
            records.append(execute(spec, settings, Path(params["runs"]), data_hash))
    costs = {label: model_cost(next(r.weights for r in records if r.label == label), settings.eval_imgsz)
             for label in labels}
    latency = measure_latency([r.weights for r in records], settings.eval_imgsz,
                              repeats=params["latency_repeats"], threads=params["latency_threads"])
    report_settings = {"data": given, "models": models, "seeds": list(params["seeds"]),
                       "epochs": settings.epochs, "imgsz": settings.imgsz, "batch": settings.batch,
                       "device": settings.device, "hyp": settings.hyp, "pretrained": pretrained,
                       "split": settings.split, "eval_imgsz": settings.eval_imgsz,
                       "latency_threads": params["latency_threads"], "runs": str(params["runs"])}
    pck = pck_rows(labels, records, keypoint_names(data), settings.eval_params["pck_thresholds"])
    summary = summarize(report_settings, labels, models, records, costs,
                        {Path(r.folder).name: ms for r, ms in zip(records, latency, strict=True)}, pck,
                        params["confidence"], params["resamples"], params["bootstrap_seed"])
    out = Path(out)
    files = write_reports(summary, out)
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
@click.option("--epochs", type=int, default=None, help="[params: compare.epochs]")
@click.option("--imgsz", type=int, default=None, help="Training image size.  [params: compare.imgsz]")
@click.option("--eval-imgsz", type=int, default=None, help="Eval and latency size (default: --imgsz).")
@click.option("--batch", type=int, default=None, help="[params: compare.batch]")
@click.option("--device", default=None, help="auto | cpu | 0 | 0,1  [params: compare.device]")
@click.option("--pretrained", type=click.Path(dir_okay=False), default=None,
              help="Stock pose checkpoint both models start from (converted for the FDConv one).")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default=PARAMS_FILE,
              show_default=True, help="Params file whose compare: section sets the defaults.")
def compare_command(data: Path, models: str | None, seeds: str | None, out: Path, runs: Path | None,
                    epochs: int | None, imgsz: int | None, eval_imgsz: int | None, batch: int | None,
                    device: str | None, pretrained: str | None, params_path: Path) -> None:
    """Train two models on several seeds; report accuracy with confidence intervals, and cost."""
    model_list = [part.strip() for part in models.split(",") if part.strip()] if models else None
    result = compare(data, out, model_list, _int_list(seeds, "--seeds"), runs=runs, params_path=params_path,
                     epochs=epochs, imgsz=imgsz, eval_imgsz=eval_imgsz, batch=batch, device=device,
                     pretrained=pretrained)
    click.echo(result.summary())
