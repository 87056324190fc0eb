"""Mutations of valid inputs, and the properties every command run on them must keep.

:func:`mutated` applies a few random edits to a JSON-like document (drop, duplicate, retype, re-range
or resize any field; replace it with another value; special numbers and strings: NaN, infinities,
huge and negative numbers; numeric extremes (:data:`EXTREMES`) in any numeric field; unicode, NUL,
lone surrogates, path-like names). :func:`encoded` turns it into bytes the way real files differ (a
byte-order mark, escaped or raw unicode, truncation).

:func:`check_run` holds the properties of one command run: it succeeded, or it exited 1 with exactly
one ``Error:`` line naming a file; never a traceback; nothing written outside ``--out``; a failed run
leaves the earlier output as it was. :func:`check_yolo_dataset` checks what a successful run wrote.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from pipeline.errors import printable

SPECIAL_NUMBERS = [
    math.nan, math.inf, -math.inf, 0, -0.0, 1, -1, 2, 3, 0.5, 1.5, 2.5, 99.99, 100, 100.5, 150, -20, 45, 90,
    180, 270, 360, -90, 1e308, -1e308, 5e-324, 2**31, 2**53 + 1, 2**63, 2**64 + 1, 10**30, -(10**30),
    True, False,
]
# Numeric extremes, drawn into numeric fields by the "extreme" edit: overflow on scaling (a Label Studio
# percentage times the image size), NaN from inf - inf or inf * 0, subnormals, integers past int64,
# numbers as huge strings.
EXTREMES = [
    1e308, -1e308, 1.7976931348623157e308, math.inf, -math.inf, math.nan, -0.0, 5e-324, -5e-324,
    2.2250738585072014e-308, 1e-310, 2**63, -(2**63), 2**63 - 1, 2**64, 10**400, "1e308", "-1e308", "nan",
    "9" * 400, "1" + "0" * 5000,
]
SPECIAL_STRINGS = [
    "", " ", "a.png", "b.png", "c.png", "./a.png", "sub/../a.png", "../a.png", "../../etc/passwd",
    "/etc/passwd", "C:\\images\\a.png", "\\\\server\\share\\a.png", "http://example.com/a.png",
    "file:///a.png", "a.png\x00.txt",
    "\ud800.png", "ü🙂.png", "a" * 300, "nan", "inf", "1", "-1", "1e400", "broken.png", "empty.png",
    "folder.png", "turned.jpg", "big.png", "person", "dog", "head", "neck", "tail", "unknown", "occluded",
    "2024-02-30", "null", "true", "{", "%s%n", "\n", "\r\n", "\t",
]
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(SPECIAL_STRINGS),
)
json_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
OPERATIONS = ("drop", "duplicate", "replace", "special", "resize", "retype", "extreme")


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _numeric(node: Any) -> bool:
    return isinstance(node, (int, float)) and not isinstance(node, bool)


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _special(draw: Any, node: Any) -> Any:
    if isinstance(node, str):
        return draw(st.sampled_from(SPECIAL_STRINGS))
    if _numeric(node):
        return draw(st.sampled_from(SPECIAL_NUMBERS + EXTREMES))
    return draw(st.sampled_from(SPECIAL_NUMBERS + SPECIAL_STRINGS))


def _resize(draw: Any, node: Any) -> Any:
    if isinstance(node, list):
        if node and draw(st.booleans()):
            return node + [copy.deepcopy(draw(st.sampled_from(node)))] * draw(st.integers(1, 3))
        return node[:draw(st.integers(0, max(len(node) - 1, 0)))]
    if isinstance(node, str):
        return node[:draw(st.integers(0, len(node)))] + draw(st.sampled_from(["", "x", "/", ".."]))
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        if isinstance(node, int):  # integer arithmetic: 10**400 / 1000 or + 0.5 would overflow a float
            return draw(st.sampled_from([-node, node * 1000, node // 1000, node + 1, node - 1]))
        return draw(st.sampled_from([-node, node * 1000, node / 1000, node + 0.5, node - 1]))
    return node


def _retype(node: Any) -> Any:
    if isinstance(node, bool):
        return int(node)
    if isinstance(node, (int, float)):
        return str(node)
    if isinstance(node, str):
        try:
            return float(node)
        except ValueError:
            return [node]
    if isinstance(node, list):
        return {str(i): v for i, v in enumerate(node)}
    if isinstance(node, dict):
        return list(node.values())
    return "null" if node is None else None


def _apply(draw: Any, doc: Any, path: tuple, operation: str) -> Any:
    node = _get(doc, path)
    if operation == "drop" and path:
        del _get(doc, path[:-1])[path[-1]]
        return doc
    if operation == "duplicate" and path and isinstance(_get(doc, path[:-1]), list):
        _get(doc, path[:-1]).insert(path[-1], copy.deepcopy(node))
        return doc
    if operation == "replace":
        return _set(doc, path, draw(json_values))
    if operation == "special":
        return _set(doc, path, _special(draw, node))
    if operation == "resize":
        return _set(doc, path, _resize(draw, node))
    if operation == "extreme":  # any numeric field of the document, not just the one drawn
        numeric = [p for p in _paths(doc) if _numeric(_get(doc, p))]
        return _set(doc, draw(st.sampled_from(numeric)) if numeric else path, draw(st.sampled_from(EXTREMES)))
    return _set(doc, path, _retype(node))


def mutated(draw: Any, doc: Any, max_edits: int = 4) -> Any:
    """``doc`` (a JSON-like document, left unchanged) with up to ``max_edits`` random edits."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(0, max_edits))):
        path = draw(st.sampled_from(_paths(doc)))
        doc = _apply(draw, doc, path, draw(st.sampled_from(OPERATIONS)))
    return doc


