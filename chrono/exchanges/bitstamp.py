"""Bitstamp (``wss://ws.bitstamp.net``): ``live_trades_<pair>`` plus ``order_book_<pair>``.

Bitstamp has no ticker channel. Each trade becomes one feed; its bid/ask come from the top of
the pair's ``order_book`` channel (a 100-level snapshot on every change), which the adapter
caches per pair. There is no 24 h volume on the WebSocket (it is REST only), so feeds carry
``volume=None``. Frames decode into typed Structs (a tagged union on ``"event"``); prices come
from ``price_str`` (the numeric ``price`` is a float and never read) and stay ``Decimal``; times
come from ``microtimestamp`` (µs, a string) as aware UTC datetimes.

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape, bad numbers or times) or ``unknown_type`` (an event
this protocol does not have); nothing else escapes ``parse``.

State: the adapter is pure (no I/O, no clock) but holds the last top of book per pair, so a
trade's bid/ask is ``None`` until that pair's first ``order_book`` event arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import NULL, OPTIONAL_DECIMAL, decode, decode_or_classify
from chrono.exchanges.fast import (
    Received,
    TextRules,
    decode_each,
    epoch_time,
    plain_text,
)
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed

SOURCE: Final = "bitstamp"
TRADES: Final = "live_trades"
BOOK: Final = "order_book"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SIDES: Final[dict[int | None, str]] = {0: "buy", 1: "sell"}  # the taker's side
_SECOND_US: Final = 1_000_000


class TradeData(msgspec.Struct, frozen=True):
    """The fields Chrono keeps; ``price``/``amount`` (floats) are deliberately not read.
    ``price_str`` stays raw until ``_parse_trade`` types it from its last key, as the fast path
    reads it (``chrono.exchanges.fast``)."""

    id: int
    price_str: msgspec.Raw = NULL
    microtimestamp: str | None = None
    timestamp: str | None = None
    type: int | None = None


class Trade(msgspec.Struct, frozen=True, tag_field="event", tag="trade"):
    channel: str
    data: TradeData


class BookData(msgspec.Struct, frozen=True):
    """Levels stay raw: only the first of each side is ever decoded (``_top``)."""

    bids: list[msgspec.Raw] = []
    asks: list[msgspec.Raw] = []


class Book(msgspec.Struct, frozen=True, tag_field="event", tag="data"):
    channel: str
    data: BookData


class Level(msgspec.Struct, frozen=True, array_like=True):
    """``["price", "amount"]`` (``detail_order_book`` adds an order id: ignored)."""

    price: Decimal


class Subscribed(msgspec.Struct, frozen=True, tag_field="event", tag="bts:subscription_succeeded"):
    channel: str = ""


class Unsubscribed(
    msgspec.Struct, frozen=True, tag_field="event", tag="bts:unsubscription_succeeded"
):
    channel: str = ""


class ErrorData(msgspec.Struct, frozen=True):
    code: int | str | None = None
    message: str = ""


class ErrorMessage(msgspec.Struct, frozen=True, tag_field="event", tag="bts:error"):
    channel: str = ""
    data: ErrorData = ErrorData()


class HeartbeatData(msgspec.Struct, frozen=True):
    status: str = ""


class Heartbeat(msgspec.Struct, frozen=True, tag_field="event", tag="bts:heartbeat"):
    data: HeartbeatData = HeartbeatData()


class ReconnectRequest(msgspec.Struct, frozen=True, tag_field="event", tag="bts:request_reconnect"):
    """``data`` is ``{}`` in the docs and ``""`` in some clients' captures: not read."""


Message = Trade | Book | Subscribed | Unsubscribed | ErrorMessage | Heartbeat | ReconnectRequest

_DECODER: Final[msgspec.json.Decoder[Message]] = msgspec.json.Decoder(Message)


class _TextTradeData(msgspec.Struct, frozen=True, gc=False):
    """``TradeData`` with ``price_str`` as the exchange's text, checked after the decode
    (``TextRules.price``): a ``pattern`` field costs more than that check."""

    id: int
    price_str: str | None = None
    microtimestamp: str | None = None
    timestamp: str | None = None
    type: int | None = None


