"""A recent-deviation guard (after RedStone's): withhold a consensus price that jumps away from
the mean of the prices computed for that symbol over the last ``window_s`` seconds.

Every candidate price is sampled, withheld or not (at most one sample per ``sample_s``, so callers
asking a thousand times a second do not swamp the window): a sustained move passes once the
window's mean has caught up with it, a sudden spike does not.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal, localcontext

import msgspec

from chrono.consensus.engine import Consensus
from chrono.consensus.stats import BPS, CONTEXT, EXACT
from chrono.model import decimal_text


class _Series:
    """One symbol's samples, oldest first, and their exact sum (no drift as they come and go)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, Decimal]] = deque()
        self.total = Decimal(0)

    def drop_before(self, start: float) -> None:
        while self.samples and self.samples[0][0] < start:
            self.total = EXACT.subtract(self.total, self.samples.popleft()[1])

    def add(self, now: float, price: Decimal, max_samples: int) -> None:
        if len(self.samples) >= max_samples:
            self.total = EXACT.subtract(self.total, self.samples.popleft()[1])
        self.samples.append((now, price))
        self.total = EXACT.add(self.total, price)


class Guard:
    """Per-symbol memory of recent consensus prices; ``now`` is the caller's monotonic clock."""

    def __init__(self, window_s: float, sample_s: float = 1.0, max_samples: int = 10_000) -> None:
        if not window_s > 0 or not sample_s >= 0 or max_samples < 1:
            raise ValueError("window_s must be > 0, sample_s >= 0 and max_samples >= 1")
        self.window_s = window_s
        self.sample_s = sample_s
        self.max_samples = max_samples
        self._series: dict[str, _Series] = {}

    def check(self, consensus: Consensus, *, guard_bps: Decimal, now: float) -> Consensus:
        """``consensus``, or a "guarded" copy without a price if it is more than ``guard_bps``
        from the mean of the earlier samples in the window; samples its price. A ``guard_bps``
        of 0 (or a consensus without a price) changes nothing and samples nothing."""
        price = consensus.price
        if guard_bps <= 0 or consensus.status != "ok" or price is None:
            return consensus
        series = self._series.setdefault(consensus.symbol, _Series())
        series.drop_before(now - self.window_s)
        result = consensus
        if series.samples:
            with localcontext(CONTEXT):
                reference = series.total / len(series.samples)
                if abs(price - reference) * BPS > guard_bps * reference:
                    params = {**consensus.params, "guard_bps": decimal_text(guard_bps),
                              "guard_reference": decimal_text(reference)}  # fmt: skip
                    result = msgspec.structs.replace(
                        consensus, status="guarded", price=None, params=params
                    )
        if not series.samples or now - series.samples[-1][0] >= self.sample_s:
            series.add(now, price, self.max_samples)
        return result
