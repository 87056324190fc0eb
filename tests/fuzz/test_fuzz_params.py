"""Mutated settings: ``cfg/params.yaml`` sections (through :func:`pipeline.config.load_section` and the
``fdpose augment`` command) and the augment config (through ``fdpose augment``)."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from fuzzing import check_run, check_yolo_dataset, encoded_yaml, json_values, mutated, snapshot
from hypothesis import event, given
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.config import SECTIONS, as_dict, load_section, section_defaults
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import COCO_PERSON_KEYPOINTS, Skeleton

REPO = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((REPO / "cfg" / "params.yaml").read_text(encoding="utf-8"))
AUGMENT = yaml.safe_load((REPO / "cfg" / "augment.yaml").read_text(encoding="utf-8"))


def with_new_key(draw, doc):
    """``doc`` with, sometimes, one more key in one of its sections (a typo such as ``copiez``)."""
    if not isinstance(doc, dict):
        return doc
    sections = [name for name, value in doc.items() if isinstance(value, dict)]
    if sections and draw(st.booleans()):
        section = draw(st.sampled_from(sections))
        typos = st.sampled_from(["copiez", "seeds", "epoch", "Seed", "", "split ", "from_"])
        key = draw(typos | st.text(max_size=6))
        doc[section][key] = draw(json_values)
    return doc


def check_section(path: Path, section: str) -> bool:
    """One section read: its defaults' keys, each value of the right kind; or one error line naming
    the file (and ``section.key`` where one key is at fault)."""
    try:
        settings = load_section(section, path)
    except FdposeError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(str(path)), message
        return False
    assert isinstance(settings, SECTIONS[section])
    assert as_dict(settings).keys() == section_defaults(section).keys()
    return True


@given(data=st.data())
def test_mutated_params_sections_load_or_fail_in_one_line(data, tmp_path_factory):
    doc = with_new_key(data.draw, mutated(data.draw, json.loads(json.dumps(PARAMS))))
    with tempfile.TemporaryDirectory(prefix="fuzz-params-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_bytes(encoded_yaml(data.draw, doc))
        loaded = [check_section(path, section) for section in SECTIONS]
    event(f"{sum(loaded)} of {len(loaded)} sections loaded")


# --- fdpose augment -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two 32 x 32 training images and one validation image, one figure each: its data.yaml."""
    import cv2

    root = tmp_path_factory.mktemp("fuzz-augment")
    rng = np.random.default_rng(0)
    dataset = Dataset(Skeleton(list(COCO_PERSON_KEYPOINTS), ["person"]))
    for index, split in enumerate(["train", "train", "val"]):
        path = root / f"{index}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        points = np.column_stack([rng.uniform(4, 28, (17, 2)), rng.choice([0, 1, 2], 17)])
        points[points[:, 2] == 0, :2] = 0
        dataset.images.append(ImageRecord(path, path.name, 32, 32, [Instance(0, [2, 2, 30, 30], points)],
                                          split=split))
    return write_yolo(dataset, root / "dataset")


def run_augment(dataset: Path, config: bytes | None, params: bytes, names: tuple[str, ...] = ()
                ) -> tuple[bool, str]:
    """``fdpose augment`` of ``dataset`` with the augment config given (else the one the params
    name) and the params file, and its properties; ``names`` are more files an error may name."""
    with tempfile.TemporaryDirectory(prefix="fuzz-augment-") as tmp:
        root = Path(tmp)
        config_path, params_path = root / "augment.yaml", root / "params.yaml"
        config_path.write_bytes(config if config is not None else b"")
        params_path.write_bytes(params)
        out = root / "out"
        (out / "labels").mkdir(parents=True)
        (out / "data.yaml").write_text("earlier: true\n", encoding="utf-8")
        before, out_before = snapshot(root, skip=out), snapshot(out)
        options = ["--params", str(params_path)]
        if config is not None:
            options += ["--config", str(config_path)]
        result = CliRunner().invoke(main, ["augment", "--data", str(dataset), "--out", str(out),
                                           "--workers", "1", "--quiet", *options])
        succeeded = check_run(result, root, out, before, out_before,
                              [str(config_path), str(params_path), str(dataset.parent), *names])
        if succeeded:
            check_yolo_dataset(out)
            report = json.loads((out / "report.json").read_text(encoding="utf-8"))
            copies = report["copies"]
            assert report["images_out"] == report["images_in"] * (1 + copies), report
            expected = report["instances_in"] * (1 + copies) - report["instances_dropped"]
            assert report["instances_out"] == expected, report
        return succeeded, result.output


