"""``GET /prices/latest`` and ``GET /prices/range``: prices as collected, one or many sources.

``/prices/latest`` answers from memory first (``LatestPrices``), the store for the rest. By
default a symbol's price is the median of the newest price of each *fresh* source (within
``[consensus] max_age_ms``), ``"source": "aggregated"`` when more than one contributed; there is
no quorum and no outlier filter here (that is ``/aggregates/consensus``). A symbol whose sources
are all stale is answered with its newest feed and ``"stale": true``, never silently. A symbol
with no data at all is left out of ``data`` and listed in ``missing`` (still 200).

``/prices/range`` reads the store only: raw feeds oldest first, or OHLCV candles aligned to the
UTC epoch, over the half-open ``[from, to)``, paged by an opaque ``next`` cursor.
"""

from __future__ import annotations

import base64
import binascii
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from quart import Response
from quart_trio import QuartTrio

from chrono.api.context import ApiContext, elapsed_ms, json_response, query, symbol_list
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.schema import (
    CandleItem,
    LatestBody,
    LatestItem,
    RangeCandleBody,
    RangeRawBody,
    RawItem,
)
from chrono.model import PriceFeed, decimal_text, optional_decimal_text, time_text, utc_now
from chrono.store import INTERVALS, Candle, RowKey
from chrono.store.candles import bucket_start

MAX_RAW_SPAN = timedelta(days=90)
MAX_CANDLE_SPAN = timedelta(days=2 * 366)
MAX_LIMIT = 10_000

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class LatestQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbols: str
    source: Source | None = None


class RangeQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbol: str
    start: UtcTime = msgspec.field(name="from")
    end: UtcTime = msgspec.field(name="to")
    interval: Literal["1m", "5m", "15m", "1h", "1d"] | None = None
    source: Source | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 1000
    cursor: str | None = None


def in_utc(value: datetime, parameter: str) -> datetime:
    """A time given with any offset, in UTC (the engine and the stores compare UTC times); a
    400 for one whose UTC falls outside datetime's years 1..9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"{parameter}: out of range in UTC",
                       {"parameter": parameter}) from None  # fmt: skip


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page starts, and the query it belongs to (a cursor of another is a 400)."""

    symbol: str
    source: str | None
    interval: str | None
    timestamp: datetime
    id: int = 0


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/prices/latest")
    async def latest() -> Response:
        started = time.perf_counter()
        asked = query(LatestQuery)
        symbols = symbol_list(asked.symbols)
        found = await _latest(ctx, symbols, asked.source)
        body = LatestBody(
            data=[found[s][0] for s in symbols if s in found],
            missing=[s for s in symbols if s not in found],
            cached=all(cached for _, cached in found.values()) and len(found) == len(symbols),
            latency_ms=elapsed_ms(started),
        )
        return json_response(body)

    @app.get("/prices/range")
    async def price_range() -> Response:
        started = time.perf_counter()
        asked = query(RangeQuery)
        asked = msgspec.structs.replace(
            asked, start=in_utc(asked.start, "from"), end=in_utc(asked.end, "to")
        )
        (symbol,) = _one_symbol(asked.symbol)
        start = asked.start if asked.cursor is None else _resume(asked, symbol)
        _check_span(asked)
        body: RangeRawBody | RangeCandleBody
        if asked.interval is None:
            raw, next_cursor = await _raw(ctx, asked, symbol, start)
            body = RangeRawBody(data=raw, interval="raw", count=len(raw), next=next_cursor,
                                latency_ms=elapsed_ms(started))  # fmt: skip
        else:
            candles, next_cursor = await _candles(ctx, asked, symbol, start)
            body = RangeCandleBody(data=candles, interval=asked.interval, count=len(candles),
                                   next=next_cursor, latency_ms=elapsed_ms(started))  # fmt: skip
        return json_response(body)


# A symbol's latest item, and whether it was answered from memory.
Found = tuple[LatestItem, bool]


async def _latest(ctx: ApiContext, symbols: list[str], source: str | None) -> dict[str, Found]:
    now = utc_now()
    max_age = timedelta(milliseconds=ctx.consensus.max_age_ms)
    out: dict[str, Found] = {}
    if source is not None:
        held = {s: f for s in symbols if (f := ctx.latest.get(s, source)) is not None}
        rest = [s for s in symbols if s not in held]
        stored = await ctx.reader.latest(rest, source=source) if rest else []
        for feed in [*held.values(), *stored]:
            out[feed.symbol] = _single(feed, now, max_age, cached=feed.symbol in held)
        return out
    rest = []
    for symbol in symbols:
        fresh = [f for f in ctx.latest.by_source(symbol).values() if now - f.timestamp <= max_age]
        if fresh:
            out[symbol] = _aggregate(symbol, fresh, now, cached=True)
        else:
            rest.append(symbol)
    if rest:  # not in memory (a restart, or stale there): the store's fresh sources
        by_symbol: dict[str, list[PriceFeed]] = {}
        for feed in await ctx.reader.latest_by_source(rest, since=now - max_age):
            by_symbol.setdefault(feed.symbol, []).append(feed)
        for symbol, feeds in by_symbol.items():
            out[symbol] = _aggregate(symbol, feeds, now, cached=False)
        stale = [s for s in rest if s not in out]
        held = {s: f for s in stale if (f := ctx.latest.get(s)) is not None}
        older = await ctx.reader.latest([s for s in stale if s not in held]) if stale else []
        for feed in [*held.values(), *older]:
            out[feed.symbol] = _single(feed, now, max_age, cached=feed.symbol in held)
    return out


