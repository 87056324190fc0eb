"""The timing harness: warm-up, turn order, statistics and ratios, driven by a fake clock (no real time
is asserted)."""

from __future__ import annotations

import pytest
import torch

from pipeline.bench.timing import Ratio, Timing, time_interleaved, time_once, time_pair, torch_threads


class FakeClock:
    """A clock that only moves when a call advances it: each callable costs a scripted amount."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def call(self, name: str, seconds: list[float]):
        costs = iter(seconds)

        def run() -> None:
            self.log.append(name)
            self.now += next(costs)
        return run


def test_calls_take_turns_after_untimed_warm_up_rounds():
    clock = FakeClock()
    # Two warm-up rounds cost 1 s each (never timed), then the timed calls.
    a = clock.call("a", [1.0, 1.0, 0.010, 0.012, 0.011])
    b = clock.call("b", [1.0, 1.0, 0.020, 0.020, 0.026])
    timings = time_interleaved({"a": a, "b": b}, repeats=3, warmup=2, clock=clock)
    assert clock.log == ["a", "b"] * 5
    assert timings["a"].samples_ms == pytest.approx((10.0, 12.0, 11.0))
    assert timings["b"].samples_ms == pytest.approx((20.0, 20.0, 26.0))


def test_timing_statistics_median_spread_and_throughput():
    timing = Timing((4.0, 1.0, 3.0, 2.0, 100.0))
    assert timing.median == 3.0
    assert (timing.q1, timing.q3) == (2.0, 4.0)
    assert (timing.minimum, timing.maximum) == (1.0, 100.0)
    assert timing.per_second(8) == pytest.approx(8 * 1000 / 3.0)
    assert "IQR 2.00-4.00" in timing.spread() and "n=5" in timing.spread()
    with pytest.raises(ValueError):
        Timing(())


def test_ratio_of_interleaved_pairs():
    slow = Timing((20.0, 22.0, 40.0, 21.0))
    fast = Timing((10.0, 11.0, 20.0, 10.0))
    ratio = Ratio.of(slow, fast)
    assert ratio.median == pytest.approx(21.5 / 10.5)
    assert ratio.minimum == pytest.approx(2.0)
    # Round by round the slow one took 2.0, 2.0, 2.0 and 2.1 times as long: a steady ratio.
    assert ratio.round_q1 == pytest.approx(2.0) and ratio.round_q3 == pytest.approx(2.025)


def test_time_pair_orders_a_real_sleep_after_no_work():
    import time

    slow, fast = time_pair(lambda: time.sleep(0.02), lambda: None, repeats=3, warmup=0)
    assert slow.minimum > fast.maximum  # ordering only: no absolute time asserted


def test_time_once_and_bad_arguments():
    clock = FakeClock()
    assert time_once(clock.call("job", [2.5]), clock) == (2.5, None)
    with pytest.raises(ValueError):
        time_interleaved({"a": lambda: None}, repeats=0)


def test_torch_threads_are_set_inside_and_restored_after():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