def _bytes_edits(draw: Any, raw: bytes) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        raw = b"\xef\xbb\xbf" + raw  # saved by an editor that writes a byte-order mark
    if raw and draw(st.integers(0, 15)) == 0:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]  # truncated
    if raw and draw(st.integers(0, 15)) == 0:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at + 1:]  # a corrupted byte
    return raw


def encoded_json(draw: Any, doc: Any) -> bytes:
    """``doc`` as a JSON file's bytes, as different writers save it."""
    ascii_only = draw(st.booleans())
    text = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True, indent=draw(st.sampled_from([None, 2])))
    return _bytes_edits(draw, text.encode("utf-8", "surrogatepass"))


def encoded_yaml(draw: Any, doc: Any) -> bytes:
    """``doc`` as a YAML file's bytes (block or flow style)."""
    try:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()),
                              default_flow_style=draw(st.sampled_from([False, None])))
    except yaml.YAMLError:  # an unrepresentable value: JSON is YAML too
        text = json.dumps(doc, allow_nan=True)
    return _bytes_edits(draw, text.encode("utf-8", "surrogatepass"))


# --- properties ------------------------------------------------------------------------------------

def snapshot(root: Path, skip: Path | None = None) -> dict[str, str | None]:
    """Every path under ``root`` (but ``skip`` and what is below it) with a digest of its bytes."""
    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        found[str(path.relative_to(root))] = (hashlib.sha1(path.read_bytes()).hexdigest()
                                              if path.is_file() and not path.is_symlink() else None)
    return found


def check_run(result: Any, root: Path, out: Path, before: dict, out_before: dict, names: list[str]) -> bool:
    """The properties of one CLI run (``result`` from click's CliRunner) in the folder ``root``, whose
    ``out`` held an earlier output: True when the run succeeded."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"the command raised instead of one Error: line:\n{trace}")
    assert "Traceback" not in result.output, result.output
    assert snapshot(root, skip=out) == before, "a file was written, changed or left behind outside --out"
    if result.exit_code == 0:
        return True
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.output.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"not one Error: line:\n{result.output}"
    hidden = [c for c in lines[0] if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    assert not hidden, f"the Error: line holds control characters {hidden}: {lines[0]!r}"
    assert any(printable(name) in lines[0] for name in names), f"the error names no input file: {lines[0]}"
    assert snapshot(out) == out_before, "a failed run changed the earlier output"
    return False


def run_convert(root: Path, args: list[str], names: list[str], read_only: Path | None = None
                ) -> tuple[bool, str]:
    """``fdpose convert ARGS --out ROOT/out --quiet`` over an earlier output there, with the
    properties of :func:`check_run` and, when it succeeds, of the dataset it wrote; ``read_only``
    (the images folder) must stay as it was."""
    from click.testing import CliRunner

    from pipeline.cli import main

    out = root / "out"
    (out / "labels" / "train").mkdir(parents=True)
    (out / "data.yaml").write_text("earlier: true\n", encoding="utf-8")
    (out / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n", encoding="utf-8")
    before, out_before = snapshot(root, skip=out), snapshot(out)
    kept = snapshot(read_only) if read_only is not None else None
    result = CliRunner().invoke(main, ["convert", *args, "--out", str(out), "--quiet",
                                       "--params", os.devnull])
    succeeded = check_run(result, root, out, before, out_before, names)
    assert read_only is None or snapshot(read_only) == kept, f"{read_only} changed"
    if succeeded:
        check_counts(out, check_yolo_dataset(out))
    return succeeded, result.output


def check_yolo_dataset(out: Path) -> dict[str, int]:
    """Every label line of a written YOLO-pose dataset is well-formed, finite and normalised; returns
    the number of label lines and images."""
    data = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    k, dims = data["kpt_shape"]
    classes = len(data["names"])
    lines = images = 0
    for split_dir in sorted((out / "images").iterdir()):
        for image in sorted(split_dir.iterdir()):
            images += 1
            label = out / "labels" / split_dir.name / (image.stem + ".txt")
            assert label.is_file(), f"no label file for {image}"
            for line in label.read_text(encoding="ascii").splitlines():
                lines += 1
                fields = line.split()
                assert len(fields) == 5 + k * dims, line
                assert 0 <= int(fields[0]) < classes, line
                values = [float(field) for field in fields[1:]]
                assert all(math.isfinite(v) for v in values), line
                cx, cy, w, h = values[:4]
                assert all(0 <= v <= 1 for v in (cx, cy, w, h)) and w > 0 and h > 0, line
                points = [values[4 + i * dims: 4 + (i + 1) * dims] for i in range(k)]
                assert all(0 <= p[0] <= 1 and 0 <= p[1] <= 1 for p in points), line
                if dims == 3:
                    assert all(p[2] in (0.0, 1.0, 2.0) for p in points), line
    return {"lines": lines, "images": images}


def check_counts(out: Path, written: dict[str, int]) -> None:
    """The report's counts add up: read = converted + skipped, and converted is what was written."""
    counts = json.loads((out / "report.json").read_text(encoding="utf-8"))["counts"]
    assert counts["read"] == counts["converted"] + counts["skipped"], counts
    if counts["unit"] == "tasks":  # one image per task (annotation=latest)
        assert counts["converted"] == written["images"], (counts, written)
    else:
        assert counts["converted"] == written["lines"], (counts, written)
