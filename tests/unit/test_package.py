"""Packaging pieces that need no trained model: checksums, verification, the reproducible archive, the
card, and the ONNX / OpenVINO exports of a tiny model with and without FDConv."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import FdposeError
from pipeline.inference import ModelMeta
from pipeline.nn.fdconv import FDConv
from pipeline.package.archive import archive_bytes, verify, write_checksums
from pipeline.package.card import DataInfo, FormatScores, model_card
from pipeline.package.export import ExportCheck, export_onnx, export_openvino
from pipeline.skeleton import Skeleton


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
    result = CliRunner().invoke(main, ["package", "verify", str(package)])
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
    meta = ModelMeta(Skeleton(["l_eye", "r_eye"], class_names=["person"], kpt_dims=3, edges=[(0, 1)],
                              flip_permutation=[1, 0], sigmas=[0.025, 0.025]), imgsz=320, stride=32)
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
        checks=[ExportCheck("img.png", 1e-5, 100.0, 1e-7, 1e-4)], opset=17)
    for fact in ("C2f_FDConv", "scale `s`", "1,234,567 parameters", "2026-01-02T03:04:05", "| epochs | 7 |",
                 "| lr0 | 0.01 |", "| oks_map | 0.4321 |", "[eval/report.html](eval/report.html)",
                 "`train`: 10 images, 12 instances (sha256 `tttttttt`)", "| 0 | l_eye | r_eye | 0.025 |",
                 "l_eye-r_eye", "**1.000e-07**", "Bx3x320x320", "(B, 11, N)",
                 "| metric | this model | baseline |", "| oks_map | 0.4321 | 0.25 |",
                 "| oks_map_large | n/a | n/a |",
                 "split `val`: 3 images, 4 instances, data sha256 `vvvvvvvv` (the packaged model's dataset"):
        assert fact in card, fact
    unevaluated = model_card(weights_name="w.pt", weights_sha256="0" * 64, checkpoint={}, meta=meta,
                             architecture={}, parameters=1, data=DataInfo(source="checkpoint attributes"),
                             metrics=None, report=None, checks=[ExportCheck("i.png", 0.0, 1.0, 0.0, 1e-4)],
                             opset=17)
    assert "Not evaluated" in unevaluated and "records no training arguments" in unevaluated
    assert "No OpenVINO IR: packaged without the `fdpose[openvino]` extra." in unevaluated
    row = "| ONNX | `model.onnx` | onnxruntime (`--backend onnx`) | not scored | not measured |"
    assert row in unevaluated
    assert "OKS mAP per format not scored" in unevaluated


def test_card_lists_every_format_with_its_measured_latency():
    meta = ModelMeta(Skeleton(["a"], class_names=["person"], kpt_dims=3), imgsz=64, stride=32)
    checks = [ExportCheck("i.png", 1e-6, 10.0, 1e-7, 1e-4),
              ExportCheck("i.png", 2e-6, 10.0, 2e-7, 1e-4, "OpenVINO")]
    card = model_card(weights_name="w.pt", weights_sha256="0" * 64, checkpoint={}, meta=meta,
                      architecture={"backbone": [[-1, 1, "C2f_FDConv", [64]]]}, parameters=1,
                      data=DataInfo(source="checkpoint attributes"), metrics=None, report=None, checks=checks,
                      opset=17, latency={"PyTorch": 12.34, "ONNX": 5.67, "OpenVINO": 4.5},
                      scores=FormatScores("val", 6, {"PyTorch": 0.8709, "ONNX": 0.8709, "OpenVINO": 0.87}))
    for fact in ("| PyTorch | `model.safetensors` + `model.yaml` |", "| 0.8709 | 12.3 ms |",
                 "| ONNX | `model.onnx` | onnxruntime (`--backend onnx`) | 0.8709 | 5.7 ms |",
                 "| OpenVINO | `model.xml` + `model.bin` | OpenVINO (`--backend openvino`) | 0.87 | 4.5 ms |",
                 "on the `val` split of the dataset below (6 images)",
                 "measured at packaging time on the packaging machine",
                 "`model.xml` + `model.bin` (the ONNX model",
                 "OpenVINO check: OpenVINO vs PyTorch on `i.png` and its mirror image (batch 2)",
                 "**2.000e-07**", "a batch runs as one batch (no ONNX `Loop`)"):
        assert fact in card, fact
    assert "No OpenVINO IR" not in card


class TinyPose(torch.nn.Module):
    """A stem convolution and, with ``fdconv``, a dynamic FDConv: enough to export like a pose model."""

    def __init__(self, fdconv: bool):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.body = FDConv(32, 32, 3, padding=1) if fdconv else torch.nn.Conv2d(32, 32, 3, padding=1)
        torch.manual_seed(1)
        for parameter in self.parameters():  # far from FDConv's neutral start: kernels differ per sample
            parameter.data.normal_(0, 0.3)

    def forward(self, x):
        return self.body(torch.relu(self.stem(x))).flatten(2)


TINY_META = ModelMeta(Skeleton(["a"], class_names=["person"], kpt_dims=3), imgsz=32, stride=32)


@pytest.mark.parametrize("fdconv", [True, False])
def test_onnx_export_is_batch_native_and_matches_pytorch_at_batch_1_3_and_8(tmp_path, fdconv):
    import onnx
    import onnxruntime

    model = TinyPose(fdconv).eval()
    path = export_onnx(model, TINY_META, 32, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    # One graph for the whole batch: no Loop (nor any other control flow) anywhere.
    assert not {node.op_type for node in graph.node} & {"Loop", "If", "Scan"}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).random((batch, 3, 32, 32), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        actual = session.run(None, {"images": x})[0]
        assert actual.shape == expected.shape == (batch, 32, 256)
        assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4
    if fdconv:  # per-sample kernels really differ, so a batch that mixed samples up would fail above
        assert not np.allclose(expected[0], session.run(None, {"images": x[[1, 0, 2]]})[0][0], atol=1e-3)
        assert not any(node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
                       for node in graph.node)  # the batch is not folded into a fixed group count
    again = export_onnx(model, TINY_META, 32, tmp_path / "again.onnx")
    assert again.read_bytes() == path.read_bytes()


def test_openvino_ir_has_a_dynamic_batch_matches_pytorch_and_is_reproducible(tmp_path):
    pytest.importorskip("openvino")
    from pipeline.inference import OpenVinoRunner
    from pipeline.model_io import read_openvino_meta

    model = TinyPose(fdconv=True).eval()
    onnx_path = export_onnx(model, TINY_META, 32, tmp_path / "model.onnx")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = export_openvino(onnx_path, tmp_path / "a" / "model.xml")
    # OpenVINO numbers unnamed operations from a process-wide counter: the second conversion's differ.
    second = export_openvino(onnx_path, tmp_path / "b" / "model.xml")
    for suffix in (".xml", ".bin"):
        assert first.with_suffix(suffix).read_bytes() == second.with_suffix(suffix).read_bytes(), suffix
    assert str(tmp_path) not in first.read_text()
    assert read_openvino_meta(first) == TINY_META
    runner = OpenVinoRunner(first, TINY_META)
    assert runner.fixed_imgsz == 32 and runner.kind == "openvino"
    assert "Loop" not in first.read_text()
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).random((batch, 3, 32, 32), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        actual = runner(x)
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4


def test_verify_subcommand_and_the_deprecated_option_both_check_a_package(tmp_path):
    package = _package_dir(tmp_path / "pkg")
    result = CliRunner().invoke(main, ["package", "verify", str(package)])
    assert result.exit_code == 0 and result.output.startswith("OK: 3 files match SHA256SUMS")
    assert "deprecated" not in result.output
    old = CliRunner().invoke(main, ["package", "--verify", str(package)])
    assert old.exit_code == 0 and "OK: 3 files match SHA256SUMS" in old.stdout
    assert old.stderr.splitlines() == ["fdpose package --verify PATH is deprecated and goes in the next "
                                       "release: use fdpose package verify PATH"]
