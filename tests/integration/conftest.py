"""Shared fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server on loopback (see labelstudio_server.py), shared by the session.

    Skipped when its venv (``make ls-venv``) is missing, except under CI=true, where it must run."""
    import labelstudio_server

    if labelstudio_server.executable() is None:
        message = f"Label Studio not installed in {labelstudio_server.LS_VENV}; run `make ls-venv`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = labelstudio_server.start_server(tmp_path_factory.mktemp("label-studio"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A tiny copy of the repository after one full `dvc repro` (see pipeline_repo.py), shared by the
    DVC pipeline and README tests: (path, output of that run). Copy it (clone_built) before changing it."""
    import pipeline_repo

    return pipeline_repo.build_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline") / "repo")


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server (moto) on loopback for one test module (see s3_server.py)."""
    import s3_server

    server = s3_server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """Trained models on a small generated set, each trained on first use and shared by the session (see
    learning.py): ``learned.get("yolov8n-pose.yaml")`` is the stock model after the learning test's 40
    epochs, ``learned.get(model, epochs=1)`` a barely trained one."""
    import learning

    return learning.Models(learning.build_set(tmp_path_factory.mktemp("learning")))
