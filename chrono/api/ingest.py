"""``POST /internal/ingest``: feeds from collectors that run elsewhere, into the same pipeline.

Contract (internal or admin key, checked by ``ROUTE_ROLES`` before this code runs)::

    POST /internal/ingest   Content-Type: application/json (any charset parameter)
    {"worker_id": "edge-1",                      1..64 characters
     "timestamp": "2026-11-20T12:00:00Z",        RFC 3339 with an offset (checked, not kept)
     "feeds": [{"symbol": "BTC/USD",             canonical BASE/QUOTE
                "price": "67234.56" | 67234.56,  decimal string or JSON number
                "source": "coinbase",            1..64 of [a-z0-9_.-]
                "timestamp": "...Z",             RFC 3339 with an offset
                "volume"?, "bid"?, "ask"?,       decimal string or number, >= 0
                "received_at"?,                  RFC 3339 (Chrono's own wire shape)
                "worker_id"?,                    accepted, ignored: the envelope's wins
                "metadata"?: {...}}, ... 1..100]}

Numbers are decoded by msgspec straight from their text into ``Decimal``, never through float:
``67234.560000`` is stored as ``67234.560000``, ``1e-7`` as ``0.0000001``. ``metadata.bid`` and
``metadata.ask`` stand for absent top-level ones; ``metadata.exchange_timestamp`` (RFC 3339, or
epoch milliseconds as a number) is the exchange's time: it becomes the feed's ``timestamp`` and
the feed's own ``timestamp`` its ``received_at`` (when the edge got it). Without it
``received_at`` is the given one, else now. The keys so used leave the metadata; the rest is kept.

Each feed is decoded and checked on its own (``FeedRules``, as collected feeds are, plus the
rules below), so one bad feed is reported by its index and never fails the others. A feed is
invalid if its source is not as above; volume, bid or ask is negative or not finite; any amount
has more than ``max_decimal_places`` places or ``MAX_DIGITS`` digits in plain text (``1e50``
would be 51); a time is naive or more than ``MAX_FUTURE_S`` ahead of this server's clock;
metadata is not an object; or a field is unknown (a typo must not be silently dropped).

Valid feeds go to ``ctx.intake()`` as one ``Feeds``, as a collector's do (fan-out dedupe, latest
prices, stream, store). A feed repeated within the request, seen by the fan-out lately, or
handed over by this route lately (``_claim``: the fan-out's memory lags the hand-over) is a
duplicate and not sent again; the store's unique key catches anything older.

Answers (errors in the house envelope, ``chrono.api.errors``)::

    200 {"status": "success" | "partial", "ingested", "duplicates", "failed",
         "errors": [{"index", "field", "reason"}], "latency_ms", "message"}
        "partial" when some feeds failed; "success" otherwise (all duplicates included).
        ``field`` names the offending field ("price", "metadata.bid", ...; "feed" when the
        item is not an object); ``reason`` is "code: detail", e.g. "price_not_positive: -1".
    400 VALIDATION_ERROR  not JSON, not the envelope (details.field), a content type other than
                          JSON, 0 or over 100 feeds, or every feed invalid (details.errors).
    413 PAYLOAD_TOO_LARGE a body over 1 MiB: hypercorn for a declared Content-Length (before
                          the key check), Quart's MAX_CONTENT_LENGTH while a chunked body is read.
    503 DATABASE_ERROR    the intake is closed (the service is draining) or took nothing within
                          ``INTAKE_TIMEOUT_S``: nothing of this request was taken, send it again.
                          (The envelope has no better code; the message says which.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from chrono.api.context import ApiContext, elapsed_ms, json_response, msgspec_problem
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.protocol import MAX_BODY_BYTES
from chrono.errors import InvalidFeed
from chrono.feeds import Feeds
from chrono.model import (
    FeedKey,
    FeedRules,
    PriceFeed,
    RecentKeys,
    check_amount,
    time_text,
    utc_now,
)

MAX_FEEDS = 100
MAX_FUTURE_S = 60.0  # a feed time further ahead is clock skew, not a price
INTAKE_TIMEOUT_S = 10.0  # a pipeline that takes nothing this long gets the batch back (503)
HANDED_WINDOW = 20_000  # feed keys remembered: 200 full requests, far past the fan-out's lag

_SOURCE = re.compile(r"[a-z0-9_.-]{1,64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_MS_DIGITS = 15  # epoch ms has 13 digits until 2286; more is not a time
_NULL = msgspec.Raw(b"null")


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    worker_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    timestamp: datetime
    feeds: list[msgspec.Raw]  # each decoded alone, so a bad one is reported by its index


class _Feed(msgspec.Struct, forbid_unknown_fields=True):
    symbol: str
    price: Decimal
    source: str
    timestamp: datetime
    volume: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    received_at: datetime | None = None
    worker_id: str | None = None
    metadata: msgspec.Raw = msgspec.Raw()  # split by _metadata (bid/ask/time as Decimal)


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_feed_decoder = msgspec.json.Decoder(_Feed)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_amount_decoder = msgspec.json.Decoder(Decimal | None)
_time_decoder = msgspec.json.Decoder(datetime)
_value_decoder = msgspec.json.Decoder()


class _Invalid(Exception):
    """One feed's problem: the field it is in and ``code: detail``."""

    def __init__(self, field: str, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.field = field
        self.reason = f"{code}: {detail}"


def _claim(handed: RecentKeys, feeds: Sequence[PriceFeed], seen: Callable[[FeedKey], bool]
           ) -> list[PriceFeed]:  # fmt: skip
    """The feeds neither the fan-out nor this route saw lately (nor earlier in ``feeds``), now
    remembered as handed over. The fan-out's ``seen`` only knows a feed once it has left the
    intake queue, so without ``handed`` two requests racing with the same feed, or a batch
    resent at once, would each count it as new. No checkpoint here: two requests cannot both
    claim a key."""
    return [f for f in feeds if not seen(key := f.key()) and handed.first_time(key)]


def register(app: QuartTrio, ctx: ApiContext) -> None:
    handed = RecentKeys(HANDED_WINDOW)  # feeds this route handed over lately

    @app.post("/internal/ingest")
    async def ingest() -> Response:
        started = time.perf_counter()
        envelope = _envelope(await _body())
        now = utc_now()
        feeds: list[PriceFeed] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(envelope.feeds):
            try:
                feeds.append(_feed(raw, envelope.worker_id, ctx.rules, now))
            except _Invalid as bad:
                errors.append({"index": index, "field": bad.field, "reason": bad.reason})
        if not feeds:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                f"all {len(errors)} feeds are invalid",
                {"errors": errors},
            )
        fresh = _claim(handed, feeds, ctx.seen)
        if fresh:
            try:
                await _hand_over(ctx, fresh)
            except BaseException:
                handed.forget(f.key() for f in fresh)  # not taken: a retry sends them
                raise
        duplicates, failed = len(feeds) - len(fresh), len(errors)
        return json_response(
            {
                "status": "partial" if errors else "success",
                "ingested": len(fresh),
                "duplicates": duplicates,
                "failed": failed,
                "errors": errors,
                "latency_ms": elapsed_ms(started),
                "message": f"ingested {len(fresh)}, duplicates {duplicates}, failed {failed}",
            }
        )