@given(data=st.data())
def test_mutated_augment_config_augments_or_fails_in_one_line(tiny_dataset, data):
    config = encoded_yaml(data.draw, mutated(data.draw, json.loads(json.dumps(AUGMENT))))
    succeeded, _ = run_augment(tiny_dataset, config, b"augment: {copies: 1, seed: 0}\n")
    event("augmented" if succeeded else "refused")


def named_config(raw: bytes) -> tuple[str, ...]:
    """The augment config a params file names (as written, and as a path), which an error may name."""
    try:
        named = yaml.safe_load(raw.decode("utf-8-sig"))["augment"]["config"]
    except Exception:  # not YAML, not a mapping, no such key: the params file is what an error names
        return ()
    return (named, str(Path(named))) if isinstance(named, str) and named else ()


@given(data=st.data())
def test_mutated_augment_params_run_or_fail_in_one_line(tiny_dataset, data):
    section = with_new_key(data.draw, mutated(data.draw, {"augment": dict(PARAMS["augment"], copies=1)}))
    raw = encoded_yaml(data.draw, section)
    succeeded, _ = run_augment(tiny_dataset, None, raw, named_config(raw))
    event("augmented" if succeeded else "refused")


# --- what the fuzzing found, fixed (each once a failing example) -------------------------------------

def test_transform_name_with_a_control_character_is_escaped_in_the_error(tiny_dataset):
    # Was "unknown albumentations transform '\x1e'" with the raw character in the item: a line break
    # for str.splitlines and invisible in a terminal.
    succeeded, output = run_augment(tiny_dataset, b'transforms:\n  - "\\x1e": {}\n', b"")
    assert not succeeded and "transforms[0] (\\x1e): unknown albumentations transform" in output


def test_augment_failure_error_starts_its_own_line(tiny_dataset, tmp_path):
    # The progress bar was left open: "augment:   0%|...Error: ..." on one line. The bar is closed on
    # failure now (and --quiet turns it off). A transform that fails only when applied:
    config = tmp_path / "augment.yaml"
    config.write_text("transforms:\n  - OneOf: {transforms: [{HorizontalFlip: {p: 1}}], p: [0.5, 0.5]}\n")
    result = CliRunner().invoke(main, ["augment", "--data", str(tiny_dataset), "--out", str(tmp_path / "out"),
                                       "--workers", "1", "--config", str(config), "--params", os.devnull])
    assert result.exit_code == 1
    errors = [line for line in result.output.split("\n") if "Error: " in line]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and "copy 1: augmentation failed" in errors[0]


def test_copies_beyond_the_limit_are_refused_naming_the_params_file(tiny_dataset):
    # Was accepted: 2**63 copies, a run that never ends.
    succeeded, output = run_augment(tiny_dataset, None, b"augment: {copies: 9223372036854775808}\n")
    assert not succeeded and "params.yaml: augment.copies: expected an integer from 0 to 1000" in output


def test_control_character_in_a_params_key_is_escaped_in_the_error(tiny_dataset):
    # Was "params.yaml: augment.\x1f: unknown key ..." with the raw character in the Error: line.
    succeeded, output = run_augment(tiny_dataset, None, b'augment: {"\\x1f": 1}\n')
    assert not succeeded and "augment.\\x1f: unknown key" in output


def test_augment_config_name_with_a_nul_is_refused_in_one_line(tiny_dataset):
    # Was a ValueError traceback (embedded null byte) opening the config the params name.
    params = b'augment: {config: "a.yaml\\0.txt"}\n'
    succeeded, output = run_augment(tiny_dataset, None, params, ("a.yaml\0.txt",))
    assert not succeeded and "a.yaml\\x00.txt: unusable file name" in output


def test_nan_transform_parameters_give_no_runtime_warning(tiny_dataset):
    # An Affine with NaN parameters: numpy warned "invalid value encountered in det" (the mirror test)
    # on stderr. The instances are lost (their boxes are NaN) and counted as dropped.
    config = b"transforms:\n  - Affine: {scale: [.nan, .nan], p: 1}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        succeeded, output = run_augment(tiny_dataset, config, b"")
    assert succeeded and "instances dropped 2" in output
