"""Bybit v5 public streams (``stream.bybit.com/v5/public/{spot,linear}``): the ``tickers`` topic.

Two registry entries, one per category. ``EXCHANGE`` (``bybit``, version ``spot``) reads spot
tickers: snapshot-only frames with ``lastPrice`` and no bid/ask. ``LINEAR_EXCHANGE``
(``bybit_linear``, version ``linear``) reads USDT/USDC perpetual tickers: a ``snapshot`` on
subscribe, then ``delta`` frames that carry only the fields that changed, merged here into
per-symbol state. The linear entry has its own name, so its feeds have their own ``source``: a
perpetual's last price is not the spot price of the same pair (funding, basis), and the two
must never be read as one feed source. Both share one connect budget (``[[collectors]]
exchange = "bybit"``): Bybit counts new connections per WebSocket domain.

Frames decode into one typed envelope Struct (Bybit's frames have no single tag field: data
frames carry ``topic``, replies ``op``); the ticker body is decoded from its raw bytes into a
per-category Struct. Prices stay ``Decimal`` digit for digit; ``ts`` (ms) becomes an aware UTC
``datetime``.

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape, bad numbers or times) or ``unknown_type`` (a topic
or op this protocol does not have); nothing else escapes ``parse``.

Protocol choices where the docs are silent:

- Resubscribing: Bybit refuses a topic the connection already holds (``"error:already
  subscribed,topic:tickers.BTCUSDT"``) and keeps the old, possibly dead, subscription, so a
  symbol this adapter subscribed before is unsubscribed first. The adapter cannot tell a
  resubscribe from the first subscribe of a new connection; there the unsubscribe is merely
  unneeded, and every unsubscribe reply, success or not, is ``INFO``.
- A rejected subscribe is an ``ERROR`` naming the topic in ``ret_msg`` when it is one of ours,
  else the symbols of its request; Bybit rejects the whole request for one bad topic.
- Linear: a delta for a symbol with no snapshot yet is skipped (``delta_before_snapshot``); a
  delta that changes none of ``lastPrice``/``bid1Price``/``ask1Price`` (mark price, funding,
  volume only) yields no feed (``no_price_change``), since it says nothing new about the price.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar, Final

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import NULL, OPTIONAL_DECIMAL, decode
from chrono.exchanges.fast import PLAIN_RE, Received, TextRules, epoch_time, texts_pattern
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed

SOURCE: Final = "bybit"
LINEAR_SOURCE: Final = "bybit_linear"
TOPIC_PREFIX: Final = "tickers."
MAX_ARGS_PER_REQUEST: Final = 10  # the spot limit per subscribe; linear uses it too
ARGS_CHARS_PER_CONNECTION: Final = 21_000  # Bybit's cap on a connection's ``args``, any category
_PENDING_REQUESTS: Final = 1024  # req_ids remembered until acked (older ones are forgotten)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TOPIC_MARK: Final = "topic:"


class Envelope(msgspec.Struct, frozen=True):
    """Every frame Bybit sends on a public stream, as one shape.

    Data frames carry ``topic``/``type``/``ts``/``cs``/``data``; replies to requests carry
    ``op``/``success``/``ret_msg``/``req_id``/``conn_id``; the option pong carries ``op`` and
    ``args``. ``data`` is kept raw and decoded per category.
    """

    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    cs: int | None = None
    data: msgspec.Raw = msgspec.Raw()
    op: str | None = None
    success: bool | None = None
    ret_msg: str = ""
    req_id: str = ""
    conn_id: str = ""


class SpotTicker(msgspec.Struct, frozen=True):
    """The spot fields Chrono keeps; spot has no bid/ask on this topic. The numbers stay raw
    until ``_parse_ticker`` types them from their last key, as the fast path reads them
    (``chrono.exchanges.fast``)."""

    symbol: str
    last_price: msgspec.Raw = msgspec.field(default=NULL, name="lastPrice")
    volume_24h: msgspec.Raw = msgspec.field(default=NULL, name="volume24h")


class LinearTicker(msgspec.Struct, frozen=True):
    """The linear fields Chrono keeps; in a delta, an absent field is unchanged."""

    symbol: str
    last_price: Decimal | None = msgspec.field(default=None, name="lastPrice")
    bid: Decimal | None = msgspec.field(default=None, name="bid1Price")
    ask: Decimal | None = msgspec.field(default=None, name="ask1Price")
    volume_24h: Decimal | None = msgspec.field(default=None, name="volume24h")


class _TextSpotTicker(msgspec.Struct, frozen=True, gc=False):
    """``SpotTicker`` with its numbers as the exchange's text (the fast path), checked after the
    decode (``_SPOT_TEXTS``): a ``pattern`` field costs more than the whole check."""

    symbol: str
    last_price: str | None = msgspec.field(default=None, name="lastPrice")
    volume_24h: str | None = msgspec.field(default=None, name="volume24h")


class _TextSpotFrame(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A spot data frame with nothing but the fields the exchange sends (the fast path)."""

    topic: str
    type: str
    ts: int
    data: _TextSpotTicker
    cs: int | None = None


