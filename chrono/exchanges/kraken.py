"""Kraken spot, ``ticker`` channel, in both wire versions: v2 (the default) and v1.

v2 (``wss://ws.kraken.com/v2``) spells pairs the canonical way (``BTC/USD``), sends prices as
JSON *numbers* and stamps each ticker with an RFC 3339 µs ``timestamp``. v1
(``wss://ws.kraken.com``, frozen) spells them ``XBT/USD``/``XDG/USD``, sends ticks as arrays of
decimal strings and carries no time at all, so v1 feeds are stamped with ``received_at``. A
collector picks v1 with ``protocol = "v1"``; both entries share the name (and feed source)
``kraken``: one market, one connection budget.

Frames decode in two steps into typed Structs: a small shape (``channel``/``method`` for v2,
``event``/``Error`` or an array for v1) picks the tagged union the frame belongs to. msgspec
reads a JSON number into ``Decimal`` from its exact text, so ``0.10035`` stays ``0.10035``
(never a float). Fields the adapter does not use (``connectionID``, which exceeds 2**53, the
rolling 24 h statistics) are skipped, never converted.

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape, bad numbers or times) or ``unknown_type`` (a channel,
method or event the protocol does not have); nothing else escapes ``parse``.

Resubscribing: Kraken refuses a duplicate subscribe ("Already subscribed"), so a subscribe for
a strict subset of the map (the collector resubscribing quiet symbols) is preceded by an
unsubscribe of the same symbols. A subscribe for the whole map is a new connection's, sent
plain: an unsubscribe there would earn one "Subscription Not Found" error per symbol. (When
every symbol is quiet at once the collector replaces the connection instead.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, TypeVar

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.model import PriceFeed, to_symbol

SOURCE: Final = "kraken"
# Pairs per (un)subscribe request. Kraken documents no cap on a request's list; 100 keeps a
# frame a few KB and a full connection (max_symbols) to two requests, i.e. one second of pacing.
BATCH_SYMBOLS: Final = 100
_V1_ASSETS: Final = {"BTC": "XBT", "DOGE": "XDG"}  # canonical -> v1 (REST ``wsname``)
_CANONICAL_ASSETS: Final = {v1: canonical for canonical, v1 in _V1_ASSETS.items()}

# msgspec refuses a timestamp without an offset, so a naive time is a schema error, not a feed.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
T = TypeVar("T")


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> v2 ``BTC/USD``: v2 spells pairs the canonical way."""
    return symbol


def v1_native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> v1 ``XBT/USD``; ``DOGE`` -> ``XDG`` likewise, on either side."""
    base, _, quote = symbol.partition("/")
    return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"


def canonical_symbol(pair: str) -> str:
    """A v1 (or v2) pair -> canonical: ``XBT/USD`` -> ``BTC/USD``, ``ETH/XBT`` -> ``ETH/BTC``.

    Raises ``ValueError`` for a pair without ``/`` (Kraken: "not in ISO 4217-A3 format").
    """
    base, slash, quote = pair.partition("/")
    if not (slash and base and quote):
        raise ValueError(f"not a BASE/QUOTE pair: {pair!r}")
    return to_symbol(_CANONICAL_ASSETS.get(base, base), _CANONICAL_ASSETS.get(quote, quote))


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
    """The fields Chrono keeps; ``last`` is absent on a pair untraded for 24 h."""

    symbol: str
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    volume: Decimal | None = None
    timestamp: AwareDatetime | None = None  # missing in the early v2 schema


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

_V2_SHAPE: Final = msgspec.json.Decoder(_V2Shape)
_V2_CHANNELS: Final[msgspec.json.Decoder[V2Channel]] = msgspec.json.Decoder(V2Channel)
_V2_METHODS: Final[msgspec.json.Decoder[V2Method]] = msgspec.json.Decoder(V2Method)
_V2_CHANNEL_TAGS: Final = frozenset({"status", "heartbeat", "ticker"})
_V2_METHOD_TAGS: Final = frozenset({"subscribe", "unsubscribe", "pong", "error"})

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
_V1_TICKER: Final = msgspec.json.Decoder(V1Ticker)
_STR: Final = msgspec.json.Decoder(str)

# --- adapters -------------------------------------------------------------------------------


class _KrakenAdapter:
    """What both versions share: the symbol map, request ids, batching, resubscribe order."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._req_ids = itertools.count(1)

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """One subscribe per ``BATCH_SYMBOLS`` pairs; a resubscribe unsubscribes first
        (Kraken refuses a pair the connection holds: "Already subscribed")."""
        natives = self._symbols.natives(symbols)
        messages = []
        for start in range(0, len(natives), BATCH_SYMBOLS):
            batch = natives[start : start + BATCH_SYMBOLS]
            if resubscribe:
                messages.append(_encode(self._request("unsubscribe", batch)))
            messages.append(_encode(self._request("subscribe", batch)))
        return messages

    def _request(self, method: str, natives: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _mine(self, native: str) -> list[str]:
        """The canonical symbol of ``native`` if this collector holds it."""
        symbol = self._symbols.to_canonical(native)
        return [] if symbol is None else [symbol]

    def _feed(
        self,
        symbol: str,
        native: str,
        price: Decimal,
        *,
        time: datetime,
        received_at: datetime,
        book: tuple[Decimal | None, Decimal | None, Decimal | None],  # bid, ask, volume
    ) -> PriceFeed:
        bid, ask, volume = book
        return PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=time,
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=volume,
            bid=bid,
            ask=ask,
            metadata={"native_symbol": native},
        )


