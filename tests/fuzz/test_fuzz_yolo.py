"""``fdpose convert --from yolo`` on YOLO-pose datasets with mutated ``data.yaml`` and label files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fuzzing import encoded_yaml, mutated, run_convert
from hypothesis import assume, event, given
from hypothesis import strategies as st

from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.formats.yolo import write_yolo
from pipeline.skeleton import Skeleton

TOKENS = ["nan", "inf", "-inf", "-1", "0", "1", "2", "3", "0.5", "1.5", "-0.25", "1e9", "1e400", "abc", "",
          "0x10", "1_0", "٣", "1,5", "+0.5", "0.5\x00", "9" * 400,
          # numeric extremes: the float maximum, subnormals, -0, past int64, a huge digit string
          "1e308", "-1e308", "1.7976931348623157e308", "5e-324", "-5e-324", "2.2250738585072014e-308", "-0.0",
          "-0", "9223372036854775808", "-9223372036854775809", "1" + "0" * 5000]
OPTIONS = ([], ["--drop-unlabelled"], ["--split", "0.5,0.5"])


@pytest.fixture(scope="module")
def yolo_dataset(image_folder, tmp_path_factory) -> Path:
    """A valid two-split dataset written by our own writer: its data.yaml."""
    skeleton = Skeleton(["head", "left_hand", "right_hand"], ["person", "dog"], edges=[(0, 1), (0, 2)])
    dataset = Dataset(skeleton)
    for name, split, size in (("a.png", "train", (64, 48)), ("b.png", "train", (64, 48)),
                              ("c.png", "val", (40, 30)), ("big.png", "val", (400, 300))):
        points = np.array([[10, 10, 2], [20, 12, 1], [0, 0, 0]], dtype=float)
        instances = [Instance(0, [5, 5, 30, 25], points), Instance(1, [2, 2, 12, 12], points * [0.5, 0.5, 1])]
        dataset.images.append(ImageRecord(image_folder / name, name, *size, instances, split=split))
    return write_yolo(dataset, tmp_path_factory.mktemp("fuzz-yolo") / "dataset")


def mutated_lines(draw, text: str) -> str:
    """A label file's text with a few token and line edits."""
    lines = [line.split(" ") for line in text.splitlines()]
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            lines.append([])
        row = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["token", "drop", "add", "line", "duplicate", "blank"]))
        if action == "token" and lines[row]:
            lines[row][draw(st.integers(0, len(lines[row]) - 1))] = draw(st.sampled_from(TOKENS))
        elif action == "drop" and lines[row]:
            del lines[row][draw(st.integers(0, len(lines[row]) - 1))]
        elif action == "add":
            lines[row].append(draw(st.sampled_from(TOKENS)))
        elif action == "line":
            del lines[row]
        elif action == "duplicate":
            lines.insert(row, list(lines[row]))
        else:
            lines.insert(row, [draw(st.sampled_from(["", " ", "\t"]))])
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(" ".join(tokens) for tokens in lines) + newline


def scans_far(doc: object) -> bool:
    """Whether a data.yaml's folders reach beyond the fuzzing's own folders (an absolute path, or
    ``..`` past them): the reader would then scan whatever is there, as a user asked it to."""
    if not isinstance(doc, dict):
        return False
    values = [doc.get(key) for key in ("path", "train", "val", "test")]
    folders = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return any(isinstance(f, str) and (f.startswith(("/", "\\")) or ":" in f or f.count("..") > 1)
               for f in folders)


def run_yolo(dataset: Path, data_yaml: bytes | None, labels: dict[str, bytes], options: list[str],
             sandbox: Path) -> tuple[bool, str]:
    """Convert a copy of ``dataset`` with its ``data.yaml`` and some label files replaced."""
    with tempfile.TemporaryDirectory(prefix="fuzz-yolo-", dir=sandbox) as tmp:
        root = Path(tmp)
        copy = root / "dataset"
        shutil.copytree(dataset.parent, copy)
        if data_yaml is not None:
            (copy / "data.yaml").write_bytes(data_yaml)
        for name, raw in labels.items():
            (copy / name).write_bytes(raw)
        args = ["--from", "yolo", "--input", str(copy / "data.yaml"), *options]
        return run_convert(root, args, [str(copy)])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """The runs' own folder: ``..`` from a copied dataset stays among the fuzzing's files."""
    return tmp_path_factory.mktemp("fuzz-yolo-runs")


