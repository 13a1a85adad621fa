"""Kraken spot, ``ticker`` channel: wire version v2 (the default) and the registry entry.

v2 (``wss://ws.kraken.com/v2``) spells pairs the canonical way (``BTC/USD``), sends prices as
JSON *numbers* and stamps each ticker with an RFC 3339 µs ``timestamp``. The frozen v1
(``wss://ws.kraken.com``) lives in ``kraken_v1``, what both share (symbol spellings, the adapter
base, decoding, limits) in ``kraken_common``. A collector picks v1 with ``protocol = "v1"``
(``EXCHANGE.protocols``); both entries share the name (and feed source) ``kraken``: one market,
one connection budget.

Frames decode in two steps into typed Structs: a small shape (``channel``/``method``) picks the
tagged union the frame belongs to. msgspec reads a JSON number into ``Decimal`` from its exact
text, so ``0.10035`` stays ``0.10035`` (never a float). Fields the adapter does not use
(``connection_id``, which exceeds 2**53, the rolling 24 h statistics) are skipped, never
converted. A ticker's ``timestamp`` is typed from the last of its keys only (``msgspec.Raw``,
then ``AwareDatetime``), as the fast path reads it (``chrono.exchanges.fast``).

Errors: every bad frame raises ``InvalidFrame`` (``malformed``, ``schema`` or ``unknown_type``;
see ``kraken_common``); nothing else escapes ``parse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, ParsedFrame
from chrono.exchanges.decoding import NULL, OPTIONAL_TIME, as_utc, decode
from chrono.exchanges.fast import Received, TextRules, decode_each, plain_text, utc_time
from chrono.exchanges.kraken_common import (
    _LIMITS,
    _PING_INTERVAL_S,
    SOURCE,
    KrakenAdapterBase,
    _encode,
    native_symbol,
)
from chrono.exchanges.kraken_v1 import V1_EXCHANGE
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed

# --- v2 wire data ---------------------------------------------------------------------------


class _V2Shape(msgspec.Struct, frozen=True):
    """Which family a v2 frame is: a channel message or a reply to a method."""

    channel: str | None = None
    method: str | None = None


class StatusData(msgspec.Struct, frozen=True):
    system: str = ""
    api_version: str = ""
    version: str = ""


class V2Status(msgspec.Struct, frozen=True, tag_field="channel", tag="status"):
    data: list[StatusData] = []


class V2Heartbeat(msgspec.Struct, frozen=True, tag_field="channel", tag="heartbeat"):
    pass


class TickerData(msgspec.Struct, frozen=True):
    """The fields Chrono keeps; ``last`` is absent on a pair untraded for 24 h. ``timestamp``
    stays raw until ``_typed_times`` types it (``OPTIONAL_TIME``)."""

    symbol: str
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    volume: Decimal | None = None
    timestamp: msgspec.Raw = NULL  # missing in the early v2 schema


class V2Ticker(msgspec.Struct, frozen=True, tag_field="channel", tag="ticker"):
    data: list[TickerData]
    type: str = ""  # snapshot | update: the same schema


class ReplyResult(msgspec.Struct, frozen=True):
    channel: str = ""
    symbol: str = ""


class _Reply(msgspec.Struct, frozen=True, tag_field="method"):
    """A (un)subscribe reply: ``result`` on success; ``error`` and ``symbol`` on failure."""

    success: bool = False
    result: ReplyResult | None = None
    error: str = ""
    symbol: str = ""
    req_id: int | None = None


class V2Subscribe(_Reply, frozen=True, tag="subscribe"):
    pass


class V2Unsubscribe(_Reply, frozen=True, tag="unsubscribe"):
    pass


class V2Pong(msgspec.Struct, frozen=True, tag_field="method", tag="pong"):
    req_id: int | None = None


class V2Error(msgspec.Struct, frozen=True, tag_field="method", tag="error"):
    error: str = ""


V2Channel = V2Status | V2Heartbeat | V2Ticker
V2Method = V2Subscribe | V2Unsubscribe | V2Pong | V2Error


# The fast path's: prices are JSON numbers, read as on the full path (``Decimal``, from their
# exact text) and written in the store's form; the time is kept as the exchange's text, checked
# after the decode (``utc_time``: one regex call, cheaper than a ``pattern`` field). Only the
# keys a ticker or heartbeat has (no ``method``, which would make it a reply to the full path).
class _FastTickerData(msgspec.Struct, frozen=True, gc=False):
    symbol: str
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    volume: Decimal | None = None
    timestamp: str | None = None


class _FastTicker(
    msgspec.Struct,
    frozen=True,
    gc=False,
    tag_field="channel",
    tag="ticker",
    forbid_unknown_fields=True,
):
    data: list[_FastTickerData]
    type: str = ""


class _FastHeartbeat(
    msgspec.Struct, frozen=True, tag_field="channel", tag="heartbeat", forbid_unknown_fields=True
):
    pass


_FAST_DECODER: Final = msgspec.json.Decoder(_FastTicker | _FastHeartbeat)
_V2_SHAPE: Final = msgspec.json.Decoder(_V2Shape)
_V2_CHANNELS: Final[msgspec.json.Decoder[V2Channel]] = msgspec.json.Decoder(V2Channel)
_V2_METHODS: Final[msgspec.json.Decoder[V2Method]] = msgspec.json.Decoder(V2Method)
_V2_CHANNEL_TAGS: Final = frozenset({"status", "heartbeat", "ticker"})
_V2_METHOD_TAGS: Final = frozenset({"subscribe", "unsubscribe", "pong", "error"})


# --- adapter --------------------------------------------------------------------------------


class KrakenAdapter(KrakenAdapterBase):
    """The v2 protocol for one connection's fixed pairs. Pure: no I/O, no clock."""

    def _request(self, method: str, natives: list[str]) -> dict[str, Any]:
        """``snapshot`` makes a (re)subscribe answer with the pair's current ticker at once."""
        params: dict[str, Any] = {"channel": "ticker", "symbol": natives}
        if method == "subscribe":
            params["snapshot"] = True
        return {"method": method, "params": params, "req_id": next(self._req_ids)}

    def ping_message(self) -> str:
        """``{"method":"ping","req_id":N}``; answered by a ``pong`` (HEARTBEAT)."""
        return _encode({"method": "ping", "req_id": next(self._req_ids)})

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        message = _decode_v2(frame)
        if isinstance(message, V2Ticker):
            return self._parse_ticker(message, received_at)
        if isinstance(message, V2Heartbeat | V2Pong):
            beat = "heartbeat" if isinstance(message, V2Heartbeat) else "pong"
            return ParsedFrame(FrameKind.HEARTBEAT, message=beat)
        if isinstance(message, V2Status):
            return _parse_v2_status(message)
        if isinstance(message, V2Error):
            return ParsedFrame(FrameKind.ERROR, message=message.error or "error")
        return self._parse_reply(message)

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Tickers of ours and heartbeats only, every price finite and positional, the time
        fixed-width UTC text (or absent); else ``None`` (``chrono.exchanges.fast``)."""
        to_canonical, feeds = self._symbols.to_canonical, []
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        if (decoded := decode_each(_FAST_DECODER, frames)) is None:
            return None
        for message in decoded:
            if type(message) is not _FastTicker:
                continue  # a heartbeat
            if not message.data:
                return None
            for tick in message.data:
                if (symbol := to_canonical(tick.symbol)) is None or tick.last is None:
                    return None
                price_text = plain_text(tick.last)
                if price_text is None or (price := rules.price(symbol, price_text)) is None:
                    return None
                if tick.timestamp is None:
                    time, time_text = received_at, received_text
                elif (parsed := utc_time(tick.timestamp)) is None:
                    return None
                else:
                    time, time_text = parsed, tick.timestamp
                bid, ask, volume = tick.bid, tick.ask, tick.volume
                bid_text = None if bid is None else plain_text(bid)
                ask_text = None if ask is None else plain_text(ask)
                volume_text = None if volume is None else plain_text(volume)
                if (
                    (bid_text is None and bid is not None)
                    or (ask_text is None and ask is not None)
                    or (volume_text is None and volume is not None)
                ):
                    return None  # NaN, negative, an exponent: the full path's to judge
                feeds.append(PriceFeed(
                    symbol=symbol, price=price, timestamp=time, received_at=received_at,
                    source=SOURCE, worker_id=worker_id, volume=volume, bid=bid, ask=ask,
                    metadata={"native_symbol": tick.symbol},
                    text=FeedText(price_text, volume_text, bid_text, ask_text, time_text,
                                  received_text),
                ))  # fmt: skip
        return Feeds.of(feeds)

    def _parse_ticker(self, message: V2Ticker, received_at: datetime) -> ParsedFrame:
        """Ticks for one or more pairs (docs/exchanges.md, doc example, trimmed)::

            {"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,
             "bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,
             "volume":997038.98383185,"timestamp":"2023-09-25T09:04:31.742648Z"}]}

        One feed per entry; an entry without ``last`` is skipped ``no_price``, one for a pair
        this collector does not hold ``unknown_symbol``. No ``timestamp``: ``received_at``.
        """
        parsed = ParsedFrame(FrameKind.DATA)
        for tick, timestamp in zip(message.data, _typed_times(message.data), strict=True):
            symbol = self._symbols.to_canonical(tick.symbol)
            if symbol is None or tick.last is None:
                parsed.skipped.append("unknown_symbol" if symbol is None else "no_price")
                continue
            time = received_at if timestamp is None else as_utc(timestamp)
            book = (tick.bid, tick.ask, tick.volume)
            feed = self._feed(
                symbol, tick.symbol, tick.last, time=time, received_at=received_at, book=book
            )
            parsed.feeds.append(feed)
        return parsed

    def _parse_reply(self, reply: V2Subscribe | V2Unsubscribe) -> ParsedFrame:
        """One reply per pair (docs/exchanges.md)::

            {"method":"subscribe","result":{"channel":"ticker","symbol":"BTC/USD",
             "snapshot":true},"success":true,"time_in":"...","time_out":"...","req_id":1}
            {"error":"Currency pair not supported XBT/USD","method":"subscribe",
             "success":false,"symbol":"XBT/USD","time_in":"...","time_out":"..."}

        A ticker subscribe is an ACK, a refusal an ERROR ("subscribe BTC/USD: Already
        subscribed"), both naming the pair; an unsubscribe (or another channel's) is INFO.
        """
        method = "subscribe" if isinstance(reply, V2Subscribe) else "unsubscribe"
        if not reply.success:
            native = reply.symbol or (reply.result.symbol if reply.result else "")
            text = f"{method} {native}: {reply.error}" if native else f"{method}: {reply.error}"
            return ParsedFrame(FrameKind.ERROR, message=text, symbols=self._mine(native))
        result = reply.result or ReplyResult()
        if method == "subscribe" and result.channel == "ticker":
            symbols = self._mine(result.symbol)
            return ParsedFrame(FrameKind.ACK, message=result.symbol, symbols=symbols)
        return ParsedFrame(FrameKind.INFO, message=f"{method}d {result.channel} {result.symbol}")


# --- helpers --------------------------------------------------------------------------------


def _parse_v2_status(status: V2Status) -> ParsedFrame:
    """Sent on connect and on a system change (docs/exchanges.md)::

    {"channel":"status","type":"update","data":[{"api_version":"v2",
     "connection_id":13834774380200032777,"system":"online","version":"2.0.0"}]}
    """
    text = ", ".join(f"system {d.system} (version {d.version})" for d in status.data)
    return ParsedFrame(FrameKind.INFO, message=text or "status")


def _typed_times(data: list[TickerData]) -> list[datetime | None]:
    """Every entry's ``timestamp``, typed before any entry is looked at, as when it was a typed
    field: a bad one is ``schema`` (msgspec's message and path), whatever the entry's pair.
    Typed plainly first; only a failure is typed again with ``decode`` for its message."""
    time = OPTIONAL_TIME.decode
    try:
        return [time(tick.timestamp) for tick in data]
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
        return [
            decode(OPTIONAL_TIME, tick.timestamp, at=f"data[{index}].timestamp")
            for index, tick in enumerate(data)
        ]


def _decode_v2(frame: str | bytes) -> V2Channel | V2Method:
    shape = decode(_V2_SHAPE, frame)
    if shape.channel is not None:
        if shape.channel not in _V2_CHANNEL_TAGS:
            raise InvalidFrame("unknown_type", shape.channel)
        return decode(_V2_CHANNELS, frame)
    if shape.method is not None:
        if shape.method not in _V2_METHOD_TAGS:
            raise InvalidFrame("unknown_type", shape.method)
        return decode(_V2_METHODS, frame)
    raise InvalidFrame("schema", "neither channel nor method")


EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://ws.kraken.com/v2",
    adapter=KrakenAdapter,
    native_symbol=native_symbol,
    limits=_LIMITS,
    quote_aliases={},
    ping_interval_s=_PING_INTERVAL_S,
    version="v2",
    protocols={"v1": V1_EXCHANGE},
)