class _TextTrade(msgspec.Struct, frozen=True, gc=False, tag_field="event", tag="trade"):
    channel: str
    data: _TextTradeData


# Books and heartbeats decode exactly as on the full path, so a bad one is left to it.
_FAST_DECODER: Final = msgspec.json.Decoder(_TextTrade | Book | Heartbeat)
_LEVEL: Final = msgspec.json.Decoder(Level)
_KNOWN_EVENTS: Final = frozenset(
    {
        "trade",
        "data",
        "bts:subscription_succeeded",
        "bts:unsubscription_succeeded",
        "bts:error",
        "bts:heartbeat",
        "bts:request_reconnect",
    }
)


class _Envelope(msgspec.Struct):
    """Only read when the full decode failed, to tell an unknown event from a bad shape."""

    event: str


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> Bitstamp ``btcusd`` (the ``url_symbol`` of trading-pairs-info)."""
    return symbol.replace("/", "").lower()


def split_channel(channel: str) -> tuple[str, str]:
    """``live_trades_btcusd`` -> (``live_trades``, ``btcusd``); pairs hold no underscore."""
    kind, _, pair = channel.rpartition("_")
    return kind, pair


class BitstampAdapter:
    """The Bitstamp protocol for one connection's fixed pairs; caches each pair's top of book."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._top: dict[str, tuple[Decimal | None, Decimal | None]] = {}  # native -> (bid, ask)
        # native -> (a ``_top`` value, its bid and ask as the store's text): the fast path's
        self._top_text: dict[str, tuple[tuple[Decimal | None, Decimal | None], str | None,
                                        str | None]] = {}  # fmt: skip

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """Two frames per pair (Bitstamp takes one channel per message): book, then trades.

        The book goes first so its snapshot is cached before the pair's first trade arrives.
        A repeated subscribe (a resubscribe of a quiet pair) is sent as is: Bitstamp answers
        it with another ``bts:subscription_succeeded`` and keeps one subscription.
        """
        return [
            _subscribe(f"{channel}_{native}")
            for native in self._symbols.natives(symbols)
            for channel in (BOOK, TRADES)
        ]

    def ping_message(self) -> str:
        """``bts:heartbeat``: answered with a success reply, proving the link of a quiet pair."""
        return '{"event":"bts:heartbeat"}'

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        message = _decode(frame)
        if isinstance(message, Trade):
            return self._parse_trade(message, received_at)
        if isinstance(message, Book):
            return self._parse_book(message)
        if isinstance(message, Subscribed):
            return self._parse_subscribed(message)
        if isinstance(message, ErrorMessage):
            return self._parse_error(message)
        return _parse_control(message)

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Trades and top-of-book snapshots of ours and heartbeats only, prices canonical text,
        times in ``microtimestamp``; else ``None`` (``chrono.exchanges.fast``). The cached top
        of book moves only when the whole read is taken; a read of books alone (no feed) is
        the full path's, which counts it as data."""
        to_canonical, feeds = self._symbols.to_canonical, []
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        tops, staged, books = self._top, {}, False
        if (decoded := decode_each(_FAST_DECODER, frames)) is None:
            return None
        for message in decoded:
            kind = type(message)
            if kind is Book:
                kind_name, native = split_channel(message.channel)
                if kind_name != BOOK or to_canonical(native) is None:
                    return None
                try:
                    staged[native] = (_top(message.data.bids), _top(message.data.asks))
                except InvalidFrame:
                    return None
                books = True
                continue
            if kind is not _TextTrade:
                continue  # a heartbeat
            data = message.data
            native = split_channel(message.channel)[1]
            micros = data.microtimestamp
            if (
                (symbol := to_canonical(native)) is None
                or data.price_str is None
                or (price := rules.price(symbol, data.price_str)) is None
                or micros is None
                or not (len(micros) <= 18 and micros.isascii() and micros.isdigit())
                or (time := epoch_time(int(micros), 1)) is None
            ):
                return None
            top = staged[native] if native in staged else tops.get(native, (None, None))
            bid_text, ask_text = self._top_texts(native, top)
            if (bid_text is None and top[0] is not None) or (
                ask_text is None and top[1] is not None
            ):
                return None  # a book price not written out plainly here (NaN, an exponent)
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=time[0], received_at=received_at,
                source=SOURCE, worker_id=worker_id, volume=None, bid=top[0], ask=top[1],
                metadata={"native_symbol": native, "trade_id": data.id,
                          "side": _SIDES.get(data.type)},
                text=FeedText(data.price_str, None, bid_text, ask_text, time[1], received_text),
            ))  # fmt: skip
        if books and not feeds:
            return None
        tops.update(staged)
        return Feeds.of(feeds)

    def _top_texts(
        self, native: str, top: tuple[Decimal | None, Decimal | None]
    ) -> tuple[str | None, str | None]:
        """The store's text of a cached top of book (``None`` for a side ``plain_text`` does
        not write), formatted once per book update."""
        cached = self._top_text.get(native)
        if cached is not None and cached[0] is top:
            return cached[1], cached[2]
        bid, ask = top
        texts = None if bid is None else plain_text(bid), None if ask is None else plain_text(ask)
        self._top_text[native] = (top, *texts)
        return texts

    def _parse_trade(self, trade: Trade, received_at: datetime) -> ParsedFrame:
        """One trade (real capture, docs/exchanges.md)::

            {"data":{"id":216000477,"timestamp":"1641343699","amount":0.0792,
             "amount_str":"0.07920000","price":3805.44,"price_str":"3805.44","type":0,
             "microtimestamp":"1641343699596000","buy_order_id":1443875737346049,
             "sell_order_id":1443875731320832},"channel":"live_trades_ethusd","event":"trade"}

        A trade without ``price_str`` is skipped as ``no_price``, one with no time at all as
        ``no_time`` (the receive time would invent a trade time). ``price_str`` is typed before
        anything else is looked at, as when it was a typed field: a bad one is ``schema``
        whatever the pair.
        """
        data = trade.data
        price = decode(OPTIONAL_DECIMAL, data.price_str, at="data.price_str")
        native = split_channel(trade.channel)[1]
        symbol = self._symbols.to_canonical(native)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        if price is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_price"])
        timestamp = _trade_time(data)
        if timestamp is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_time"])
        bid, ask = self._top.get(native, (None, None))
        feed = PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=timestamp,
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=None,
            bid=bid,
            ask=ask,
            metadata={"native_symbol": native, "trade_id": data.id, "side": _SIDES.get(data.type)},
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def _parse_book(self, book: Book) -> ParsedFrame:
        """A book snapshot (top 100 per side); only ``order_book_*`` updates the cache::

            {"data":{"timestamp":"1641343691","microtimestamp":"1641343691406478",
             "bids":[["3800.71","1.76200000"],...],"asks":[["3805.44","0.50000000"],...]},
             "channel":"order_book_ethusd","event":"data"}

        ``diff_order_book``/``detail_order_book`` share the event but are not a top of book:
        skipped as ``unused_channel``. An empty side caches ``None``.
        """
        kind, native = split_channel(book.channel)
        if kind != BOOK:
            return ParsedFrame(FrameKind.DATA, skipped=["unused_channel"])
        if self._symbols.to_canonical(native) is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        self._top[native] = (_top(book.data.bids), _top(book.data.asks))
        return ParsedFrame(FrameKind.DATA)

    def _parse_subscribed(self, ack: Subscribed) -> ParsedFrame:
        """One channel confirmed (real capture, cryptofeed ``BITSTAMP.ws.1.0``)::

            {"event":"bts:subscription_succeeded","channel":"diff_order_book_ethusd","data":{}}

        ``message`` is the channel; ``symbols`` its canonical pair when this collector holds it.
        """
        return ParsedFrame(FrameKind.ACK, message=ack.channel, symbols=self._held(ack.channel))

    def _parse_error(self, error: ErrorMessage) -> ParsedFrame:
        """A refused request; the link stays up (real capture, docs/exchanges.md)::

            {"event":"bts:error","channel":"",
             "data":{"code":null,"message":"Incorrect JSON format."}}

        ``message`` is ``"<message>"`` or ``"<code>: <message>"``; ``symbols`` the channel's
        pair when the frame names a held one.
        """
        code, text = error.data.code, error.data.message
        message = text if code is None else f"{code}: {text}"
        return ParsedFrame(FrameKind.ERROR, message=message, symbols=self._held(error.channel))

    def _held(self, channel: str) -> list[str]:
        symbol = self._symbols.to_canonical(split_channel(channel)[1]) if channel else None
        return [] if symbol is None else [symbol]