@given(data=st.data())
def test_mutated_yolo_dataset_converts_or_fails_in_one_line(yolo_dataset, sandbox, data):
    root = yolo_dataset.parent
    data_yaml = None
    if data.draw(st.booleans()):
        doc = mutated(data.draw, yaml.safe_load(yolo_dataset.read_text()))
        assume(not scans_far(doc))
        data_yaml = encoded_yaml(data.draw, doc)
    labels = {}
    for label in sorted((root / "labels").rglob("*.txt")):
        if data.draw(st.booleans()):
            raw = mutated_lines(data.draw, label.read_text()).encode("utf-8")
            if data.draw(st.integers(0, 7)) == 0:
                raw = data.draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x80"])) + raw
            labels[label.relative_to(root).as_posix()] = raw
    succeeded, _ = run_yolo(yolo_dataset, data_yaml, labels, data.draw(st.sampled_from(OPTIONS)), sandbox)
    event("converted" if succeeded else "refused")


# --- what the fuzzing found, fixed (each once a failing example) -------------------------------------

def first_label(dataset: Path) -> tuple[str, str]:
    label = sorted((dataset.parent / "labels").rglob("*.txt"))[0]
    return label.relative_to(dataset.parent).as_posix(), label.read_text()


def test_bad_kpt_shape_is_refused_naming_data_yaml(yolo_dataset, sandbox):
    # Was "Error: skeleton: kpt_shape dims must be 2 or 3, got 0", naming no file.
    doc = yaml.safe_load(yolo_dataset.read_text())
    doc["kpt_shape"] = [3, 0]
    succeeded, output = run_yolo(yolo_dataset, yaml.safe_dump(doc).encode(), {}, [], sandbox)
    assert not succeeded and "dataset/data.yaml: kpt_shape dims must be 2 or 3, got 0" in output


def test_label_with_a_negative_width_is_refused(yolo_dataset, sandbox):
    # Was converted into a label line with a zero-width box.
    name, text = first_label(yolo_dataset)
    fields = text.splitlines()[0].split()
    fields[3] = "-1"
    succeeded, output = run_yolo(yolo_dataset, None, {name: (" ".join(fields) + "\n").encode()}, [], sandbox)
    assert not succeeded and f"{name}: line 1: coordinates outside [0, 1]" in output


def test_label_file_not_utf8_is_refused_naming_it(yolo_dataset, sandbox):
    # Was a UnicodeDecodeError traceback.
    name, text = first_label(yolo_dataset)
    succeeded, output = run_yolo(yolo_dataset, None, {name: b"\xff\xfe" + text.encode()}, [], sandbox)
    assert not succeeded and f"{name}: not UTF-8 text" in output


def test_label_file_and_data_yaml_with_a_byte_order_mark_convert(yolo_dataset, sandbox):
    name, text = first_label(yolo_dataset)
    bom = b"\xef\xbb\xbf"
    labels = {name: bom + text.encode()}
    succeeded, output = run_yolo(yolo_dataset, bom + yolo_dataset.read_bytes(), labels, [], sandbox)
    assert succeeded, output


def test_split_folder_named_by_a_control_character_is_escaped_in_the_error(yolo_dataset, sandbox):
    # Was an Error: line broken in two by the raw newline of `train: "\n"` (found by `make fuzz`).
    doc = yaml.safe_load(yolo_dataset.read_text())
    doc["train"] = "\n"
    succeeded, output = run_yolo(yolo_dataset, yaml.safe_dump(doc).encode(), {}, [], sandbox)
    assert not succeeded and "split 'train' folder" in output and "\\n does not exist" in output, output
