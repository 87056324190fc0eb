"""A team's round trip through an S3-compatible DVC remote (moto's server on loopback, s3_server.py).

The tiny pipeline (pipeline_repo.py) is pushed to ``s3://fdpose-dvc/...`` with credentials from the
environment only; a fresh ``git clone`` pulls every output back byte for byte and has nothing to rerun;
with the cache gone, the packaged model alone comes back by its path and as the artifact
``fdpose-pose``. A wrong key and an unreachable endpoint end in DVC's error, within a bounded time.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import s3_server
import yaml
from pipeline_repo import clone_built, git_commit, run, stages_run, tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REMOTE = "team"
ARTIFACT = "fdpose-pose"
ARTIFACT_PATH = "models/package.zip"
BOUNDED = 120  # seconds a failing dvc command may take: it must give up, not hang


def lock_outputs(repo: Path) -> list[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    return [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]


def digest(path: Path) -> dict[str, str]:
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return tree_digest(path)


def add_remote(repo: Path, endpoint: str) -> None:
    """The remote as the README sets it up: URL and endpoint in .dvc/config, no credentials."""
    run(repo, "dvc", "remote", "add", "-d", REMOTE, f"s3://{s3_server.BUCKET}/fdpose")
    run(repo, "dvc", "remote", "modify", REMOTE, "endpointurl", endpoint)
    run(repo, "dvc", "remote", "modify", REMOTE, "connect_timeout", "5")
    run(repo, "dvc", "remote", "modify", REMOTE, "read_timeout", "30")


@pytest.fixture(scope="module")
def pushed(tiny_pipeline, tmp_path_factory, s3):
    """The tiny pipeline, its remote committed and everything pushed: (repo, push seconds)."""
    repo = clone_built(tiny_pipeline[0], tmp_path_factory.mktemp("dvc-remote") / "origin")
    add_remote(repo, s3.url)
    git_commit(repo, "pipeline results and the team remote")
    run(repo, "git", "tag", "-a", f"{ARTIFACT}@v0.1.0", "-m", "first model")  # a GTO version of the artifact
    started = time.monotonic()
    output = run(repo, "dvc", "push", extra_env=s3.env(), timeout=BOUNDED).stdout
    seconds = time.monotonic() - started
    assert "pushed" in output, output
    print(f"\ndvc push of the tiny pipeline to the loopback S3 remote: {seconds:.1f} s")
    return repo, seconds


@pytest.fixture(scope="module")
def clone(pushed, tmp_path_factory):
    origin, _ = pushed
    dest = tmp_path_factory.mktemp("dvc-remote") / "clone"
    run(origin, "git", "clone", "-q", str(origin), str(dest))
    return dest


def test_fresh_clone_pulls_every_output_and_has_nothing_to_run(pushed, clone, s3):
    origin, push_seconds = pushed
    outputs = lock_outputs(origin)
    assert {"reports/eval/metrics.json", "models/train/metrics.json", "reports/eval/plots",
            "models/train/dvclive/plots/metrics", ARTIFACT_PATH} <= set(outputs)
    assert not any((clone / out).exists() for out in outputs)  # git alone brings no output
    started = time.monotonic()
    run(clone, "dvc", "pull", extra_env=s3.env(), timeout=BOUNDED)
    pull_seconds = time.monotonic() - started
    print(f"\ndvc pull into a fresh clone: {pull_seconds:.1f} s (push took {push_seconds:.1f} s)")
    for out in outputs:
        assert digest(clone / out) == digest(origin / out), out
    status = run(clone, "dvc", "status").stdout
    assert "Data and pipelines are up to date." in status, status
    output = run(clone, "dvc", "repro").stdout
    assert stages_run(output) == [] and "Data and pipelines are up to date." in output, output
    assert run(clone, "git", "status", "--porcelain").stdout == ""  # the pull changed no tracked file


def test_artifact_alone_comes_back_without_a_cache(pushed, clone, s3):
    """After the round trip above: no cache, no outputs; pulling the artifact restores it alone."""
    origin, _ = pushed
    if not (clone / ARTIFACT_PATH).is_file():
        run(clone, "dvc", "pull", extra_env=s3.env(), timeout=BOUNDED)
    shutil.rmtree(clone / ".dvc" / "cache")
    for out in lock_outputs(origin):
        target = clone / out
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(clone, "dvc", "pull", ARTIFACT_PATH, extra_env=s3.env(), timeout=BOUNDED)
    assert digest(clone / ARTIFACT_PATH) == digest(origin / ARTIFACT_PATH)
    assert not (clone / "models/train/weights/best.pt").exists()  # only what was asked for
    # By name, as a model registry user would: `dvc artifacts get <repo> fdpose-pose`.
    fetched = clone.parent / "fetched" / "fdpose-pose.zip"
    run(clone.parent, "dvc", "artifacts", "get", str(origin), ARTIFACT, "-o", str(fetched),
        extra_env=s3.env(), timeout=BOUNDED)
    assert digest(fetched) == digest(origin / ARTIFACT_PATH)


def test_credentials_are_never_written(pushed, clone, s3):
    """The key lives in the environment only: not in .dvc/config, dvc.lock, any file, nor git history."""
    for repo in pushed[0], clone:
        config = (repo / ".dvc" / "config").read_text(encoding="utf-8")
        assert "endpointurl" in config and "access_key" not in config and "secret" not in config
        for path in repo.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert s3.secret_access_key.encode() not in data, path
                assert s3.access_key_id.encode() not in data, path
        history = run(repo, "git", "log", "--all", "-p").stdout
        assert s3.secret_access_key not in history and s3.access_key_id not in history


def test_wrong_key_is_dvc_error_not_a_hang(pushed, clone, s3):
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)
    (clone / ARTIFACT_PATH).unlink(missing_ok=True)
    result = run(clone, "dvc", "pull", ARTIFACT_PATH, check=False, timeout=BOUNDED,
                 extra_env=s3.env(secret="not-the-key"))
    assert result.returncode != 0, result.stdout
    assert "ERROR" in result.stdout and "Traceback" not in result.stdout, result.stdout
    assert "SignatureDoesNotMatch" in result.stdout or "Forbidden" in result.stdout, result.stdout
    assert not (clone / ARTIFACT_PATH).exists()


def test_unreachable_endpoint_is_dvc_error_not_a_hang(pushed, clone, s3):
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)
    (clone / ARTIFACT_PATH).unlink(missing_ok=True)
    closed = f"http://127.0.0.1:{s3_server.free_port()}"  # nothing listens there
    run(clone, "dvc", "remote", "modify", "--local", REMOTE, "endpointurl", closed)
    try:
        result = run(clone, "dvc", "pull", ARTIFACT_PATH, check=False, timeout=BOUNDED, extra_env=s3.env())
    finally:
        run(clone, "dvc", "remote", "modify", "--local", "--unset", REMOTE, "endpointurl")
    assert result.returncode != 0, result.stdout
    assert "ERROR" in result.stdout and "Traceback" not in result.stdout, result.stdout
    assert "Could not connect" in result.stdout or "connect" in result.stdout.lower(), result.stdout