def _aggregate(symbol: str, feeds: list[PriceFeed], now: datetime, *, cached: bool) -> Found:
    """The median of each source's newest price; the best bid and ask among them."""
    if len(feeds) == 1:
        return _single(feeds[0], now, None, cached=cached)
    newest = max(f.timestamp for f in feeds)
    volumes = [f.volume for f in feeds if f.volume is not None]
    bids = [f.bid for f in feeds if f.bid is not None]
    asks = [f.ask for f in feeds if f.ask is not None]
    item = LatestItem(
        symbol=symbol,
        price=decimal_text(statistics.median(f.price for f in feeds)),
        volume=decimal_text(sum(volumes, Decimal(0))) if volumes else None,
        bid=decimal_text(max(bids)) if bids else None,
        ask=decimal_text(min(asks)) if asks else None,
        source="aggregated",
        sources=sorted(f.source for f in feeds),
        num_sources=len(feeds),
        timestamp=time_text(newest),
        staleness_ms=_age_ms(now, newest),
        stale=False,
    )
    return item, cached


def _single(feed: PriceFeed, now: datetime, max_age: timedelta | None, *, cached: bool) -> Found:
    item = LatestItem(
        **msgspec.structs.asdict(_range_item(feed)),
        sources=[feed.source],
        num_sources=1,
        staleness_ms=_age_ms(now, feed.timestamp),
        stale=max_age is not None and now - feed.timestamp > max_age,
    )
    return item, cached


def _age_ms(now: datetime, then: datetime) -> int:
    return max(0, round((now - then).total_seconds() * 1000))


def _one_symbol(raw: str) -> list[str]:
    symbols = symbol_list(raw)
    if len(symbols) != 1:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "symbol takes one symbol",
                       {"parameter": "symbol"})  # fmt: skip
    return symbols


def _check_span(asked: RangeQuery) -> None:
    if asked.end <= asked.start:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "to must be after from",
                       {"parameter": "to"})  # fmt: skip
    limit, what = (MAX_RAW_SPAN, "90 days of raw feeds") if asked.interval is None else (
        MAX_CANDLE_SPAN, "2 years of candles")  # fmt: skip
    if asked.end - asked.start > limit:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"a range spans at most {what}",
                       {"parameter": "to", "max_days": limit.days})  # fmt: skip


async def _raw(
    ctx: ApiContext, asked: RangeQuery, symbol: str, start: datetime
) -> tuple[list[RawItem], str | None]:
    after = None
    if asked.cursor is not None:  # checked by _resume
        cursor = _decode_cursor(asked.cursor)
        after = RowKey(timestamp=cursor.timestamp, id=cursor.id)
    page = await ctx.reader.feeds_page(
        symbol, start, asked.end, source=asked.source, limit=asked.limit, after=after
    )
    data = [_range_item(f) for f in page.feeds]
    next_cursor = None
    if page.next is not None:
        next_cursor = _encode_cursor(
            _Cursor(symbol, asked.source, None, page.next.timestamp, page.next.id)
        )
    return data, next_cursor


async def _candles(
    ctx: ApiContext, asked: RangeQuery, symbol: str, start: datetime
) -> tuple[list[CandleItem], str | None]:
    assert asked.interval is not None
    width = timedelta(seconds=INTERVALS[asked.interval])
    candles = await ctx.reader.candles(
        symbol, start, asked.end, asked.interval, source=asked.source, limit=asked.limit + 1
    )
    next_cursor = None
    if len(candles) > asked.limit:
        following = candles[asked.limit].timestamp
        candles = candles[: asked.limit]
        next_cursor = _encode_cursor(_Cursor(symbol, asked.source, asked.interval, following))
    now = utc_now()
    return [_candle_item(c, closed=c.timestamp + width <= now) for c in candles], next_cursor


def _resume(asked: RangeQuery, symbol: str) -> datetime:
    """Where a cursor's page starts; a 400 if the cursor is not this query's."""
    assert asked.cursor is not None
    cursor = _decode_cursor(asked.cursor)
    if (cursor.symbol, cursor.source, cursor.interval) != (symbol, asked.source, asked.interval):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor belongs to another query",
                       {"parameter": "cursor"})  # fmt: skip
    if not asked.start <= cursor.timestamp < asked.end:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor is outside [from, to)",
                       {"parameter": "cursor"})  # fmt: skip
    if asked.interval is not None:
        width = INTERVALS[asked.interval]
        if bucket_start(cursor.timestamp, width) != cursor.timestamp:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor is not a candle start",
                           {"parameter": "cursor"})  # fmt: skip
    return cursor.timestamp


_cursor_encoder = msgspec.json.Encoder()
_cursor_decoder = msgspec.json.Decoder(_Cursor)


def _encode_cursor(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(_cursor_encoder.encode(cursor)).decode().rstrip("=")


def _decode_cursor(text: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor is not one this API gave",
                       {"parameter": "cursor"}) from None  # fmt: skip
    if cursor.timestamp.tzinfo is None:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor is not one this API gave",
                       {"parameter": "cursor"})  # fmt: skip
    return msgspec.structs.replace(cursor, timestamp=in_utc(cursor.timestamp, "cursor"))


def _range_item(feed: PriceFeed) -> RawItem:
    return RawItem(
        symbol=feed.symbol,
        price=decimal_text(feed.price),
        volume=optional_decimal_text(feed.volume),
        bid=optional_decimal_text(feed.bid),
        ask=optional_decimal_text(feed.ask),
        source=feed.source,
        timestamp=time_text(feed.timestamp),
    )


def _candle_item(candle: Candle, *, closed: bool) -> CandleItem:
    return CandleItem(
        timestamp=time_text(candle.timestamp),
        open=decimal_text(candle.open),
        high=decimal_text(candle.high),
        low=decimal_text(candle.low),
        close=decimal_text(candle.close),
        volume=optional_decimal_text(candle.volume),
        num_feeds=candle.num_feeds,
        closed=closed,
    )
