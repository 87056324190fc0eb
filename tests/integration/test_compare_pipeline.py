"""The comparison experiment's own DVC project (compare/) end to end, tiny: pretraining on the
hard-pretrain corpus, a target with another keypoint layout, three comparisons over one shared run
cache, reports with the t interval, the sign-flip p-value and the image bootstrap; and its outputs
stay out of the root project's `dvc status`. A copy of the repository as shipped, only compare's
params made tiny (one epoch at 64 px, a few images, two seeds)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from pipeline_repo import copy_repository, git_commit, run, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STAGES = ["pretrain-data", "pretrain-convert", "pretrain", "target-data", "target-convert", "target-augment",
          "compare"]
TINY = {"data": {"pretrain_images": 16, "pretrain_split": "0.7,0.3", "target_images": 16,
                 "target_split": "0.5,0.5", "size": 128},
        "train": {"epochs": 1, "imgsz": 64, "batch": 8}, "scratch": {"epochs": 1},
        "compare": {"seeds": [0, 1], "epochs": 1, "imgsz": 64, "batch": 8, "resamples": 5,
                    "latency_repeats": 2}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = copy_repository(tmp_path_factory.mktemp("compare-pipeline") / "repo")
    path = repo / "compare" / "cfg" / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in TINY.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    git_commit(repo, "tiny comparison")
    return repo, run(repo / "compare", "dvc", "repro", timeout=1800).stdout


def test_the_experiment_runs_end_to_end(built):
    repo, output = built
    assert stages_run(output) == STAGES
    compare = repo / "compare"
    runs = compare / "models" / "runs"
    conversions = [json.loads(p.read_text()) for p in runs.glob("*/train/pretrained.json")]
    # Pretrained FDConv runs: 17-keypoint stock checkpoint converted onto the 12-keypoint target.
    assert conversions and all(c["source_kpt_shape"] == [17, 3] and c["target_kpt_shape"] == [12, 3]
                               for c in conversions)
    assert any(c["converted"] for c in conversions) and all("model.22.cv4" in c["reinitialised"]
                                                            for c in conversions)
    # 2 seeds x (scratch: 2 models, pretrained: 2, kernel_num 64: its FDConv runs; stock reused).
    assert len([p for p in (compare / "models" / "runs").iterdir() if p.is_dir()]) == 10
    for name in ("scratch", "pretrained", "pretrained-k64"):
        summary = json.loads((compare / "reports" / name / "summary.json").read_text())
        assert summary["oks_map"]["p_value"] is not None and summary["image_noise"]["resamples"] == 5
        assert (summary["settings"]["pretrained"] is None) == (name == "scratch")
        assert "no significant difference" in summary["verdict"]  # two seeds never are significant
        assert (compare / "reports" / name / "report.md").is_file()


def test_both_projects_are_clean_and_separate(built):
    repo, _ = built
    assert run(repo / "compare", "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    root = run(repo, "dvc", "status").stdout  # the root pipeline was never run here: its stages only
    stages = re.findall(r"^(\S+):$", root, flags=re.MULTILINE)
    assert stages and set(stages) <= {"convert", "augment", "train", "eval", "package"}, root
    # The root's `dvc metrics show` after the demo pipeline: test_dvc_pipeline.py (the demo's only).
