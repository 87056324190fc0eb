"""The ``bench model`` verdict: each row is judged on the ratio of minima against its target (``ok`` up to
and including the target, ``OVER`` beyond), whatever the ratio of medians says. No time is measured."""

from __future__ import annotations

import pytest

from pipeline.bench.model import TARGETS, ModelBenchResult, ModelBenchRow


def row(mode: str, imgsz: int, ratio: float, ratio_min: float) -> ModelBenchRow:
    stock = 10.0
    return ModelBenchRow(mode, imgsz, 1, stock * ratio, stock, ratio, stock * ratio_min, stock, ratio_min,
                         TARGETS[(mode, imgsz)])


def verdicts(rows: list[ModelBenchRow]) -> list[str]:
    result = ModelBenchResult("n", 1, 3, 1, "test", 110, 100, rows)
    return [line.split()[-1] for line in result.table().splitlines()[3:]]


def test_targets_are_the_deployment_speed_targets():
    assert TARGETS == {("inference", 320): 1.15, ("inference", 640): 1.05, ("train_step", 320): 1.10}


@pytest.mark.parametrize(("mode", "imgsz"), list(TARGETS))
def test_verdict_at_below_and_above_the_target(mode, imgsz):
    target = TARGETS[(mode, imgsz)]
    rows = [row(mode, imgsz, 1.0, target - 0.01), row(mode, imgsz, 1.0, target),
            row(mode, imgsz, 1.0, target + 0.01)]
    assert verdicts(rows) == ["ok", "ok", "OVER"]


def test_verdict_follows_the_ratio_of_minima_not_of_medians():
    # A noisy median over the target with an undisturbed minimum under it passes, and the reverse fails.
    assert verdicts([row("inference", 320, 1.5, 1.0), row("inference", 640, 1.0, 1.5)]) == ["ok", "OVER"]
