"""The DVC pipeline (dvc.yaml) end to end on a tiny copy of the repository: stage order, the no-op second
run, the partial rerun after an augment parameter change, and byte-identical datasets and equal eval
metrics after a forced rerun. One epoch at 64 px on 16 generated demo images (pipeline_repo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipeline_repo import STAGES, clone_built, run, set_params, stages_run, tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DATASETS = ("data/processed/dataset", "data/processed/augmented")


def eval_metrics(repo: Path) -> dict:
    """The eval metrics, less the model's file hash: a checkpoint records its save time, so retrained
    weights with equal tensors still differ in bytes."""
    metrics = json.loads((repo / "reports/eval/metrics.json").read_text(encoding="utf-8"))
    metrics.pop("model_sha256")
    return metrics


@pytest.fixture(scope="module")
def repo(tiny_pipeline, tmp_path_factory) -> Path:
    return clone_built(tiny_pipeline[0], tmp_path_factory.mktemp("dvc-pipeline") / "repo")


def test_first_run_runs_every_stage_in_order(tiny_pipeline):
    path, output = tiny_pipeline
    assert stages_run(output) == STAGES
    lock = yaml.safe_load((path / "dvc.lock").read_text(encoding="utf-8"))
    assert list(lock["stages"]) == STAGES
    # The eval stage evaluates at the size the checkpoint records (the training size), not a params copy.
    assert "--imgsz" not in lock["stages"]["eval"]["cmd"]
    assert "train.imgsz" not in lock["stages"]["eval"]["params"]["cfg/params.yaml"]
    assert json.loads((path / "reports/eval/metrics.json").read_text())["imgsz"] == 64
    for name in ("models/package.zip", "models/package/model.onnx", "reports/eval/report.html",
                 "reports/eval/plots/pr_curve.csv", "models/train/weights/best.pt"):
        assert (path / name).is_file(), name
    # Generated data stays out of git (root .gitignore): the lock is the only file the run changed.
    status = run(path, "git", "status", "--porcelain").stdout.splitlines()
    assert [line[3:] for line in status] == ["dvc.lock"]


def test_second_run_does_nothing(repo):
    output = run(repo, "dvc", "repro").stdout
    assert stages_run(output) == []
    assert "Data and pipelines are up to date." in output


def test_status_is_clean_with_the_comparison_project_shipped(repo):
    """The repository as shipped holds the comparison's own DVC project (compare/, never run here):
    after the demo pipeline the root's `dvc status` has nothing to do."""
    assert (repo / "compare" / "dvc.yaml").is_file() and (repo / "compare" / ".dvc" / "config").is_file()
    status = run(repo, "dvc", "status").stdout
    assert status.strip() == "Data and pipelines are up to date.", status


def test_metrics_and_plots_are_declared(repo):
    metrics = run(repo, "dvc", "metrics", "show", "--json").stdout
    shown = json.loads(metrics)
    files = next(iter(shown.values()))["data"]
    # The demo's metrics only: the comparison's summaries (compare/reports) belong to its own project.
    assert set(files) == {"models/train/metrics.json", "reports/eval/metrics.json"}
    assert "oks_map50" in files["reports/eval/metrics.json"]["data"]
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    assert {"OKS precision-recall (eval split)", "PCK@0.05 per keypoint (eval split)",
            "PCK@0.1 per keypoint (eval split)"} <= set(plots)
    assert any(name.startswith("models/train/dvclive/plots/metrics/") for name in plots)


def test_augment_param_change_reruns_downstream_only(repo):
    converted = tree_digest(repo / DATASETS[0])
    augmented = tree_digest(repo / DATASETS[1])
    set_params(repo, {"augment": {"seed": 1}})
    output = run(repo, "dvc", "repro").stdout
    assert stages_run(output) == ["augment", "train", "eval", "package"]
    assert "Stage 'convert' didn't change, skipping" in output
    assert tree_digest(repo / DATASETS[0]) == converted
    assert tree_digest(repo / DATASETS[1]) != augmented  # another seed, other variants


def test_forced_rerun_is_byte_identical(repo):
    """`dvc repro --force eval` reruns convert, augment, train and eval from scratch."""
    before = {folder: tree_digest(repo / folder) for folder in DATASETS}
    metrics = eval_metrics(repo)
    output = run(repo, "dvc", "repro", "--force", "eval").stdout
    assert stages_run(output) == STAGES[:4]
    assert {folder: tree_digest(repo / folder) for folder in DATASETS} == before
    assert eval_metrics(repo) == metrics
