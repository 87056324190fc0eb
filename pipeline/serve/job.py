"""One training of ``fdpose serve``, run as its own process so the server keeps predicting.

``python -m pipeline.serve.job --url URL --project ID --model SERVED --out JOB_DIR --models MODELS_DIR
--params PARAMS`` (the key in ``LABEL_STUDIO_API_KEY``): pulls the project's annotations through the
live convert path into ``JOB_DIR/data``, trains with the params file's ``train:`` settings starting from
the served model's checkpoint, evaluates the new and the served model side by side on the dataset's
``eval.split`` (val), and packages the new model into ``MODELS_DIR/<version>`` only if its OKS mAP is at
least the served model's. ``JOB_DIR/result.json`` records the comparison and the decision; the
server swaps the model in. A failure is one ``Error:`` line on stderr and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipeline.config import load_section
from pipeline.errors import FdposeError
from pipeline.io import write_json
from pipeline.model_io import model_version
from pipeline.serve.models import training_checkpoint

COMPARED = ("oks_map", "oks_map50", "box_map")  # metrics recorded for both models; oks_map decides


def _train(data_yaml: Path, out: Path, start: Path, params_path: Path) -> Path:
    from pipeline.train import train

    params = load_section("train", params_path)
    result = train(data_yaml, out, params.model, epochs=params.epochs, imgsz=params.imgsz,
                   batch=params.batch, device=params.device, seed=params.seed,
                   workers=params.workers, plots=False, pretrained=start, hyp=params.hyp,
                   params_source=params_path)
    return result.best


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics.get(key) for key in COMPARED}


def decide(new: dict[str, Any], old: dict[str, Any], split: str, images: int) -> dict[str, Any]:
    """Accept the new model when its OKS mAP is at least the served one's (no score counts as 0)."""
    accepted = (new["oks_map"] or 0.0) >= (old["oks_map"] or 0.0)
    return {"status": "accepted" if accepted else "rejected", "metrics": {"new": new, "old": old},
            "reason": f"OKS mAP {new['oks_map']} {'>=' if accepted else '<'} served {old['oks_map']} on the "
                      f"{split} split ({images} images)"}


def run_job(url: str, project: int, served: Path, out: Path, models_dir: Path, params_path: Path
            ) -> dict[str, Any]:
    """Convert, train, evaluate against the served model, package if at least as good."""
    from pipeline.convert import convert
    from pipeline.evaluate import evaluate
    from pipeline.package.stage import package

    data = convert(out=out / "data", source="label-studio", url=url, project=project, params_path=params_path)
    data_yaml = data.out / "data.yaml"
    start = training_checkpoint(served)
    best = _train(data_yaml, out / "train", start, params_path)
    # Each model is evaluated at the size its checkpoint records (eval.imgsz null), as it is served.
    evaluation = evaluate(best, data_yaml, out / "eval", load_section("eval", params_path), baseline=start)
    metrics = evaluation.metrics()
    split, images = metrics["split"], metrics["num_images"]
    result = {"project": project, "split": split, "images": images,
              **decide(_numbers(metrics), _numbers(metrics["baseline"]), split, images)}
    if result["status"] == "accepted":
        staging = out / "package"
        package(best, out / "eval", staging, load_section("package", params_path), data=data_yaml,
                eval_params=load_section("eval", params_path))
        version = model_version(staging)
        target = models_dir / version
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            staging.rename(target)
        result.update(version=version, path=str(target))
    write_json(out / "result.json", result)
    return result


@click.command()
@click.option("--url", required=True)
@click.option("--project", type=int, required=True)
@click.option("--model", "served", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--models", "models_dir", required=True, type=click.Path(path_type=Path))
@click.option("--params", "params_path", required=True, type=click.Path(path_type=Path))
def main(url: str, project: int, served: Path, out: Path, models_dir: Path, params_path: Path) -> None:
    try:
        result = run_job(url, project, served, out, models_dir, params_path)
    except FdposeError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    click.echo(result["reason"])


if __name__ == "__main__":
    main()
