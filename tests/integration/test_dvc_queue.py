"""One person, many experiments: DVC's experiment queue runs two trainings of the tiny pipeline at once,
and two `dvc repro` in one repository do not run over each other.

Queued experiments run in temporary copies of the repository (DVC's queue workers), so each has its own
``models/train.partial`` staging folder and outputs; ``fdpose train`` gives ultralytics a settings
folder of its own per run (pipeline/train.py). Tested on copies of the tiny pipeline (pipeline_repo.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pipeline_repo import clone_built, env, experiments, git_commit, run, stages_run, tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SEEDS = (1, 2)
QUEUE_BOUND = 900  # seconds the two queued experiments may take, together, before the test gives up
SETTINGS_LINE = re.compile(r"Ultralytics Settings v[\d.]+ file .*?at '([^']+)'", re.DOTALL)


def queue_status(repo: Path) -> dict[str, str]:
    """Experiment name -> state (Queued, Running, Success, Failed) from `dvc queue status`."""
    states = {}
    for line in run(repo, "dvc", "queue", "status").stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] != "Task":  # Task  Name  Created  Status
            states[words[1]] = words[-1]
    return states


def wait_for_queue(repo: Path, names: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + QUEUE_BOUND
    while time.monotonic() < deadline:
        states = queue_status(repo)
        if all(states.get(name) in {"Success", "Failed"} for name in names):
            return {name: states[name] for name in names}
        time.sleep(3)
    raise AssertionError(f"queued experiments still running after {QUEUE_BOUND} s: {queue_status(repo)}")


@pytest.fixture(scope="module")
def queued(tiny_pipeline, tmp_path_factory):
    """Two experiments (train.seed 1 and 2) queued and run by two workers: (repo, states, seconds)."""
    repo = clone_built(tiny_pipeline[0], tmp_path_factory.mktemp("dvc-queue") / "repo")
    git_commit(repo, "tiny pipeline results")
    names = [f"seed-{seed}" for seed in SEEDS]
    for name, seed in zip(names, SEEDS, strict=True):
        run(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"cfg/params.yaml:train.seed={seed}")
    started = time.monotonic()
    run(repo, "dvc", "queue", "start", "-j", "2")
    try:
        states = wait_for_queue(repo, names)
    finally:
        run(repo, "dvc", "queue", "stop", "--kill", check=False)
    seconds = time.monotonic() - started
    print(f"\ntwo queued experiments of the tiny pipeline, two workers: {seconds:.1f} s")
    return repo, states, seconds


def test_two_queued_experiments_run_at_once(queued):
    repo, states, _ = queued
    logs = {name: run(repo, "dvc", "queue", "logs", name).stdout for name in states}
    assert all(states[name] == "Success" for name in states), (states, logs)
    # Each ran the stages the seed changes, in its own temporary copy: none in the workspace.
    for log in logs.values():
        assert "Running stage 'train'" in log and "Running stage 'package'" in log, log
        assert "Stage 'convert' didn't change, skipping" in log, log
    assert not (repo / "models" / "train.partial").exists()
    # ultralytics' settings file: one folder per run (pipeline/train.py), never a shared one.
    folders = [SETTINGS_LINE.findall(log) for log in logs.values()]
    run_folders = {part for found in folders for part in Path(found[0]).parts
                   if part.startswith("fdpose-ultralytics-")}
    assert all(len(found) == 1 for found in folders) and len(run_folders) == len(SEEDS), folders
    # The workspace was not touched while they ran.
    assert "Data and pipelines are up to date." in run(repo, "dvc", "status").stdout
    assert run(repo, "git", "status", "--porcelain").stdout == ""


def test_exp_show_lists_both_with_metrics(queued):
    repo, states, _ = queued
    shown = experiments(repo)
    assert all(data["error"] is None for data in shown.values()), shown
    models = {}
    for name, seed in zip(states, SEEDS, strict=True):
        data = shown[name]
        assert data["experiment"] and data["params"]["cfg/params.yaml"]["data"]["train"]["seed"] == seed
        evaluated = data["metrics"]["reports/eval/metrics.json"]["data"]
        trained = data["metrics"]["models/train/metrics.json"]["data"]
        assert "oks_map50" in evaluated and trained["epochs"] == 1  # one epoch: the figure judges nothing
        models[name] = evaluated["model_sha256"]
    assert len(set(models.values())) == len(SEEDS)  # two seeds, two models: neither overwrote the other


def test_exp_apply_brings_one_back(queued):
    repo, states, _ = queued
    name = list(states)[1]
    expected = experiments(repo)[name]["metrics"]["reports/eval/metrics.json"]["data"]
    run(repo, "dvc", "exp", "apply", name)
    params = yaml.safe_load((repo / "cfg/params.yaml").read_text(encoding="utf-8"))
    assert params["train"]["seed"] == SEEDS[1]
    applied = json.loads((repo / "reports/eval/metrics.json").read_text(encoding="utf-8"))
    assert {key: applied[key] for key in expected} == expected  # (exp show leaves out lists and nulls)
    # The figures shown for the experiment are those of the model it trained, which apply brought back.
    best = repo / "models" / "train" / "weights" / "best.pt"
    assert hashlib.sha256(best.read_bytes()).hexdigest() == expected["model_sha256"]
    assert "Data and pipelines are up to date." in run(repo, "dvc", "status").stdout


@pytest.fixture()
def busy_repo(tiny_pipeline, tmp_path):
    return clone_built(tiny_pipeline[0], tmp_path / "repo")


def test_second_repro_fails_fast_on_the_lock(busy_repo):
    repo = busy_repo
    datasets = tree_digest(repo / "data/processed")
    first = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train"], cwd=repo, env=env(),
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = []
        for line in first.stdout:  # wait until the first holds the repository lock and runs a stage
            lines.append(line)
            if line.startswith("Running stage"):
                break
        second = run(repo, "dvc", "repro", check=False, timeout=120)
        assert first.poll() is None, "the first repro ended before the second was refused"
        assert second.returncode != 0
        # DVC's lock: the repository lock, or (while a stage runs) the lock on the stage's paths, which
        # names the process holding it.
        assert ("Unable to acquire lock" in second.stdout
                or re.search(rf"is being blocked by:\s+\(PID {first.pid}\)", second.stdout)), second.stdout
        lines.extend(first.stdout)
        assert first.wait(timeout=600) == 0, "".join(lines)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # Nothing corrupted: the retrained model matches its lock entry, the datasets are byte-identical,
    # and the rest of the pipeline follows the new model.
    assert "Data and pipelines are up to date." in run(repo, "dvc", "status", "train").stdout
    assert tree_digest(repo / "data/processed") == datasets
    rest = run(repo, "dvc", "repro").stdout
    assert stages_run(rest) == ["eval", "package"], rest