async def _body() -> bytes:
    if request.mimetype != "application/json":
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "a JSON body is expected (Content-Type: application/json)",
            {"content_type": request.content_type or ""},
        )
    # Quart raises 413 as soon as a body (chunked too) passes MAX_CONTENT_LENGTH; this check
    # holds the limit even if that setting changes.
    body = await request.get_data(cache=False, as_text=False)
    assert isinstance(body, bytes)  # as_text=False; Quart's overloads say str | bytes
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"request body over {MAX_BODY_BYTES} bytes",
            {"limit_bytes": MAX_BODY_BYTES},
        )
    return body


def _envelope(body: bytes) -> _Envelope:
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.ValidationError as exc:
        field, code, detail = msgspec_problem(str(exc))
        where = field or "the body"
        raise ApiError(
            ErrorCode.VALIDATION_ERROR, f"{where}: {detail}", {"field": field, "reason": code}
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            f"the body is not valid JSON: {exc}",
            {"field": "", "reason": "not_json"},
        ) from None
    if envelope.timestamp.tzinfo is None:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "timestamp: a time with a UTC offset is expected",
            {"field": "timestamp", "reason": "timestamp_naive"},
        )
    count = len(envelope.feeds)
    if not 1 <= count <= MAX_FEEDS:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            f"feeds: 1 to {MAX_FEEDS} feeds per request, got {count}",
            {"field": "feeds", "reason": "feed_count", "count": count, "max": MAX_FEEDS},
        )
    return envelope


