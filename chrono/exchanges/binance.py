"""Binance spot and Binance.US (``stream.binance.com:9443/stream``): ``@ticker`` or ``@bookTicker``.

One combined-stream connection per collector; streams are subscribed live with ``SUBSCRIBE``
requests, each with its own integer ``id``, and the ``{"result":null,"id":N}`` ack names the
canonical symbols of request ``N`` (the adapter keeps the id -> symbols map). Two wire
versions: ``ticker`` (the default, 24 h ticker events, priced at the last trade ``c``) and
``bookTicker`` (best bid/offer, priced at the exact mid, stamped with the receive time since
spot bookTicker frames carry none). The combined wrapper ``{"stream","data"}`` and the bare
events of a raw ``/ws`` connection are both accepted.

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape) or ``unknown_type`` (another stream or event);
nothing else escapes ``parse``. Both error shapes become ERROR frames: the nested one seen on
the wire (``{"error":{"code","msg"},"id"}``) and the flat one of the docs (``{"code","msg"}``).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import DECIMAL, MS_US, NULL, OPTIONAL_DECIMAL, decode, from_epoch
from chrono.exchanges.fast import (
    PLAIN_RE,
    Received,
    TextRules,
    decode_each,
    epoch_time,
    texts_pattern,
)
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed, decimal_text

SOURCE: Final = "binance"
US_SOURCE: Final = "binance_us"
TICKER: Final = "ticker"
BOOK_TICKER: Final = "bookTicker"
SHUTDOWN_STREAM: Final = "!serverShutdown"
# Binance documents no cap per request, but one SUBSCRIBE of ~440 streams was seen to fail
# silently (altangent/ccxws#161) and libraries split at 200 (cryptofeed, ccxt): 200 streams are
# about 4 KB, and the 1024 streams of a full connection go out in 6 requests.
MAX_STREAMS_PER_REQUEST: Final = 200
# Requests awaiting their ack; a connection that died before acking leaves its ids behind, so
# the oldest are forgotten past this (each id names at most MAX_STREAMS_PER_REQUEST symbols).
MAX_PENDING_REQUESTS: Final = 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# The mid of two decimals is exact (a sum and a halving); an inexact one is refused.
_MID_CONTEXT: Final = decimal.Context(
    prec=60, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow]
)

EpochMs = Annotated[int, msgspec.Meta(ge=0)]


class ErrorBody(msgspec.Struct, frozen=True):
    code: int | None = None
    msg: str = ""


class Envelope(msgspec.Struct, frozen=True):
    """Every top-level shape at once (Binance frames carry no common type field).

    ``stream``/``data``: the combined wrapper; ``result``/``id``: a request's answer;
    ``error`` or ``code``/``msg``: an error, nested or flat; ``e``: a bare event's type; ``u``:
    a bare bookTicker, the one event without ``e``. A ``Raw`` left empty was absent.
    """

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    id: int | str | None = None
    error: ErrorBody | None = None
    code: int | None = None
    msg: str | None = None
    e: str | None = None
    u: msgspec.Raw = msgspec.Raw()


class Ticker(msgspec.Struct, frozen=True):
    """The ``24hrTicker`` fields Chrono keeps (all strings but the ids and ``E``). The decimals
    stay raw until ``_parse_data`` types them from their last key, as the fast path reads them
    (``chrono.exchanges.fast``)."""

    E: EpochMs
    s: str
    c: msgspec.Raw
    b: msgspec.Raw = NULL
    a: msgspec.Raw = NULL
    v: msgspec.Raw = NULL
    F: int | None = None
    L: int | None = None


class BookTicker(msgspec.Struct, frozen=True):
    """Sides are read as text: an empty side is "no quote", not a bad frame."""

    u: int
    s: str
    b: str
    a: str


class _TextBook(msgspec.Struct, frozen=True, gc=False):
    """``BookTicker`` for the fast path (the same fields and types)."""

    u: int
    s: str
    b: str
    a: str


class _TextBookStream(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The combined wrapper with nothing else in it, as the exchange sends it (fast path)."""

    stream: str
    data: _TextBook