def _parse_control(message: Unsubscribed | Heartbeat | ReconnectRequest) -> ParsedFrame:
    """The frames that carry no data (docs/exchanges.md §4)::

    {"event":"bts:unsubscription_succeeded","channel":"live_trades_btcusd","data":{}}
    {"event":"bts:heartbeat","channel":"","data":{"status":"success"}}
    {"event":"bts:request_reconnect","channel":"","data":{}}
    """
    if isinstance(message, Unsubscribed):
        return ParsedFrame(FrameKind.INFO, message=f"unsubscribed {message.channel}")
    if isinstance(message, Heartbeat):
        return ParsedFrame(FrameKind.HEARTBEAT, message=message.data.status)
    return ParsedFrame(FrameKind.RECONNECT, message="bts:request_reconnect")


def _subscribe(channel: str) -> str:
    return msgspec.json.encode({"event": "bts:subscribe", "data": {"channel": channel}}).decode()


def _top(levels: list[msgspec.Raw]) -> Decimal | None:
    """The price of the first level (the best), or ``None`` for an empty side."""
    if not levels:
        return None
    try:
        return _LEVEL.decode(levels[0]).price
    except msgspec.ValidationError as exc:
        raise InvalidFrame("schema", f"book level: {exc}") from exc
    except (msgspec.DecodeError, UnicodeError) as exc:  # bad UTF-8 in it: a Raw goes unchecked
        raise InvalidFrame("malformed") from exc


