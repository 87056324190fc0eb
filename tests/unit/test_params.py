"""The params contract: every section of cfg/params.yaml is typed, and a typo is one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import config
from pipeline.cli import main
from pipeline.errors import FdposeError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "cfg" / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("section", sorted(config.SECTIONS))
def test_repository_params_are_valid_and_complete(section):
    """The shipped file passes the checks, and it spells out every key of every section."""
    settings = config.as_dict(config.load_section(section, REPO_PARAMS))
    assert isinstance(config.load_section(section, REPO_PARAMS), config.SECTIONS[section])
    assert set(settings) == set(config.section_defaults(section))
    written = config.read_params_file(REPO_PARAMS)[section]
    assert set(written) == set(settings), f"cfg/params.yaml {section}: keys missing"


def test_missing_file_or_section_gives_the_defaults(tmp_path):
    assert config.load_section("eval", tmp_path / "absent.yaml") == config.EvalParams()
    absent = config.load_section("eval", tmp_path / "absent.yaml")
    assert config.as_dict(absent) == config.section_defaults("eval")
    assert config.load_section("augment", write(tmp_path, "eval: {conf: 0.5}\n")) == config.AugmentParams()
    assert config.load_section("eval", write(tmp_path, "eval: {conf: 0.5}\n")).conf == 0.5
    package = config.load_section("package", write(tmp_path, "package: {predict: {conf: 0.4}}\n"))
    assert isinstance(package.predict, config.PredictParams) and package.predict.conf == 0.4


def test_defaults_are_fresh_copies(tmp_path):
    first = config.section_defaults("eval")
    first["pck_thresholds"].append(0.5)
    assert config.section_defaults("eval")["pck_thresholds"] == [0.05, 0.1]


@pytest.mark.parametrize(("text", "message"), [
    ("eval: {conf: 2}\n", "eval.conf: expected a number in [0, 1], got 2"),
    ("eval: {imgsz: 3.5}\n", "eval.imgsz: expected a positive integer or null, got 3.5"),
    ("train: {plots: 'yes'}\n", "train.plots: expected true or false, got 'yes'"),
    ("augment: {copies: -1}\n", "augment.copies: expected an integer from 0 to 1000, got -1"),
    ("augment: {copies: 9223372036854775808}\n", "augment.copies: expected an integer from 0 to 1000"),
    ("convert: {from: csv}\n", "convert.from: expected one of label-studio, coco, yolo or null, got 'csv'"),
    ("package: {predict: {kpt_conf: 1.5}}\n", "package.predict.kpt_conf: expected a number in [0, 1]"),
    ("package: {predict: {confidence: 0.5}}\n", "package.predict.confidence: unknown key 'confidence'"),
    ("train: [1, 2]\n", "train: expected a mapping of settings"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("train: {epochs: [\n", "invalid YAML"),
])
def test_bad_values_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    section = "package" if "package" in text else text.split(":")[0].strip("- \n") or "train"
    section = section if section in config.SECTIONS else "train"
    with pytest.raises(FdposeError) as caught:
        config.load_section(section, path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("\ufefftrain:\n  epochs: 3\n".encode())
    assert config.load_section("train", path).epochs == 3


def test_overrides_keep_only_given_values():
    settings = config.apply_overrides({"conf": 0.1, "iou": 0.7}, conf=None, iou=0.5)
    assert settings == {"conf": 0.1, "iou": 0.5}
    params = config.overridden(config.EvalParams(), conf=None, iou=0.5)
    assert (params.conf, params.iou) == (config.EvalParams().conf, 0.5)
    with pytest.raises(FdposeError, match="command line: eval.iou: expected a number in"):
        config.overridden(config.EvalParams(), iou=2.0)


# One command per section: a misspelt key stops the stage with one line naming it, before it reads or
# writes anything.
STAGE_COMMANDS = {
    "convert": ["convert", "--out", "{tmp}/out"],
    "augment": ["augment", "--data", "{tmp}/data.yaml", "--out", "{tmp}/out"],
    "train": ["train", "--data", "{tmp}/data.yaml", "--out", "{tmp}/out"],
    "eval": ["eval", "--weights", "{tmp}/w.pt", "--data", "{tmp}/data.yaml", "--out", "{tmp}/out"],
    "package": ["package", "--weights", "{tmp}/w.pt", "--out", "{tmp}/out"],
    "package.predict": ["predict", "--model", "{tmp}/w.pt", "{tmp}", "--out", "{tmp}/out"],
}


@pytest.mark.parametrize("where", sorted(STAGE_COMMANDS))
def test_unknown_key_stops_the_stage(tmp_path, where):
    section, _, nested = where.partition(".")
    body = f"{{{nested}: {{copiez: 2}}}}" if nested else "{copiez: 2}"
    params = write(tmp_path, f"{section}: {body}\n")
    args = [arg.format(tmp=tmp_path) for arg in STAGE_COMMANDS[where]] + ["--params", str(params)]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 1, outcome.output
    errors = [line for line in outcome.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in outcome.output, outcome.output
    assert f"{where}.copiez: unknown key 'copiez'; valid keys: " in errors[0]
    assert not (tmp_path / "out").exists()