class _TextTicker(msgspec.Struct, frozen=True, gc=False):
    """``Ticker`` with its decimals as the exchange's text (the fast path), checked after the
    decode (``_TICKER_TEXTS``): a ``pattern`` field costs more than the whole check."""

    E: EpochMs
    s: str
    c: str
    b: str | None = None
    a: str | None = None
    v: str | None = None
    F: int | None = None
    L: int | None = None


class _TextTickerStream(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The combined wrapper of a ticker event, nothing else in it (fast path)."""

    stream: str
    data: _TextTicker


_ENVELOPE: Final = msgspec.json.Decoder(Envelope)
_FAST_TICKER: Final = msgspec.json.Decoder(_TextTickerStream)
_FAST_BOOK: Final = msgspec.json.Decoder(_TextBookStream)
_TICKER: Final = msgspec.json.Decoder(Ticker)
# A fast ticker's price, bid, ask and volume, and a fast book's bid and ask, in one regex call.
_TICKER_TEXTS: Final = texts_pattern(PLAIN_RE, PLAIN_RE, PLAIN_RE, PLAIN_RE)
_BOOK_TEXTS: Final = texts_pattern(PLAIN_RE, PLAIN_RE)
_BOOK_TICKER: Final = msgspec.json.Decoder(BookTicker)
_ENCODER: Final = msgspec.json.Encoder()


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USDT`` -> Binance ``BTCUSDT`` (streams use it in lower case)."""
    return symbol.replace("/", "").upper()


class BinanceAdapter:
    """The shared protocol of both versions for one collector's symbols; see the module docstring.

    Holds the ids of its unacknowledged requests, shared by every connection of the collector
    (ids only increase, so a rotation's two connections never reuse one). No I/O, no clock.
    """

    channel: ClassVar[str]  # the stream suffix: ``btcusdt@<channel>``
    event: ClassVar[str]  # what a bare frame of this channel is called

    def __init__(self, symbols: SymbolMap, worker_id: str, *, source: str = SOURCE) -> None:
        self.worker_id = worker_id
        self.source = source
        self._symbols = symbols
        self._next_id = 1
        self._pending: dict[int, list[str]] = {}

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """``SUBSCRIBE`` requests of up to ``MAX_STREAMS_PER_REQUEST`` streams each::

            {"method":"SUBSCRIBE","params":["btcusdt@ticker","ethusdt@ticker"],"id":1}

        Binance accepts a repeated subscribe, so a resubscribe is the same request.
        """
        messages = []
        for start in range(0, len(symbols), MAX_STREAMS_PER_REQUEST):
            batch = list(symbols[start : start + MAX_STREAMS_PER_REQUEST])
            params = [f"{n.lower()}@{self.channel}" for n in self._symbols.natives(batch)]
            request = {"method": "SUBSCRIBE", "params": params, "id": self._remember(batch)}
            messages.append(_ENCODER.encode(request).decode())
        return messages

    def ping_message(self) -> str | None:
        """No application ping: the server's WebSocket pings are answered by the library."""
        return None

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        envelope = decode(_ENVELOPE, frame)
        if envelope.stream is not None:
            return self._parse_stream(envelope.stream, envelope.data, received_at)
        if envelope.error is not None:
            return self._parse_error(envelope.error.code, envelope.error.msg, envelope.id)
        if envelope.code is not None:
            return self._parse_error(envelope.code, envelope.msg or "", envelope.id)
        if envelope.result:
            return self._parse_result(envelope.result, envelope.id)
        event = envelope.e if envelope.e is not None else BOOK_TICKER if envelope.u else None
        if event is None:
            raise InvalidFrame("schema", "not a stream, event, answer or error")
        if event == "serverShutdown":
            return _parse_shutdown()
        if event != self.event:
            raise InvalidFrame("unknown_type", event)
        return self._parse_data(frame, received_at)

    def _parse_data(self, data: bytes | str, received_at: datetime) -> ParsedFrame:
        raise NotImplementedError

    def _parse_stream(self, stream: str, data: bytes, received_at: datetime) -> ParsedFrame:
        """The combined wrapper: the stream name says what ``data`` is (real capture)::

        {"stream":"nknusdt@bookTicker","data":{"u":499869768,"s":"NKNUSDT",...}}
        """
        if not data:
            raise InvalidFrame("schema", f"stream {stream!r} without data")
        if stream == SHUTDOWN_STREAM:
            return _parse_shutdown()
        if stream.partition("@")[2] != self.channel:
            raise InvalidFrame("unknown_type", stream)
        return self._parse_data(bytes(data), received_at)

    def _parse_result(self, result: msgspec.Raw, request_id: int | str | None) -> ParsedFrame:
        """A request's answer: ``{"result":null,"id":1}`` acks a (un)subscribe; a list answers
        ``LIST_SUBSCRIPTIONS`` (INFO, ``message`` is the raw result). An ack's ``symbols`` are
        the canonical symbols request ``id`` subscribed; ``message`` their native spelling."""
        if bytes(result) != b"null":
            text = bytes(result).decode(errors="replace")  # msgspec skips a Raw unchecked
            return ParsedFrame(FrameKind.INFO, message=f"request {request_id}: {text}")
        symbols = self._forget(request_id)
        natives = ",".join(self._symbols.natives(symbols))
        return ParsedFrame(
            FrameKind.ACK, message=natives or f"request {request_id}", symbols=symbols
        )

    def _parse_error(self, code: int | None, msg: str, request_id: int | str | None) -> ParsedFrame:
        """A refused request; the link stays up. Nested on the wire, flat in the docs::

            {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}
            {"code":2,"msg":"Invalid request: invalid stream","id":2}

        ``symbols`` are the ones request ``id`` named, if it was one of ours.
        """
        symbols = self._forget(request_id)
        text = f"{msg} (code {code}, request {request_id})"
        return ParsedFrame(FrameKind.ERROR, message=text, symbols=symbols)

    def _remember(self, symbols: list[str]) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        self._pending[request_id] = symbols
        if len(self._pending) > MAX_PENDING_REQUESTS:
            del self._pending[next(iter(self._pending))]
        return request_id

    def _forget(self, request_id: int | str | None) -> list[str]:
        if isinstance(request_id, int):
            return self._pending.pop(request_id, [])
        return []


class TickerAdapter(BinanceAdapter):
    """Version ``ticker``: ``<symbol>@ticker`` 24 h rolling-window events, once a second."""

    channel = TICKER
    event = "24hrTicker"

    def _parse_data(self, data: bytes | str, received_at: datetime) -> ParsedFrame:
        """A ticker event (docs/exchanges.md, trimmed)::

            {"e":"24hrTicker","E":1754006400123,"s":"BTCUSDT","p":"-512.34000000",
             "c":"116687.66000000","b":"116687.65000000","a":"116687.66000000",
             "v":"12876.43215000","F":5102293112,"L":5104321987,"n":2028876,...}

        Priced at the last trade ``c``, stamped with the event time ``E`` (ms). A zero ``c``
        (no trade yet) is skipped as ``no_price``; a zero bid or ask is no quote (``None``).
        The decimals are typed before anything else is looked at, as when they were typed
        fields: a bad one is ``schema`` whatever the symbol.
        """
        ticker = decode(_TICKER, data)
        price = decode(DECIMAL, ticker.c, at="c")
        bid, ask, volume = (
            decode(OPTIONAL_DECIMAL, ticker.b, at="b"),
            decode(OPTIONAL_DECIMAL, ticker.a, at="a"),
            decode(OPTIONAL_DECIMAL, ticker.v, at="v"),
        )
        symbol = self._symbols.to_canonical(ticker.s)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        if price.is_zero():
            return ParsedFrame(FrameKind.DATA, skipped=["no_price"])
        feed = PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=from_epoch(ticker.E, MS_US),
            received_at=received_at,
            source=self.source,
            worker_id=self.worker_id,
            volume=volume,
            bid=_quote(bid),
            ask=_quote(ask),
            metadata={
                "native_symbol": ticker.s,
                "first_trade_id": ticker.F,
                "last_trade_id": ticker.L,
            },
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Wrapped ticker events of ours only, with a bid, ask and volume (Binance always sends
        them), every decimal canonical text; else ``None`` (``chrono.exchanges.fast``). A zero
        bid or ask is no quote, as on the full path."""
        to_canonical, price_of, feeds = self._symbols.to_canonical, rules.price_of_plain, []
        source, worker_id, received_at, received_text = (
            self.source, self.worker_id, received.at, received.text
        )  # fmt: skip
        if (decoded := decode_each(_FAST_TICKER, frames)) is None:
            return None
        for wrapped in decoded:
            ticker = wrapped.data
            text, bid_text, ask_text, volume_text = ticker.c, ticker.b, ticker.a, ticker.v
            if (
                bid_text is None
                or ask_text is None
                or volume_text is None
                or _TICKER_TEXTS(f"{text},{bid_text},{ask_text},{volume_text}") is None
                or wrapped.stream.partition("@")[2] != TICKER
                or (symbol := to_canonical(ticker.s)) is None
                or (price := price_of(symbol, text)) is None
                or (time := epoch_time(ticker.E, MS_US)) is None
            ):
                return None
            bid, ask = _quote(Decimal(bid_text)), _quote(Decimal(ask_text))
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=time[0], received_at=received_at,
                source=source, worker_id=worker_id, volume=Decimal(volume_text), bid=bid, ask=ask,
                metadata={"native_symbol": ticker.s, "first_trade_id": ticker.F,
                          "last_trade_id": ticker.L},
                text=FeedText(text, volume_text, None if bid is None else bid_text,
                              None if ask is None else ask_text, time[1], received_text),
            ))  # fmt: skip
        return Feeds.of(feeds)


class BookTickerAdapter(BinanceAdapter):
    """Version ``bookTicker``: ``<symbol>@bookTicker`` best bid/offer, on every change."""

    channel = BOOK_TICKER
    event = BOOK_TICKER

    def _parse_data(self, data: bytes | str, received_at: datetime) -> ParsedFrame:
        """A best bid/offer (real capture; spot sends no time)::

            {"u":499869768,"s":"NKNUSDT","b":"0.35210000","B":"672.00000000",
             "a":"0.35260000","A":"3199.00000000"}

        Priced at the exact mid ``(b + a) / 2``, stamped ``received_at``; ``metadata["price"]``
        says so. A side that is empty or zero is skipped as ``no_quote``.
        """
        book = decode(_BOOK_TICKER, data)
        symbol = self._symbols.to_canonical(book.s)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        bid, ask = _side(book.b), _side(book.a)
        if bid is None or ask is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_quote"])
        feed = PriceFeed(
            symbol=symbol,
            price=_mid(bid, ask),
            timestamp=received_at,
            received_at=received_at,
            source=self.source,
            worker_id=self.worker_id,
            bid=bid,
            ask=ask,
            metadata={"native_symbol": book.s, "update_id": book.u, "price": "mid"},
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Wrapped bookTicker frames only, both sides canonical, non-zero text with an exact
        mid, every symbol one of this collector's; else ``None`` (``chrono.exchanges.fast``).
        Bare frames (a raw ``/ws`` connection) are left to the full path."""
        to_canonical, feeds = self._symbols.to_canonical, []
        source, worker_id, received_at, received_text = (
            self.source, self.worker_id, received.at, received.text
        )  # fmt: skip
        if (decoded := decode_each(_FAST_BOOK, frames)) is None:
            return None
        for wrapped in decoded:
            book = wrapped.data
            bid_text, ask_text = book.b, book.a
            if (
                wrapped.stream.partition("@")[2] != BOOK_TICKER
                or (symbol := to_canonical(book.s)) is None
                or _BOOK_TEXTS(f"{bid_text},{ask_text}") is None
            ):
                return None
            bid, ask = Decimal(bid_text), Decimal(ask_text)
            if not (bid and ask):
                return None  # no_quote
            try:
                mid = _MID_CONTEXT.divide(_MID_CONTEXT.add(bid, ask), 2)
            except decimal.DecimalException:
                return None
            price_text = decimal_text(mid)
            if (price := rules.price(symbol, price_text)) is None:
                return None
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=received_at, received_at=received_at,
                source=source, worker_id=worker_id, bid=bid, ask=ask,
                metadata={"native_symbol": book.s, "update_id": book.u, "price": "mid"},
                text=FeedText(price_text, None, bid_text, ask_text, received_text, received_text),
            ))  # fmt: skip
        return Feeds.of(feeds)