class KrakenAdapter(_KrakenAdapter):
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

    def _parse_ticker(self, message: V2Ticker, received_at: datetime) -> ParsedFrame:
        """Ticks for one or more pairs (exchanges.md, doc example, trimmed)::

            {"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,
             "bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,
             "volume":997038.98383185,"timestamp":"2023-09-25T09:04:31.742648Z"}]}

        One feed per entry; an entry without ``last`` is skipped ``no_price``, one for a pair
        this collector does not hold ``unknown_symbol``. No ``timestamp``: ``received_at``.
        """
        parsed = ParsedFrame(FrameKind.DATA)
        for tick in message.data:
            symbol = self._symbols.to_canonical(tick.symbol)
            if symbol is None or tick.last is None:
                parsed.skipped.append("unknown_symbol" if symbol is None else "no_price")
                continue
            time = received_at if tick.timestamp is None else _as_utc(tick.timestamp)
            book = (tick.bid, tick.ask, tick.volume)
            feed = self._feed(
                symbol, tick.symbol, tick.last, time=time, received_at=received_at, book=book
            )
            parsed.feeds.append(feed)
        return parsed

    def _parse_reply(self, reply: V2Subscribe | V2Unsubscribe) -> ParsedFrame:
        """One reply per pair (exchanges.md)::

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


class KrakenV1Adapter(_KrakenAdapter):
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
        shape = _decode(_V1_FRAME, frame)
        if isinstance(shape, list):
            return self._parse_channel(shape, received_at)
        if shape.error is not None:
            # {"Error":"Exceeded msg rate"}: the rate limit (dynamic, undocumented).
            return ParsedFrame(FrameKind.ERROR, message=shape.error)
        if shape.event is None:
            raise InvalidFrame("schema", "an object frame without event")
        if shape.event not in _V1_EVENT_TAGS:
            raise InvalidFrame("unknown_type", shape.event)
        return self._parse_event(_decode(_V1_EVENTS, frame))

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
        """One per pair (real capture / exchanges.md)::

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
        name = _decode(_STR, items[-2])
        if name != "ticker":
            raise InvalidFrame("unknown_type", name)
        if len(items) != 4:
            raise InvalidFrame("schema", f"a ticker array of {len(items)} items")
        return self._parse_ticker(
            _decode(_V1_TICKER, items[1]), _decode(_STR, items[3]), received_at
        )

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


# --- helpers --------------------------------------------------------------------------------


def _parse_v2_status(status: V2Status) -> ParsedFrame:
    """Sent on connect and on a system change (exchanges.md)::

    {"channel":"status","type":"update","data":[{"api_version":"v2",
     "connection_id":13834774380200032777,"system":"online","version":"2.0.0"}]}
    """
    text = ", ".join(f"system {d.system} (version {d.version})" for d in status.data)
    return ParsedFrame(FrameKind.INFO, message=text or "status")


def _decode_v2(frame: str | bytes) -> V2Channel | V2Method:
    shape = _decode(_V2_SHAPE, frame)
    if shape.channel is not None:
        if shape.channel not in _V2_CHANNEL_TAGS:
            raise InvalidFrame("unknown_type", shape.channel)
        return _decode(_V2_CHANNELS, frame)
    if shape.method is not None:
        if shape.method not in _V2_METHOD_TAGS:
            raise InvalidFrame("unknown_type", shape.method)
        return _decode(_V2_METHODS, frame)
    raise InvalidFrame("schema", "neither channel nor method")


def _decode(decoder: msgspec.json.Decoder[T], data: str | bytes | msgspec.Raw) -> T:
    """msgspec's errors translated into ``InvalidFrame`` reasons, in this one place."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidFrame("schema", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeError) as exc:  # bad JSON, bad UTF-8, lone surrogates
        raise InvalidFrame("malformed") from exc


def _encode(request: dict[str, Any]) -> str:
    return msgspec.json.encode(request).decode()


def _as_utc(time: datetime) -> datetime:
    """Kraken sends ``Z``; any other offset is converted so every timestamp reads as UTC."""
    if time.tzinfo is UTC:
        return time
    try:
        return time.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise InvalidFrame("schema", f"time out of range: {time.isoformat()}") from exc


# Kraken publishes no WebSocket rate numbers: too many requests earn {"Error":"Exceeded msg
# rate"} (the limit is dynamic), and Cloudflare, in front, answers connection bursts with 429.
# So: one connect per 2 s per process (every collector of both versions shares it), 2 messages
# per second per connection (subscribes, resubscribes and pings), and 200 pairs per connection
# (no documented cap; two subscribe requests of BATCH_SYMBOLS).
_LIMITS: Final = Limits(connects=1, connects_window_s=2.0, messages_per_s=2.0, max_symbols=200)
# Kraken heartbeats once a second, but only while a subscription exists; a ping every 30 s
# (1.7 % of the message budget) keeps a link whose subscribes all failed from idling out, and its
# pong proves the link. No rotation: Kraken documents no connection age limit.
_PING_INTERVAL_S: Final = 30.0

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
