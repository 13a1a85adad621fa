"""The per-feed histogram: a read's values observed at once land where one by one would."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from chrono.histogram import LATENCY_BUCKETS_S, Histogram

# Bounds themselves, just either side of them, below the first and past the last.
EDGES = [v for b in LATENCY_BUCKETS_S for v in (b, math.nextafter(b, 0), math.nextafter(b, 99))]
VALUES = st.lists(st.sampled_from([-1.0, 0.0, 100.0, *EDGES]) | st.floats(-5, 120), max_size=60)


@given(reads=st.lists(VALUES, max_size=5))
def test_observe_all_counts_as_observe_does(reads: list[list[float]]) -> None:
    together, one_by_one = Histogram(), Histogram()
    for values in reads:
        together.observe_all(values)
        for value in values:
            one_by_one.observe(value)
    a, b = together.statistics(), one_by_one.statistics()
    assert (a.buckets, a.counts, a.count) == (b.buckets, b.counts, b.count)
    assert math.isclose(a.sum, b.sum, rel_tol=1e-9, abs_tol=1e-9)


def test_a_value_on_a_bound_is_in_that_bound_s_bucket() -> None:
    histogram = Histogram((1.0, 2.0))
    histogram.observe_all([1.0, 2.0, 2.5, 0.5])
    assert histogram.statistics().counts == [2, 1, 1]
