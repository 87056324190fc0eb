"""The one timing harness behind every speed figure fdpose prints (package latency, ``compare``'s
cost, ``model info --compare`` and every ``fdpose bench`` command).

- Warm-up: ``warmup`` untimed rounds first (first calls pay for allocation, lazy init, caches).
- Threads: :func:`torch_threads` fixes torch's intra-op threads for the measurement and restores them;
  runtimes that take a thread count at construction (onnxruntime, OpenVINO) are built with the same.
- Interleaving: the callables take turns call by call (A, B, A, B, ...), so load from other processes
  hits all of them alike and a ratio compares calls made moments apart.
- Statistics: per callable the median and the spread (quartiles, minimum, maximum) of its calls
  (:class:`Timing`); per pair the ratio of medians, the ratio of minima (the calls other processes
  disturbed least) and the quartiles of the per-round ratios (:class:`Ratio`).

The clock is a parameter (wall time by default; ``time.process_time`` or ``time.thread_time`` for CPU
time), which also lets the tests drive the harness with a fake clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

Clock = Callable[[], float]  # seconds
T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Milliseconds of every timed call of one callable, in call order."""

    samples_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("a timing needs at least one timed call")

    @property
    def median(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def q1(self) -> float:
        return float(np.percentile(self.samples_ms, 25))

    @property
    def q3(self) -> float:
        return float(np.percentile(self.samples_ms, 75))

    @property
    def minimum(self) -> float:
        return min(self.samples_ms)

    @property
    def maximum(self) -> float:
        return max(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    def per_second(self, items: int = 1) -> float:
        """Throughput: ``items`` per median call, per second."""
        return items * 1000 / self.median

    def spread(self) -> str:
        """The quartiles and extremes in one short phrase, for tables."""
        return (f"IQR {self.q1:.2f}-{self.q3:.2f}, min {self.minimum:.2f}, max {self.maximum:.2f} ms "
                f"(n={len(self.samples_ms)})")

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median, "q1_ms": self.q1, "q3_ms": self.q3, "min_ms": self.minimum,
                "max_ms": self.maximum, "runs": len(self.samples_ms)}


@dataclass(frozen=True)
class Ratio:
    """``a / b`` of two timings measured in interleaved rounds (above 1: ``a`` is slower)."""

    median: float  # ratio of the medians
    minimum: float  # ratio of the minima
    round_q1: float  # quartiles of the per-round ratios a_i / b_i: how steady the ratio was
    round_q3: float

    @classmethod
    def of(cls, a: Timing, b: Timing) -> Ratio:
        rounds = np.asarray(a.samples_ms[:len(b.samples_ms)]) / np.asarray(b.samples_ms[:len(a.samples_ms)])
        return cls(a.median / b.median, a.minimum / b.minimum, float(np.percentile(rounds, 25)),
                   float(np.percentile(rounds, 75)))


def time_interleaved(calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     clock: Clock = time.perf_counter) -> dict[str, Timing]:
    """Time every callable ``repeats`` times, taking turns round by round after ``warmup`` untimed
    rounds; the :class:`Timing` of each, by name."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = clock()
            fn()
            samples[name].append((clock() - start) * 1e3)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def time_pair(first: Callable[[], object], second: Callable[[], object], repeats: int, warmup: int = 1,
              clock: Clock = time.perf_counter) -> tuple[Timing, Timing]:
    """:func:`time_interleaved` of two callables: (first, second)."""
    timings = time_interleaved({"first": first, "second": second}, repeats, warmup, clock)
    return timings["first"], timings["second"]


def time_once(fn: Callable[[], T], clock: Clock = time.perf_counter) -> tuple[float, T]:
    """Seconds one call of ``fn`` takes, and what it returned: for whole jobs (a conversion, an
    augmentation run) that are timed once, not compared call by call."""
    start = clock()
    value = fn()
    return clock() - start, value


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block (None: left as it is), and
    restored after it."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
