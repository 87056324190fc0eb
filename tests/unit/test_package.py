"""Packaging pieces that need no model: checksums, verification, the reproducible archive, the card."""

from __future__ import annotations

import hashlib
import os
import zipfile

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import FdposeError
from pipeline.package import DataInfo, OnnxCheck, archive_bytes, model_card, verify, write_checksums
from pipeline.predict import ModelMeta


def _package_dir(root, order=("b.bin", "a.txt", "eval/m.json")):
    root.mkdir()
    contents = {"a.txt": b"alpha\n", "b.bin": bytes(range(256)), "eval/m.json": b"{}"}
    for name in order:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(contents[name])
    write_checksums(root)
    return root


def test_checksums_cover_every_file_in_sha256sum_format(tmp_path):
    package = _package_dir(tmp_path / "pkg")
    lines = (package / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.txt", "b.bin", "eval/m.json"]
    assert lines[0] == hashlib.sha256(b"alpha\n").hexdigest() + "  a.txt"
    result = verify(package)
    assert result.ok and result.checked == ["a.txt", "b.bin", "eval/m.json"]


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "a.txt").write_bytes(b"alphA\n"), "checksum mismatch: a.txt"),
    (lambda p: (p / "eval" / "m.json").unlink(), "missing: eval/m.json"),
    (lambda p: (p / "extra.txt").write_text("x"), "not in SHA256SUMS: extra.txt"),
    (lambda p: (p / "SHA256SUMS").write_text("abc  a.txt\n"), "SHA256SUMS: line 1: malformed line"),
    (lambda p: (p / "SHA256SUMS").unlink(), "no SHA256SUMS"),
])
def test_verify_names_what_is_wrong(tmp_path, damage, message):
    package = _package_dir(tmp_path / "pkg")
    damage(package)
    with pytest.raises(FdposeError) as error:
        verify(package)
    assert message in str(error.value)
    result = CliRunner().invoke(main, ["package", "--verify", str(package)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and message in result.output


def test_archive_is_byte_identical_whatever_the_file_order_times_and_modes(tmp_path):
    first = _package_dir(tmp_path / "one")
    second = _package_dir(tmp_path / "two", order=("eval/m.json", "a.txt", "b.bin"))
    os.utime(second / "a.txt", (1_000_000, 1_000_000))
    os.chmod(second / "b.bin", 0o600)
    data = archive_bytes(first, "pkg")
    assert data == archive_bytes(second, "pkg")
    archive = tmp_path / "pkg.zip"
    archive.write_bytes(data)
    with zipfile.ZipFile(archive) as opened:
        assert opened.namelist() == ["pkg/SHA256SUMS", "pkg/a.txt", "pkg/b.bin", "pkg/eval/m.json"]
    assert verify(archive).ok
    # A tampered archive member is caught as well.
    with zipfile.ZipFile(archive) as opened:
        members = {name: opened.read(name) for name in opened.namelist()}
    members["pkg/b.bin"] = b"changed"
    with zipfile.ZipFile(archive, "w") as rewritten:
        for name, content in members.items():
            rewritten.writestr(name, content)
    with pytest.raises(FdposeError, match="checksum mismatch: b.bin"):
        verify(archive)


def test_package_without_weights_is_a_usage_error():
    result = CliRunner().invoke(main, ["package", "--out", "x"])
    assert result.exit_code == 2 and "--weights, --eval and --out are required" in result.output


def test_card_states_the_facts_it_is_given():
    meta = ModelMeta(class_names=["person"], keypoint_names=["l_eye", "r_eye"], kpt_shape=[2, 3],
                     edges=[[0, 1]], flip_idx=[1, 0], sigmas=[0.025, 0.025], imgsz=320, stride=32)
    card = model_card(
        weights_name="best.pt", weights_sha256="ab" * 32,
        checkpoint={"version": "8.4.190", "date": "2026-01-02T03:04:05",
                    "train_args": {"epochs": 7, "imgsz": 320, "lr0": 0.01}},
        meta=meta, architecture={"scale": "s", "backbone": [[-1, 3, "C2f_FDConv", [128, True]]]},
        parameters=1234567, data=DataInfo(source="dataset data.yaml", fingerprint="f" * 64, counts={
            "train": {"images": 10, "instances": 12, "sha256": "t" * 8},
            "val": {"images": 3, "instances": 4, "sha256": "v" * 8}}),
        metrics={"oks_map": 0.4321, "box_map": 0.5, "oks_map_large": None, "split": "val", "num_images": 3,
                 "num_instances": 4, "data_sha256": "v" * 8, "baseline": {"oks_map": 0.25, "box_map": 0.375}},
        report="eval/report.html",
        check=OnnxCheck("img.png", 1e-5, 100.0, 1e-7, 1e-4), opset=17)
    for fact in ("C2f_FDConv", "scale `s`", "1,234,567 parameters", "2026-01-02T03:04:05", "| epochs | 7 |",
                 "| lr0 | 0.01 |", "| oks_map | 0.4321 |", "[eval/report.html](eval/report.html)",
                 "`train`: 10 images, 12 instances (sha256 `tttttttt`)", "| 0 | l_eye | r_eye | 0.025 |",
                 "l_eye-r_eye", "**1.000e-07**", "1x3x320x320", "(1, 11, N)",
                 "| metric | this model | baseline |", "| oks_map | 0.4321 | 0.25 |",
                 "| oks_map_large | n/a | n/a |",
                 "split `val`: 3 images, 4 instances, data sha256 `vvvvvvvv` (the packaged model's dataset"):
        assert fact in card, fact
    unevaluated = model_card(weights_name="w.pt", weights_sha256="0" * 64, checkpoint={}, meta=meta,
                             architecture={}, parameters=1, data=DataInfo(source="checkpoint attributes"),
                             metrics=None, report=None, check=OnnxCheck("i.png", 0.0, 1.0, 0.0, 1e-4),
                             opset=17)
    assert "Not evaluated" in unevaluated and "records no training arguments" in unevaluated
