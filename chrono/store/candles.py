"""OHLCV from stored rows in time order, in Python with ``Decimal``: exact, for SQLite, which
keeps prices as text that its ``min``/``max`` would compare as text.

Buckets are aligned to the UTC epoch, as PostgreSQL's ``date_bin`` with origin 1970-01-01 and
TimescaleDB's ``time_bucket`` place them for widths that divide a day. With a ``limit`` the
rows are read only until the bucket after the last one wanted starts: a page of 1000 candles
costs the rows of 1000 buckets, however long the range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chrono.store.base import Candle

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_start(at: datetime, width_s: int) -> datetime:
    """The start of the ``width_s`` bucket holding ``at`` (exact: timedelta arithmetic)."""
    width = timedelta(seconds=width_s)
    return EPOCH + ((at - EPOCH) // width) * width


# The part of a fixed-width stored time (``2024-12-07T18:05:42.542551Z``) that names its bucket,
# and the minute step within it: ``[:16]`` is the minute, ``[:14]`` + minute // 5 its 5 minutes.
_BUCKET_TEXT: dict[int, tuple[int, int]] = {
    60: (16, 0), 300: (14, 5), 900: (14, 15), 3600: (13, 0), 86_400: (10, 0)}  # fmt: skip
_PADDING = {16: ":00.000000Z", 13: ":00:00.000000Z", 10: "T00:00:00.000000Z"}


def _bucket_of(text: str, cut: int, step: int) -> str:
    """The bucket start of a stored time, as stored-time text."""
    if step:
        minute = int(text[14:16]) // step * step
        return f"{text[:14]}{minute:02d}:00.000000Z"
    return text[:cut] + _PADDING[cut]


def candles_of(
    rows: Iterable[tuple[str, str, str | None]],
    width_s: int,
    parse_time: Callable[[str], datetime],
    *,
    limit: int | None = None,
) -> list[Candle]:
    """Candles of stored ``(time text, price text, volume text)`` rows, oldest first (ties in
    store order), at most ``limit``; ``rows`` is not read past the first row of bucket limit+1.

    Per row only a slice and one ``Decimal``: the bucket comes from the fixed-width time text
    (so a time is parsed once per bucket, not per row), and the volume is kept as text.
    """
    cut, step = _BUCKET_TEXT[width_s]
    out: list[Candle] = []
    key = start = ""
    open_ = high = low = close = Decimal(0)
    volume: str | None = None
    count = 0

    def done() -> Candle:
        vol = None if volume is None else Decimal(volume)
        return Candle(timestamp=parse_time(start), open=open_, high=high, low=low, close=close,
                      volume=vol, num_feeds=count)  # fmt: skip

    for at, text, feed_volume in rows:
        bucket = at[:cut] if not step else at[:14] + str(int(at[14:16]) // step)
        price = Decimal(text)
        if bucket != key:
            if count:
                out.append(done())
            if len(out) == limit:
                return out
            key, start = bucket, _bucket_of(at, cut, step)
            open_ = high = low = price
            volume, count = None, 0
        elif price > high:
            high = price
        elif price < low:
            low = price
        close = price
        if feed_volume is not None:
            volume = feed_volume
        count += 1
    if count:
        out.append(done())
    return out
