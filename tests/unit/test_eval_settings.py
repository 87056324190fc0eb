"""Settings of ``fdpose eval``: defaults, cfg/params.yaml, command-line overrides, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import EvalParams, load_section, overridden, section_defaults, validate_section
from pipeline.errors import FdposeError

DEFAULTS = section_defaults("eval")


def test_params_then_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  conf: 0.25\n  imgsz: 320\n  pck_thresholds: [0.2]\n")
    settings = overridden(load_section("eval", params), imgsz=None, iou=0.5)
    assert isinstance(settings, EvalParams)
    assert settings.conf == 0.25 and settings.imgsz == 320 and settings.iou == 0.5
    assert settings.pck_thresholds == [0.2]
    assert settings.max_det == DEFAULTS["max_det"]  # untouched keys keep their defaults


def test_repository_params_are_valid():
    """cfg/params.yaml's eval section (what `dvc repro` and the CLI use) passes the checks."""
    params = Path(__file__).resolve().parents[2] / "cfg" / "params.yaml"
    settings = load_section("eval", params)
    assert settings.imgsz is None  # the size the evaluated model records, not a fixed one


@pytest.mark.parametrize(("params", "message"), [
    ({"confidence": 0.1}, "eval.confidence: unknown key 'confidence'; valid keys: split, conf"),
    ({"conf": 1.5}, "eval.conf: expected a number in [0, 1], got 1.5"),
    ({"imgsz": "640"}, "eval.imgsz: expected a positive integer"),
    ({"pck_thresholds": []}, "eval.pck_thresholds: expected a non-empty list"),
    ({"split": "validation"}, "eval.split: expected one of train, val, test"),
])
def test_bad_settings_are_one_clear_error(params, message):
    with pytest.raises(FdposeError) as error:
        validate_section("eval", params, "params.yaml")
    assert message in str(error.value)


def test_cli_reports_bad_values_in_one_line(tmp_path):
    weights, data = tmp_path / "model.pt", tmp_path / "data.yaml"
    weights.write_bytes(b"x")
    data.write_text("{}")
    result = CliRunner().invoke(main, ["eval", "--weights", str(weights), "--data", str(data),
                                       "--out", str(tmp_path / "out"), "--iou", "7"])
    assert result.exit_code == 1
    assert result.output == "Error: eval.iou: expected a number in [0, 1], got 7.0\n"
    assert not (tmp_path / "out").exists()