def _feed(raw: msgspec.Raw, worker_id: str, rules: FeedRules, now: datetime) -> PriceFeed:
    """One item of ``feeds`` as a checked ``PriceFeed``, else ``_Invalid``."""
    try:
        item = _feed_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        field, code, detail = msgspec_problem(str(exc))
        raise _Invalid(field or "feed", code, detail) from None
    if not _SOURCE.fullmatch(item.source):
        raise _Invalid("source", "bad_source", f"{item.source!r} is not 1-64 of [a-z0-9_.-]")
    metadata, bid, ask, exchange_time = _metadata(item)
    timestamp = _utc(item.timestamp, "timestamp")
    if exchange_time is not None:
        received_at, timestamp, time_field = timestamp, exchange_time, "metadata.exchange_timestamp"
    else:
        time_field = "timestamp"
        given = item.received_at
        received_at = now if given is None else _utc(given, "received_at")
    feed = PriceFeed(
        symbol=item.symbol,
        price=item.price,
        timestamp=timestamp,
        received_at=received_at,
        source=item.source,
        worker_id=worker_id,
        volume=item.volume,
        bid=bid,
        ask=ask,
        metadata=metadata,
    )
    if feed.volume is not None:  # before FeedRules', so a bid in metadata is named so
        _check_amount("volume", feed.volume, rules.max_places)
    for name, amount, top_level in (("bid", bid, item.bid), ("ask", ask, item.ask)):
        if amount is not None:
            _check_amount(name, amount, rules.max_places, in_metadata=top_level is None)
    try:
        rules.check(feed)
    except InvalidFeed as exc:
        field = "symbol" if exc.reason == "bad_symbol" else exc.reason.partition("_")[0]
        raise _Invalid(field, exc.reason, exc.detail) from None
    _check_amount("price", feed.price, rules.max_places)
    limit = now + timedelta(seconds=MAX_FUTURE_S)
    for name, moment in ((time_field, timestamp), ("received_at", received_at)):
        if moment > limit:
            ahead = (moment - now).total_seconds()
            raise _Invalid(
                name,
                "timestamp_in_future",
                f"{time_text(moment)} is {ahead:.0f} s ahead of the server's clock",
            )
    return feed


def _metadata(
    item: _Feed,
) -> tuple[dict[str, Any], Decimal | None, Decimal | None, datetime | None]:
    """``item.metadata`` split into the rest, bid, ask and the exchange's time; the amounts and
    time are decoded from their JSON text, so a number never passes through float."""
    bid, ask = item.bid, item.ask
    raw = item.metadata
    if not raw or raw == _NULL:
        return {}, bid, ask, None
    try:
        fields = _fields_decoder.decode(raw)
    except msgspec.ValidationError:
        raise _Invalid(
            "metadata", "metadata_not_object", "metadata must be a JSON object"
        ) from None
    if bid is None and "bid" in fields:
        bid = _meta_amount(fields.pop("bid"), "bid")
    if ask is None and "ask" in fields:
        ask = _meta_amount(fields.pop("ask"), "ask")
    exchange_time = None
    if "exchange_timestamp" in fields:
        exchange_time = _exchange_time(fields.pop("exchange_timestamp"))
    return {k: _value_decoder.decode(v) for k, v in fields.items()}, bid, ask, exchange_time


def _meta_amount(raw: msgspec.Raw, name: str) -> Decimal | None:
    try:
        value: Decimal | None = _amount_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        _, code, detail = msgspec_problem(str(exc))
        raise _Invalid(f"metadata.{name}", code, detail) from None
    return value


def _exchange_time(raw: msgspec.Raw) -> datetime | None:
    """RFC 3339 text, or epoch milliseconds as a JSON number (decoded as ``Decimal``)."""
    field = "metadata.exchange_timestamp"
    if raw == _NULL:
        return None
    try:
        if bytes(raw).startswith(b'"'):
            return _utc(_time_decoder.decode(raw), field)
        ms = _amount_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _Invalid(field, "invalid_value", msgspec_problem(str(exc))[2]) from None
    assert ms is not None  # null was handled above
    if not ms.is_finite() or ms < 0 or ms.adjusted() >= _MAX_EPOCH_MS_DIGITS:
        raise _Invalid(field, "invalid_value", f"{ms} is not epoch milliseconds")
    return _EPOCH + timedelta(microseconds=int(ms * 1000))


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise _Invalid(field, "timestamp_naive", f"{value.isoformat()} has no UTC offset")
    return value.astimezone(UTC)


def _check_amount(name: str, value: Decimal, max_places: int, *, in_metadata: bool = False) -> None:
    """``check_amount`` at this server's places (``FeedRules`` checked the price's sign), named
    by the field the caller sent it in."""
    try:
        check_amount(name, value, max_places)
    except InvalidFeed as exc:
        raise _Invalid(
            f"metadata.{name}" if in_metadata else name, exc.reason, exc.detail
        ) from None


async def _hand_over(ctx: ApiContext, feeds: list[PriceFeed]) -> None:
    """Into the pipeline as one list, or a 503 when nothing was taken (a memory channel's send
    is all or nothing, also when cancelled)."""
    stopping = ApiError(
        ErrorCode.DATABASE_ERROR, "the service is stopping: nothing was taken, send the feeds again"
    )
    batch = Feeds.of(feeds)
    try:
        async with ctx.intake() as send:
            with trio.move_on_after(INTAKE_TIMEOUT_S) as waiting:
                await send.send(batch)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        raise stopping from None
    if waiting.cancelled_caught:
        raise ApiError(
            ErrorCode.DATABASE_ERROR,
            f"the pipeline took nothing within {INTAKE_TIMEOUT_S:g} s: send again",
            {"timeout_s": INTAKE_TIMEOUT_S},
        )
