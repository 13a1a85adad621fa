"""Kraken spot, ``ticker`` channel, wire version v1 (``wss://ws.kraken.com``, frozen).

v1 spells pairs ``XBT/USD``/``XDG/USD``, sends ticks as arrays of decimal strings and carries no
time at all, so v1 feeds are stamped with ``received_at``. A collector picks it with
``protocol = "v1"``: ``V1_EXCHANGE`` is reached through the ``protocols`` of the ``kraken``
registry entry (v2, in ``kraken``) and shares its name, feed source and limits
(``kraken_common``): one market, one connection budget.

Frames decode in two steps into typed Structs: an object frame's ``event`` (or the bare
rate-limit ``Error``) picks the tagged union of events; an array is a channel message. Prices
decode from their exact decimal text into ``Decimal`` (never a float). Fields the adapter does
not use (``connectionID``, which exceeds 2**53, the rolling 24 h statistics) are skipped, never
converted. A ticker's decimal lists are typed from the last of their keys only (``msgspec.Raw``,
then ``list[Decimal]``), as the fast path reads them (``chrono.exchanges.fast``).

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
from chrono.exchanges.base import Exchange, FrameKind, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import DECIMAL, decode
from chrono.exchanges.fast import PLAIN_RE, Received, TextRules, texts_pattern
from chrono.exchanges.kraken_common import (
    _LIMITS,
    _PING_INTERVAL_S,
    SOURCE,
    KrakenAdapterBase,
    _encode,
    v1_native_symbol,
)
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed

# --- v1 wire data ---------------------------------------------------------------------------


class _V1Shape(msgspec.Struct, frozen=True):
    """A v1 object frame: an ``event``, or the bare rate-limit ``{"Error": ...}``."""

    event: str | None = None
    error: str | None = msgspec.field(default=None, name="Error")


class V1SystemStatus(msgspec.Struct, frozen=True, tag_field="event", tag="systemStatus"):
    status: str = ""
    version: str = ""


class V1Subscription(msgspec.Struct, frozen=True):
    name: str = ""


class V1SubscriptionStatus(
    msgspec.Struct, frozen=True, tag_field="event", tag="subscriptionStatus", rename="camel"
):
    status: str = ""
    pair: str = ""
    subscription: V1Subscription = V1Subscription()
    error_message: str = ""


class V1Heartbeat(msgspec.Struct, frozen=True, tag_field="event", tag="heartbeat"):
    pass


class V1Pong(msgspec.Struct, frozen=True, tag_field="event", tag="pong"):
    reqid: int | None = None


class V1Error(msgspec.Struct, frozen=True, tag_field="event", tag="error", rename="camel"):
    error_message: str = ""


_EMPTY: Final = msgspec.Raw(b"[]")  # an absent list: empty, as a typed field's default


class V1RawTicker(msgspec.Struct, frozen=True):
    """A ticker payload as sent: its decimal lists raw until ``_typed`` types them."""

    a: msgspec.Raw = _EMPTY
    b: msgspec.Raw = _EMPTY
    c: msgspec.Raw = _EMPTY
    v: msgspec.Raw = _EMPTY
    t: list[int] = []


class V1Ticker(msgspec.Struct, frozen=True):
    """A ticker payload: each field a list; whole-lot volumes and trade counts are ints."""

    a: list[Decimal] = []  # ask: [price, whole-lot volume, lot volume]
    b: list[Decimal] = []  # bid: the same
    c: list[Decimal] = []  # last trade: [price, lot volume]
    v: list[Decimal] = []  # volume: [today, last 24 h]
    t: list[int] = []  # trade count: [today, last 24 h]


V1Event = V1SystemStatus | V1SubscriptionStatus | V1Heartbeat | V1Pong | V1Error

_V1_FRAME: Final[msgspec.json.Decoder[_V1Shape | list[msgspec.Raw]]] = msgspec.json.Decoder(
    _V1Shape | list[msgspec.Raw]
)
_V1_EVENTS: Final[msgspec.json.Decoder[V1Event]] = msgspec.json.Decoder(V1Event)
_V1_EVENT_TAGS: Final = frozenset(
    {"systemStatus", "subscriptionStatus", "heartbeat", "pong", "error"}
)
_V1_TICKER: Final = msgspec.json.Decoder(V1RawTicker)
_DECIMALS: Final = msgspec.json.Decoder(list[Decimal])
_RAWS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_STR: Final = msgspec.json.Decoder(str)


# The fast path's: each list of the one shape Kraken sends, its texts checked after the decode
# (``_TEXTS``, one regex call: cheaper than a ``pattern`` field). A list of another length, or
# an item of another type, fails the decode (``forbid_unknown_fields``): the full path's.
class _TextLevel(
    msgspec.Struct, frozen=True, gc=False, array_like=True, forbid_unknown_fields=True
):
    """``a`` or ``b``: ``[price, whole-lot volume, lot volume]``."""

    price: str
    whole_lots: int
    lots: str


class _TextPair(msgspec.Struct, frozen=True, gc=False, array_like=True, forbid_unknown_fields=True):
    """``c`` (``[price, lot volume]``) or ``v`` (``[today, last 24 h]``)."""

    first: str
    second: str


class _TextV1Payload(msgspec.Struct, frozen=True, gc=False):
    """``V1Ticker`` with its decimals as the exchange's text, every list present."""

    a: _TextLevel
    b: _TextLevel
    c: _TextPair
    v: _TextPair
    t: list[int] = []


