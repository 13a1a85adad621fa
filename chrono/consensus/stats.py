"""Exact-decimal statistics for the consensus: no floats, one fixed context, so a result reads
the same on every machine and for every input order.

Sums are exact (``EXACT``: additions never round), so they do not depend on the order of their
terms; everything else rounds to ``CONTEXT``'s 40 digits, more than a stored price has (38).
Sequences are sorted ascending where a function says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

import msgspec

PRECISION = 40
_TRAPS: list[type[DecimalException]] = [InvalidOperation, DivisionByZero, Overflow]
# Every field given, so nothing is inherited from the process-wide default context.
CONTEXT = Context(prec=PRECISION, rounding=ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999,
                  capitals=1, clamp=0, flags=[], traps=_TRAPS)  # fmt: skip
# Addition only: an unbounded precision makes a sum exact (its digits are what it needs).
EXACT = Context(prec=MAX_PREC, rounding=ROUND_HALF_EVEN, Emin=MIN_EMIN, Emax=MAX_EMAX,
                capitals=1, clamp=0, flags=[], traps=_TRAPS)  # fmt: skip
BPS = Decimal(10_000)


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """The spread of a set of values, as the consensus reports it."""

    median: Decimal
    mean: Decimal
    std_dev: Decimal  # population
    mad: Decimal  # median absolute deviation around ``median``
    min: Decimal
    max: Decimal
    spread_bps: Decimal  # (max - min) x 10000 / median
    conf: Decimal  # max(median - p25, p75 - median)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total


def median(ordered: Sequence[Decimal]) -> Decimal:
    """The median of ascending ``ordered`` (not empty): the mean of the middle two if even."""
    middle, odd = divmod(len(ordered), 2)
    if odd:
        return ordered[middle]
    with localcontext(CONTEXT):
        return exact_sum(ordered[middle - 1 : middle + 1]) / 2


def percentile(ordered: Sequence[Decimal], q: Decimal) -> Decimal:
    """Linear interpolation between closest ranks, at position (n - 1) x q (numpy's default)."""
    with localcontext(CONTEXT):
        position = (len(ordered) - 1) * q
        low = int(position)
        if low + 1 >= len(ordered):
            return ordered[low]
        return ordered[low] + (ordered[low + 1] - ordered[low]) * (position - low)


def mad(ordered: Sequence[Decimal], center: Decimal) -> Decimal:
    """The median of |v - center| (``ordered`` need not be sorted; not empty)."""
    with localcontext(CONTEXT):
        return median(sorted(abs(value - center) for value in ordered))


def summarize(values: Iterable[Decimal]) -> Stats | None:
    """The statistics of ``values``, or None if there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    with localcontext(CONTEXT):
        n = len(ordered)
        mid = median(ordered)
        mean = exact_sum(ordered) / n
        variance = exact_sum((value - mean) ** 2 for value in ordered) / n
        low, high = ordered[0], ordered[-1]
        p25, p75 = percentile(ordered, Decimal("0.25")), percentile(ordered, Decimal("0.75"))
        return Stats(
            median=mid,
            mean=mean,
            std_dev=variance.sqrt(),
            mad=mad(ordered, mid),
            min=low,
            max=high,
            spread_bps=(high - low) * BPS / mid,
            conf=max(mid - p25, p75 - mid),
        )


def weighted_median(pairs: Iterable[tuple[Decimal, Decimal]]) -> Decimal | None:
    """The weighted median of (value, weight) pairs, or None if the weights sum to 0.

    The first value, ascending, where the cumulative weight reaches half the total; where it is
    exactly half, the mean of that value and the next one of positive weight, so equal weights
    give the plain median. Cumulative weights are exact sums, so "exactly half" is exact.
    """
    ordered = sorted(pairs, key=lambda pair: pair[0])
    total = exact_sum(weight for _, weight in ordered)
    if total <= 0:
        return None
    cumulative = Decimal(0)
    for index, (value, weight) in enumerate(ordered):
        cumulative = EXACT.add(cumulative, weight)
        doubled = EXACT.multiply(cumulative, 2)
        if doubled > total:
            return value
        if doubled == total:
            after = next(v for v, w in ordered[index + 1 :] if w > 0)  # total > cumulative
            with localcontext(CONTEXT):
                return (value + after) / 2
    raise AssertionError("the cumulative weight reaches the total")  # pragma: no cover


def outliers(
    values: Sequence[Decimal], *, k: Decimal, mad_floor_bps: Decimal, max_deviation_bps: Decimal
) -> list[bool]:
    """Which of ``values`` lie too far from their median ``m`` (flags in the order given).

    Too far: |v - m| > k x max(MAD, m x mad_floor_bps / 10000), the floor keeping identical or
    near-identical quotes from making every small difference an outlier; or, if
    ``max_deviation_bps`` > 0, |v - m| / m x 10000 > max_deviation_bps.
    """
    if not values:
        return []
    with localcontext(CONTEXT):
        m = median(sorted(values))
        distances = [abs(value - m) for value in values]
        effective_mad = max(median(sorted(distances)), m * mad_floor_bps / BPS)
        limit = k * effective_mad
        return [
            distance > limit or (max_deviation_bps > 0 and distance * BPS > max_deviation_bps * m)
            for distance in distances
        ]