def _trade_time(data: TradeData) -> datetime | None:
    """``microtimestamp`` (µs), else ``timestamp`` (s), as an aware UTC datetime."""
    if data.microtimestamp is not None:
        return _epoch(data.microtimestamp, 1)
    if data.timestamp is not None:
        return _epoch(data.timestamp, _SECOND_US)
    return None


def _epoch(text: str, unit_us: int) -> datetime:
    """Epoch digits in ``unit_us`` µs -> UTC datetime, exactly (no float on the way)."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidFrame("schema", f"bad epoch time {text[:40]!r}")
    try:
        return _EPOCH + timedelta(microseconds=int(text) * unit_us)
    except (OverflowError, ValueError) as exc:  # past year 9999, or past int()'s digit limit
        raise InvalidFrame("schema", f"time out of range: {text[:40]!r}") from exc


def _decode(frame: str | bytes) -> Message:
    """One message, or ``InvalidFrame`` (malformed, schema or unknown_type)."""
    return decode_or_classify(_DECODER, frame, _unknown_event)


def _unknown_event(frame: str | bytes) -> str | None:
    event = _ENVELOPE.decode(frame).event
    return None if event in _KNOWN_EVENTS else event


EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://ws.bitstamp.net",
    adapter=BitstampAdapter,
    native_symbol=native_symbol,
    # Bitstamp documents no WebSocket limits (docs/exchanges.md §4), so these are conservative
    # guesses: 1 connect/s per IP; 10 client messages/s (one channel per message, two per
    # pair); 200 pairs per connection, about all Bitstamp lists, subscribed in ~40 s.
    limits=Limits(connects=1, connects_window_s=1.0, messages_per_s=10.0, max_symbols=200),
    quote_aliases={},  # USD, USDT, USDC and EUR are all traded as themselves
    # Bitstamp asks for no application ping; bts:heartbeat every 30 s proves a quiet link.
    ping_interval_s=30.0,
    # Bitstamp closes a connection after 90 days: rotate a day before.
    rotate_after_s=89 * 86_400.0,
)