class _TextV1Tick(
    msgspec.Struct, frozen=True, gc=False, array_like=True, forbid_unknown_fields=True
):
    """``[channelID, payload, "ticker", pair]``, exactly four items."""

    channel_id: msgspec.Raw
    payload: _TextV1Payload
    name: str
    pair: str


_FAST_DECODER: Final = msgspec.json.Decoder(_TextV1Tick)
# A tick's c, v, b and a texts in one check: a plain price and plain amounts.
_TEXTS: Final = texts_pattern(*[PLAIN_RE] * 8)
_HEARTBEAT: Final = b'{"event":"heartbeat"}'  # as sent; any other spelling: the full path

# --- adapter --------------------------------------------------------------------------------


class KrakenV1Adapter(KrakenAdapterBase):
    """The v1 protocol for one connection's fixed pairs. Pure (no I/O, no clock); remembers
    each pair's last trade to skip repeats (``_parse_ticker``)."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        super().__init__(symbols, worker_id)
        self._last: dict[str, tuple[object, ...]] = {}

    def _request(self, method: str, natives: list[str]) -> dict[str, Any]:
        subscription = {"name": "ticker"}
        return {
            "event": method, "pair": natives, "subscription": subscription,
            "reqid": next(self._req_ids),
        }  # fmt: skip

    def ping_message(self) -> str:
        """``{"event":"ping","reqid":N}``; answered by a ``pong`` (HEARTBEAT)."""
        return _encode({"event": "ping", "reqid": next(self._req_ids)})

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        shape = decode(_V1_FRAME, frame)
        if isinstance(shape, list):
            return self._parse_channel(shape, received_at)
        if shape.error is not None:
            # {"Error":"Exceeded msg rate"}: the rate limit (dynamic, undocumented).
            return ParsedFrame(FrameKind.ERROR, message=shape.error)
        if shape.event is None:
            raise InvalidFrame("schema", "an object frame without event")
        if shape.event not in _V1_EVENT_TAGS:
            raise InvalidFrame("unknown_type", shape.event)
        return self._parse_event(decode(_V1_EVENTS, frame))

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Ticker arrays of ours and heartbeats only, every list of Kraken's shape and every
        decimal canonical text, no repeated trade; else ``None`` (``chrono.exchanges.fast``).
        The last-trade memory (``_parse_ticker``) moves only when the whole read is taken."""
        decode, to_canonical, feeds = _FAST_DECODER.decode, self._symbols.to_canonical, []
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        price_of, texts = rules.price_of_plain, _TEXTS
        last, seen = self._last, dict[str, tuple[object, ...]]()
        for frame in frames:
            if frame == _HEARTBEAT:
                continue
            try:
                tick = decode(frame)
            except (msgspec.DecodeError, UnicodeError):
                return None
            pair, payload = tick.pair, tick.payload
            c, v, b, a = payload.c, payload.v, payload.b, payload.a
            price_text, volume_text, bid_text, ask_text = c.first, v.second, b.price, a.price
            if (
                texts(f"{price_text},{c.second},{v.first},{volume_text},{bid_text},{b.lots},"
                      f"{ask_text},{a.lots}") is None
                or tick.name != "ticker"
                or (symbol := to_canonical(pair)) is None
                or (price := price_of(symbol, price_text)) is None
            ):  # fmt: skip
                return None
            trade = ((price, Decimal(c.second)), (Decimal(v.first),), tuple(payload.t[:1]))
            if (seen[pair] if pair in seen else last.get(pair)) == trade:
                return None  # a repeat: skipped
            seen[pair] = trade
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=received_at, received_at=received_at,
                source=SOURCE, worker_id=worker_id, volume=Decimal(volume_text),
                bid=Decimal(bid_text), ask=Decimal(ask_text), metadata={"native_symbol": pair},
                text=FeedText(price_text, volume_text, bid_text, ask_text, received_text,
                              received_text),
            ))  # fmt: skip
        last.update(seen)
        return Feeds.of(feeds)

    def _parse_event(self, event: V1Event) -> ParsedFrame:
        """Control frames (real capture, cryptofeed ``KRAKEN.ws.49.0``)::

            {"connectionID":14545728493745856413,"event":"systemStatus","status":"online",...}
            {"event":"heartbeat"}

        Heartbeats and pongs are HEARTBEAT, ``systemStatus`` (sent on connect) INFO, an
        ``{"event":"error","errorMessage":...}`` ERROR.
        """
        if isinstance(event, V1Heartbeat | V1Pong):
            beat = "heartbeat" if isinstance(event, V1Heartbeat) else "pong"
            return ParsedFrame(FrameKind.HEARTBEAT, message=beat)
        if isinstance(event, V1SystemStatus):
            text = f"systemStatus {event.status} (version {event.version})"
            return ParsedFrame(FrameKind.INFO, message=text)
        if isinstance(event, V1Error):
            return ParsedFrame(FrameKind.ERROR, message=event.error_message or "error")
        return self._parse_subscription(event)

    def _parse_subscription(self, status: V1SubscriptionStatus) -> ParsedFrame:
        """One per pair (real capture / docs/exchanges.md)::

            {"channelID":1668,"channelName":"ticker","event":"subscriptionStatus",
             "pair":"WAVES/EUR","status":"subscribed","subscription":{"name":"ticker"}}
            {"errorMessage":"Currency pair not in ISO 4217-A3 format XBT-USDT",
             "event":"subscriptionStatus","pair":"XBT-USDT","status":"error",...}

        ``subscribed`` to ticker is an ACK, ``error`` an ERROR (both naming the pair), the
        rest (``unsubscribed``, other channels) INFO.
        """
        pair, symbols = status.pair, self._mine(status.pair)
        if status.status == "error":
            text = f"{pair}: {status.error_message}" if pair else status.error_message
            return ParsedFrame(FrameKind.ERROR, message=text, symbols=symbols)
        if status.status == "subscribed" and status.subscription.name == "ticker":
            return ParsedFrame(FrameKind.ACK, message=pair, symbols=symbols)
        text = f"{status.status} {status.subscription.name} {pair}"
        return ParsedFrame(FrameKind.INFO, message=text)

    def _parse_channel(self, items: list[msgspec.Raw], received_at: datetime) -> ParsedFrame:
        """``[channelID, payload, channelName, pair]``; only ``ticker`` is this protocol's."""
        if len(items) < 2:
            raise InvalidFrame("schema", f"a channel array of {len(items)} items")
        name = decode(_STR, items[-2])
        if name != "ticker":
            raise InvalidFrame("unknown_type", name)
        if len(items) != 4:
            raise InvalidFrame("schema", f"a ticker array of {len(items)} items")
        tick = _typed(decode(_V1_TICKER, items[1]))
        return self._parse_ticker(tick, decode(_STR, items[3]), received_at)

    def _parse_ticker(self, tick: V1Ticker, pair: str, received_at: datetime) -> ParsedFrame:
        """One pair's ticker (real capture, trimmed)::

            [468,{"a":["56218.30000",0,"0.13690578"],"b":["56119.10000",0,"0.03333108"],
             "c":["56218.30000","0.01309422"],"v":["27.65107371","37.46739855"],
             "t":[1300,1955],...},"ticker","XBT/CHF"]

        Price ``c[0]``, bid ``b[0]``, ask ``a[0]``, 24 h volume ``v[1]``, time ``received_at``.
        v1 ticks carry no time, so a resubscribe's (or a reconnect's) snapshot repeats the
        last ticker with a new receipt time and would make a stale price look fresh. The last
        trade (``c``) with today's volume and trade count (``v[0]``, ``t[0]``: every trade
        moves them) is kept per pair, and a ticker that repeats it is skipped ``repeat``.
        The rolling 24 h fields are left out: they drift with no trade. The memory is the
        adapter's, so during a make-before-break rotation the second connection's copy of a
        trade is skipped too (the first copy was kept).
        """
        symbol = self._symbols.to_canonical(pair)
        if symbol is None or not tick.c:
            return ParsedFrame(
                FrameKind.DATA, skipped=["unknown_symbol" if symbol is None else "no_price"]
            )
        trade = (tuple(tick.c), tuple(tick.v[:1]), tuple(tick.t[:1]))
        if self._last.get(pair) == trade:
            return ParsedFrame(FrameKind.DATA, skipped=["repeat"])
        self._last[pair] = trade
        book = (
            tick.b[0] if tick.b else None,
            tick.a[0] if tick.a else None,
            tick.v[1] if len(tick.v) > 1 else None,
        )
        feed = self._feed(
            symbol, pair, tick.c[0], time=received_at, received_at=received_at, book=book
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])


