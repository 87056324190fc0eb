"""The deployment targets ``fdpose bench deploy`` judges against, and its verdicts.

The targets are those of the deployment issue (round two), FDConv / stock twin, measured side by
side in one run:

| case | target |
|---|---|
| PyTorch eager, batch 1 @320 / @640 | <= 1.15x / <= 1.05x |
| ONNX Runtime, batch 1 @320 / @640 | <= 1.10x / <= 1.05x |
| OpenVINO, batch 1 @320 / @640 | <= 1.15x / <= 1.05x |
| ONNX Runtime / OpenVINO, batch 8 throughput (any size) | <= 1.15x |
| ``model.onnx`` vs the stock twin's ONNX exported by ultralytics (float32 both) | <= 1.2x |

Latency is judged on the ratio of batch-1 medians, throughput on the ratio of batch-8 median call
times (stock images/s over FDConv images/s: above 1 means FDConv is slower). The OpenVINO ``.bin``
sizes are reported beside the ONNX ones without a target (none is set).
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_TARGETS = {("pytorch", 320): 1.15, ("pytorch", 640): 1.05, ("onnxruntime", 320): 1.10,
                   ("onnxruntime", 640): 1.05, ("openvino", 320): 1.15, ("openvino", 640): 1.05}
THROUGHPUT_BATCH = 8
THROUGHPUT_TARGETS = {"onnxruntime": 1.15, "openvino": 1.15}
SIZE_TARGETS = {"model.onnx": 1.2}
FORMAT_TITLES = {"pytorch": "PyTorch eager", "pytorch-fused": "PyTorch fused", "onnxruntime": "ONNX Runtime",
                 "openvino": "OpenVINO"}


def latency_target(fmt: str, imgsz: int) -> float | None:
    return LATENCY_TARGETS.get((fmt, imgsz))


def throughput_target(fmt: str, batch: int) -> float | None:
    return THROUGHPUT_TARGETS.get(fmt) if batch == THROUGHPUT_BATCH else None


def verdict(ratio: float, target: float | None) -> str:
    """``ok`` at or under the target, ``OVER`` above it, ``-`` without one."""
    if target is None:
        return "-"
    return "ok" if ratio <= target else "OVER"


@dataclass
class SizeRow:
    """One family's file of one kind: the FDConv model's against the stock twin's, in bytes."""

    family: str
    file: str  # "model.onnx" or "model.bin" (the OpenVINO weights)
    fdconv_bytes: int
    stock_bytes: int
    stock_source: str  # how the stock file was made

    @property
    def ratio(self) -> float:
        return self.fdconv_bytes / self.stock_bytes

    @property
    def target(self) -> float | None:
        return SIZE_TARGETS.get(self.file)

    @property
    def verdict(self) -> str:
        return verdict(self.ratio, self.target)


@dataclass
class Judged:
    """One measured case of one family: its ratio and target (from a deploy row or a size row)."""

    case: str  # e.g. "ONNX Runtime, batch 1 @320"
    family: str
    ratio: float
    target: float


def case_lines(cases: list[Judged]) -> list[str]:
    """One line per case, in first-seen order: every family's ratio, the target, and how many meet it."""
    grouped: dict[str, list[Judged]] = {}
    for case in cases:
        grouped.setdefault(case.case, []).append(case)
    lines = []
    for name, members in grouped.items():
        target = members[0].target
        met = sum(member.ratio <= target for member in members)
        ratios = ", ".join(f"{member.family} {member.ratio:.2f}x" for member in members)
        outcome = "met" if met == len(members) else f"NOT met ({met} of {len(members)} within)"
        lines.append(f"{name}: {ratios}; target <= {target:g}x: {outcome}")
    return lines
