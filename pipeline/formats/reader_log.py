"""A reader's log: its report, with ``--strict`` turning problems into errors where they are found."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.dataset import Report
from pipeline.errors import FdposeError


class ReaderLog:
    """The reader's report, with ``--strict`` turning problems into errors where they are found."""

    def __init__(self, report: Report, source: Path, strict: bool):
        self.report, self.source, self.strict = report, source, strict

    def skip(self, item: object, reason: str, *, problem: bool = True, units: int = 0) -> None:
        if problem and self.strict:
            raise FdposeError(f"{reason} (--strict)", path=self.source, item=item)
        self.report.skip(self.source, item, reason, units=units)

    def repair(self, item: object, reason: str, *, problem: bool = True) -> None:
        if problem and self.strict:
            raise FdposeError(f"{reason} (--strict)", path=self.source, item=item)
        self.report.repair(self.source, item, reason)


def top_reasons(report: Report) -> str:
    """The most common skip reasons, each with its count and one full example."""
    counts = Counter(item.reason.split(" (")[0] for item in report.items if item.action == "skipped")
    example = {}
    for item in report.items:
        example.setdefault(item.reason.split(" (")[0], f"{item.item}: {item.reason}")
    return "; ".join(f"{count} x {example[reason]}" for reason, count in counts.most_common(2)) or "nothing"