def _typed(raw: V1RawTicker) -> V1Ticker:
    """The payload with its decimal lists typed, in the exchange's key order, as when they were
    typed fields: a bad one is ``schema`` with msgspec's message and path."""
    return V1Ticker(
        a=_decimals(raw.a, "a"), b=_decimals(raw.b, "b"), c=_decimals(raw.c, "c"),
        v=_decimals(raw.v, "v"), t=raw.t,
    )  # fmt: skip


def _decimals(raw: msgspec.Raw, at: str) -> list[Decimal]:
    """``raw`` as ``list[Decimal]`` in one decode; a bad list is decoded again item by item
    (``decode`` with ``at``), so the message names the item as a typed field's did."""
    try:
        return _DECIMALS.decode(raw)
    except msgspec.ValidationError as exc:
        items = decode(_RAWS, raw, at=at)
        for index, item in enumerate(items):
            decode(DECIMAL, item, at=f"{at}[{index}]")
        raise InvalidFrame("schema", f"{exc} - at `$.{at}`") from exc  # not reached
    except (msgspec.DecodeError, UnicodeError):  # bad UTF-8 inside a string: ``malformed``
        return decode(_DECIMALS, raw, at=at)


V1_EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://ws.kraken.com",
    adapter=KrakenV1Adapter,
    native_symbol=v1_native_symbol,
    limits=_LIMITS,
    quote_aliases={},
    ping_interval_s=_PING_INTERVAL_S,
    version="v1",
)
