"""The committed dvc.lock matches the repository as shipped: code, params and commands.

A checkout has no pipeline outputs (they live in DVC's cache), so `dvc status` lists them as not in
cache and the stages that read them as having deleted deps; anything else (a code dep, a param or a
command changed since the lock was written) means the lock is stale: `dvc repro` would rerun
stages for a reason the user never gave, and the metrics the README quotes are not this code's.
"""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_repo import copy_repository, run

pytestmark = pytest.mark.integration


def test_dvc_lock_is_current_for_the_code_and_params_as_shipped(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    produced = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    status = json.loads(run(repo, "dvc", "status", "--json").stdout)
    for stage, changes in status.items():
        for change in changes:
            assert isinstance(change, dict), (stage, change)  # e.g. "changed command"
            for kind, entries in change.items():
                assert kind in ("changed deps", "changed outs"), (stage, kind, entries)
                for path, state in entries.items():
                    if kind == "changed outs":
                        assert state == "not in cache", (stage, path, state)
                        continue
                    made_here = any(path == out or path.startswith(out + "/") for out in produced)
                    assert state == "deleted" and made_here, f"{stage}: {path} {state} since dvc.lock"
