"""OHLCV from feeds in time order, in Python with ``Decimal``: exact, for stores without SQL of
their own for it (SQLite keeps prices as text, which its ``min``/``max`` would compare as text).

Buckets are aligned to the UTC epoch, as PostgreSQL's ``date_bin`` with origin 1970-01-01 and
TimescaleDB's ``time_bucket`` place them for widths that divide a day. With a ``limit`` the
rows are read only until the bucket after the last one wanted starts: a page of 1000 candles
costs the rows of 1000 buckets, however long the range.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chrono.store.base import Candle

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_start(at: datetime, width_s: int) -> datetime:
    """The start of the ``width_s`` bucket holding ``at`` (exact: timedelta arithmetic)."""
    width = timedelta(seconds=width_s)
    return EPOCH + ((at - EPOCH) // width) * width


def candles_of(
    feeds: Iterable[tuple[datetime, Decimal, Decimal | None]],
    width_s: int,
    *,
    limit: int | None = None,
) -> list[Candle]:
    """Candles of ``(timestamp, price, volume)`` rows given oldest first (ties in store order),
    at most ``limit`` of them; ``feeds`` is not read past the first row of bucket limit+1."""
    out: list[Candle] = []
    current: datetime | None = None
    open_ = high = low = close = Decimal(0)
    volume: Decimal | None = None
    count = 0
    for at, price, feed_volume in feeds:
        start = bucket_start(at, width_s)
        if start != current:
            if current is not None:
                out.append(Candle(timestamp=current, open=open_, high=high, low=low,
                                  close=close, volume=volume, num_feeds=count))  # fmt: skip
            if len(out) == limit:
                return out
            current, open_, high, low, volume, count = start, price, price, price, None, 0
        high = max(high, price)
        low = min(low, price)
        close = price
        if feed_volume is not None:
            volume = feed_volume
        count += 1
    if current is not None:
        out.append(Candle(timestamp=current, open=open_, high=high, low=low,
                          close=close, volume=volume, num_feeds=count))  # fmt: skip
    return out