def _parse_shutdown() -> ParsedFrame:
    """Maintenance ahead: this connection closes soon (docs/exchanges.md)::

        {"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}

    Bare on a raw connection: ``{"e":"serverShutdown","E":1770123456789}``.
    """
    return ParsedFrame(FrameKind.RECONNECT, message="serverShutdown")


def _quote(value: Decimal | None) -> Decimal | None:
    """A bid or ask of zero means the book side is empty."""
    return None if value is None or value.is_zero() else value


def _side(text: str) -> Decimal | None:
    """A bookTicker side: ``None`` if empty or zero."""
    if not text:
        return None
    try:
        return _quote(Decimal(text))
    except decimal.InvalidOperation as exc:
        raise InvalidFrame("schema", f"bad price {text!r}") from exc


def _mid(bid: Decimal, ask: Decimal) -> Decimal:
    try:
        return _MID_CONTEXT.divide(_MID_CONTEXT.add(bid, ask), 2)
    except decimal.DecimalException as exc:  # sNaN, inf - inf, digits beyond 60
        raise InvalidFrame("schema", f"no exact mid of {bid} and {ask}") from exc


# 300 connection attempts per 5 min per IP (docs/exchanges.md §2): at most 5 in any 10 s, half the
# limit, yet enough for a few collectors to start or rotate together.
# 5 incoming messages/s per connection, pings and pongs included: 3 leaves room for the pong to
# the server's ping every 20 s. 1024 streams per connection, one stream per symbol.
LIMITS: Final = Limits(connects=5, connects_window_s=10.0, messages_per_s=3.0, max_symbols=1024)
ROTATE_AFTER_S: Final = 23 * 3600.0  # Binance cuts every connection at 24 h
_USDT_FOR_USD: Final = MappingProxyType({"USD": "USDT"})  # Binance.com has no USD quotes


def _entry(source: str, url: str, quote_aliases: Mapping[str, str]) -> Exchange:
    """One Binance-protocol exchange: ``ticker`` by default, ``bookTicker`` as a version."""
    common: dict[str, Any] = {
        "name": source,
        "default_url": url,
        "native_symbol": native_symbol,
        "limits": LIMITS,
        "quote_aliases": quote_aliases,
        "rotate_after_s": ROTATE_AFTER_S,
    }
    book_ticker = Exchange(
        adapter=partial(BookTickerAdapter, source=source), version=BOOK_TICKER, **common
    )
    return Exchange(
        adapter=partial(TickerAdapter, source=source),
        version=TICKER,
        protocols={BOOK_TICKER: book_ticker},
        **common,
    )


EXCHANGE: Final = _entry(SOURCE, "wss://stream.binance.com:9443/stream", _USDT_FOR_USD)
# Binance.US: the same protocol and limits (its docs), with real USD quotes: no alias.
US_EXCHANGE: Final = _entry(US_SOURCE, "wss://stream.binance.us:9443/stream", {})
