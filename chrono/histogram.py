"""A fixed-bucket histogram cheap enough for the per-feed path, read as a typed statistic.

``observe`` is one ``bisect`` and two additions (no lock: Trio runs one task at a time), so the
pipeline can time every feed; ``/metrics`` turns ``statistics()`` into a Prometheus histogram
(``chrono.metrics``). Buckets are upper bounds in seconds, Prometheus' ``le``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import msgspec

# 1 ms .. 60 s: a feed's age from the exchange to the store spans that on a bad day.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0)  # fmt: skip
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)


class HistogramStatistics(msgspec.Struct, frozen=True, kw_only=True):
    buckets: list[float]  # upper bounds
    counts: list[int]  # per bucket (not cumulative), then one more for above the last bound
    sum: float
    count: int


class Histogram:
    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self._bounds = list(buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """``count`` observations of ``value`` (feeds of one read share a receive time)."""
        self._counts[bisect_left(self._bounds, value)] += count
        self._sum += value * count

    def observe_all(self, values: Sequence[float]) -> None:
        """Every one of ``values``: sorted once and cut at each bound, so a read's feeds cost
        a ``bisect`` per bucket, not one per feed."""
        ordered, counts, below = sorted(values), self._counts, 0
        for index, bound in enumerate(self._bounds):
            upto = bisect_right(ordered, bound, below)  # v <= bound: observe's bucket
            counts[index] += upto - below
            below = upto
        counts[-1] += len(ordered) - below
        self._sum += sum(ordered)

    def statistics(self) -> HistogramStatistics:
        return HistogramStatistics(
            buckets=list(self._bounds),
            counts=list(self._counts),
            sum=self._sum,
            count=sum(self._counts),
        )