_ENVELOPE: Final = msgspec.json.Decoder(Envelope)
_FAST_SPOT: Final = msgspec.json.Decoder(_TextSpotFrame)
_SPOT: Final = msgspec.json.Decoder(SpotTicker)
# A fast spot ticker's last price and volume, in one regex call.
_SPOT_TEXTS: Final = texts_pattern(PLAIN_RE, PLAIN_RE)
_LINEAR: Final = msgspec.json.Decoder(LinearTicker)
_ENCODER: Final = msgspec.json.Encoder()


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USDT`` -> Bybit ``BTCUSDT`` (spot and linear spell it alike)."""
    return symbol.replace("/", "")


class BybitAdapter:
    """Bybit spot tickers for one collector's fixed symbols. Pure: no I/O, no clock.

    State: a request counter, the symbols of each unacked subscribe by ``req_id`` (so an ack
    names what it confirms) and the symbols subscribed before (which get an unsubscribe first).
    """

    source: ClassVar[str] = SOURCE

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._requests: dict[str, list[str]] = {}
        self._last_id = 0

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """Subscribes of at most 10 topics each; a resubscribe puts an unsubscribe of the same
        topics first (Bybit refuses a topic the connection holds: "already subscribed")::

            {"req_id":"3","op":"subscribe","args":["tickers.BTCUSDT","tickers.ETHUSDT"]}
        """
        messages = []
        for start in range(0, len(symbols), MAX_ARGS_PER_REQUEST):
            batch = list(symbols[start : start + MAX_ARGS_PER_REQUEST])
            if resubscribe:
                messages.append(self._request("unsubscribe", batch))
            messages.append(self._request("subscribe", batch))
        return messages

    def ping_message(self) -> str:
        """Bybit's application ping, to send every 20 s: ``{"req_id":"7","op":"ping"}``."""
        return _ENCODER.encode({"req_id": self._new_id(), "op": "ping"}).decode()

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        message = decode(_ENVELOPE, frame)
        if message.topic is not None:
            return self._parse_data(message, received_at)
        if message.op is not None or message.success is not None:
            return self._parse_reply(message)
        if message.type is not None:
            raise InvalidFrame("unknown_type", message.type)
        raise InvalidFrame("schema", "neither a topic nor a reply")

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Spot ticker snapshots of ours, with a volume (Bybit always sends it), and pongs
        only, every number canonical text; else ``None`` (``chrono.exchanges.fast``). Linear
        (``BybitLinearAdapter``) has none: its deltas merge into state that a read the full
        path re-reads must not have moved."""
        if type(self) is not BybitAdapter:
            return None
        to_canonical, price_of, feeds = self._symbols.to_canonical, rules.price_of_plain, []
        decode = _FAST_SPOT.decode
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        for frame in frames:
            try:
                message = decode(frame)
            except (msgspec.DecodeError, UnicodeError):
                if _is_pong(frame):
                    continue
                return None
            ticker = message.data
            text, volume = ticker.last_price, ticker.volume_24h
            if (
                text is None
                or volume is None
                or _SPOT_TEXTS(f"{text},{volume}") is None
                or message.type != "snapshot"
                or not message.topic.startswith(TOPIC_PREFIX)
                or (symbol := to_canonical(ticker.symbol)) is None
                or (price := price_of(symbol, text)) is None
                or (time := epoch_time(message.ts, 1_000)) is None
            ):
                return None
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=time[0], received_at=received_at,
                source=SOURCE, worker_id=worker_id, volume=Decimal(volume),
                metadata={"native_symbol": ticker.symbol, "cross_sequence": message.cs},
                text=FeedText(text, volume, None, None, time[1], received_text),
            ))  # fmt: skip
        return Feeds.of(feeds)

    def _parse_data(self, message: Envelope, received_at: datetime) -> ParsedFrame:
        topic = message.topic or ""
        if not topic.startswith(TOPIC_PREFIX):
            raise InvalidFrame("unknown_type", topic.partition(".")[0])
        if message.ts is None or not message.data:
            raise InvalidFrame("schema", f"{topic}: no ts or no data")
        return self._parse_ticker(message, _ms_to_utc(message.ts), received_at)

    def _parse_ticker(
        self, message: Envelope, time: datetime, received_at: datetime
    ) -> ParsedFrame:
        """A spot ticker, a snapshot every 50 ms (docs/exchanges.md, the docs' example)::

            {"topic":"tickers.BTCUSDT","ts":1673853746003,"type":"snapshot","cs":2588407389,
             "data":{"symbol":"BTCUSDT","lastPrice":"21109.77","highPrice24h":"21426.99",
             "volume24h":"6780.866843","turnover24h":"141946527.22907118",...}}

        The feed has no bid/ask: spot tickers carry none (``orderbook.1`` would). The numbers
        are typed before anything else is looked at, as when they were typed fields: a bad one
        is ``schema`` whatever the symbol.
        """
        if message.type != "snapshot":
            raise InvalidFrame("unknown_type", f"spot tickers {message.type}")
        ticker = decode(_SPOT, message.data)
        price = decode(OPTIONAL_DECIMAL, ticker.last_price, at="lastPrice")
        volume = decode(OPTIONAL_DECIMAL, ticker.volume_24h, at="volume24h")
        symbol = self._symbols.to_canonical(ticker.symbol)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        if price is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_price"])
        feed = self._feed(symbol, ticker.symbol, time, received_at, price, volume, cs=message.cs)
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def _feed(
        self,
        symbol: str,
        native: str,
        time: datetime,
        received_at: datetime,
        price: Decimal,
        volume: Decimal | None,
        *,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
        cs: int | None,
    ) -> PriceFeed:
        return PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=time,
            received_at=received_at,
            source=self.source,
            worker_id=self.worker_id,
            volume=volume,
            bid=bid,
            ask=ask,
            metadata={"native_symbol": native, "cross_sequence": cs},
        )

    def _parse_reply(self, message: Envelope) -> ParsedFrame:
        """A reply to a request (docs/exchanges.md; the docs' spot and linear tabs)::

            {"success":true,"ret_msg":"subscribe","conn_id":"2324d924-...","req_id":"10001",
             "op":"subscribe"}
            {"success":false,"ret_msg":"error:handler not found,topic:tickers.NOPEUSDT",
             "conn_id":"da7tmhs21nld3jk6lb70-8csm4","req_id":"e1","op":"subscribe"}
            {"success":true,"ret_msg":"pong","conn_id":"0970e817-...","op":"ping"}
            {"args":["1672916271846"],"op":"pong"}

        A subscribe ack lists the confirmed natives in ``message``; a linear ack may echo
        ``"req_id":""`` and then confirms nothing this adapter can name.
        """
        op = message.op
        if op in ("ping", "pong") and message.success is not False:
            return ParsedFrame(FrameKind.HEARTBEAT, message=message.ret_msg or "pong")
        if op == "unsubscribe":
            return ParsedFrame(FrameKind.INFO, message=message.ret_msg or "unsubscribe")
        if op == "subscribe" and message.success is None:
            raise InvalidFrame("schema", "subscribe reply without success")
        requested = self._requests.pop(message.req_id, []) if op == "subscribe" else []
        if message.success is False:
            symbols = self._named(message.ret_msg) or requested
            return ParsedFrame(FrameKind.ERROR, message=message.ret_msg, symbols=symbols)
        if op == "subscribe":
            natives = ",".join(self._symbols.natives(requested))
            return ParsedFrame(FrameKind.ACK, message=natives, symbols=requested)
        if op is None:  # e.g. the option/spread ack, type COMMAND_RESP
            raise InvalidFrame("unknown_type", message.type or "a reply without op")
        raise InvalidFrame("unknown_type", op)

    def _named(self, ret_msg: str) -> list[str]:
        """The symbol of ``...,topic:tickers.NOPEUSDT`` in an error, if it is ours."""
        _, found, topic = ret_msg.rpartition(_TOPIC_MARK)
        if not found or not topic.startswith(TOPIC_PREFIX):
            return []
        symbol = self._symbols.to_canonical(topic.removeprefix(TOPIC_PREFIX))
        return [] if symbol is None else [symbol]

    def _request(self, op: str, symbols: list[str]) -> str:
        req_id = self._new_id()
        if op == "subscribe":
            if len(self._requests) >= _PENDING_REQUESTS:  # acks of a lost connection never come
                del self._requests[next(iter(self._requests))]
            self._requests[req_id] = symbols
        args = [TOPIC_PREFIX + native for native in self._symbols.natives(symbols)]
        return _ENCODER.encode({"req_id": req_id, "op": op, "args": args}).decode()

    def _new_id(self) -> str:
        self._last_id += 1
        return str(self._last_id)


class BybitLinearAdapter(BybitAdapter):
    """Bybit linear (USDT/USDC perpetual) tickers: snapshot then deltas, merged per symbol.

    The merged state lives as long as the adapter (the collector's, across reconnects): every
    (re)subscribe is answered with a fresh snapshot, which replaces it.
    """

    source: ClassVar[str] = LINEAR_SOURCE

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        super().__init__(symbols, worker_id)
        self._state: dict[str, LinearTicker] = {}

    def _parse_ticker(
        self, message: Envelope, time: datetime, received_at: datetime
    ) -> ParsedFrame:
        """A linear snapshot, then deltas of the changed fields only (Bybit's docs, trimmed)::

            {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",
             "lastPrice":"17216.00","markPrice":"17217.33","volume24h":"91705.276",
             "bid1Price":"17215.50","bid1Size":"84.489","ask1Price":"17216.00",...},
             "cs":24987956059,"ts":1673272861686}
            {"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",
             "bid1Price":"17215.00","bid1Size":"12.001"},"cs":24987956102,"ts":1673272861786}

        Each snapshot, and each delta that moves the last price or the top of book, yields a
        feed from the merged state at the frame's ``ts``.
        """
        ticker = decode(_LINEAR, message.data)
        native = ticker.symbol
        symbol = self._symbols.to_canonical(native)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        if message.type == "snapshot":
            state = self._state[native] = ticker
        elif message.type == "delta":
            before = self._state.get(native)
            if before is None:
                return ParsedFrame(FrameKind.DATA, skipped=["delta_before_snapshot"])
            state = self._state[native] = _merge(before, ticker)
            if ticker.last_price is None and ticker.bid is None and ticker.ask is None:
                return ParsedFrame(FrameKind.DATA, skipped=["no_price_change"])
        else:
            raise InvalidFrame("unknown_type", f"linear tickers {message.type}")
        if state.last_price is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_price"])
        feed = self._feed(
            symbol, native, time, received_at, state.last_price, state.volume_24h,
            bid=state.bid, ask=state.ask, cs=message.cs,
        )  # fmt: skip
        return ParsedFrame(FrameKind.DATA, feeds=[feed])


def _merge(state: LinearTicker, delta: LinearTicker) -> LinearTicker:
    """``state`` with every field ``delta`` carries replaced."""
    return LinearTicker(
        symbol=state.symbol,
        last_price=_newer(delta.last_price, state.last_price),
        bid=_newer(delta.bid, state.bid),
        ask=_newer(delta.ask, state.ask),
        volume_24h=_newer(delta.volume_24h, state.volume_24h),
    )


def _newer(new: Decimal | None, old: Decimal | None) -> Decimal | None:
    return old if new is None else new


def _is_pong(frame: bytes) -> bool:
    """Whether the full path takes ``frame`` as a heartbeat (decoded as it does)."""
    try:
        message = _ENVELOPE.decode(frame)
    except (msgspec.DecodeError, UnicodeError):
        return False
    if message.topic is not None:
        return False
    return message.op in ("ping", "pong") and message.success is not False


def _ms_to_utc(ms: int) -> datetime:
    """Bybit's ``ts`` (ms since the epoch) as an aware UTC datetime."""
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as exc:
        raise InvalidFrame("schema", f"ts out of range: {ms}") from exc


# ≤500 new connections per 5 min per WebSocket domain (spot and linear share
# stream.bybit.com, and so the "bybit" connect budget): 1/s is 300 per 5 min.
# Bybit publishes no client message rate for public streams; a probe sent 18 subscribes at
# once unrefused, 10/s stays well below that. ``args`` may hold ≤21,000 characters per
# connection: a topic is at most ~30 characters with quotes and comma
# ("tickers.1000000BABYDOGEUSDT"), so 500 symbols stay under 15,000.
LIMITS: Final = Limits(connects=1, connects_window_s=1.0, messages_per_s=10.0, max_symbols=500)
PING_INTERVAL_S: Final = 20.0  # Bybit's recommendation; no ping and no data: cut after 10 min

LINEAR_EXCHANGE: Final = Exchange(
    name=LINEAR_SOURCE,
    default_url="wss://stream.bybit.com/v5/public/linear",
    adapter=BybitLinearAdapter,
    native_symbol=native_symbol,
    limits=LIMITS,
    quote_aliases={},
    ping_interval_s=PING_INTERVAL_S,
    version="linear",
)

EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://stream.bybit.com/v5/public/spot",
    adapter=BybitAdapter,
    native_symbol=native_symbol,
    limits=LIMITS,
    quote_aliases={},
    ping_interval_s=PING_INTERVAL_S,
    version="spot",
    protocols={"linear": LINEAR_EXCHANGE},
)
