"""Coinbase Exchange (``ws-feed.exchange.coinbase.com``): the ``ticker`` channel plus heartbeats.

Frames decode straight into typed Structs (a tagged union on ``"type"``); prices stay ``Decimal``
digit for digit and ``time`` becomes an aware UTC ``datetime`` with its microseconds. Fields the
adapter does not use are ignored, so additions on the exchange's side do not break it. A ticker's
numbers and time are decoded from the last of their keys only (``msgspec.Raw``, then typed), as
the fast path reads them (``chrono.exchanges.fast``).

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape) or ``unknown_type``; nothing else escapes ``parse``.
Price rules are the collector's job (``FeedRules``); the adapter only skips the zero-price
ticker that products with no trades send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Final

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import (
    DECIMAL,
    NULL,
    OPTIONAL_DECIMAL,
    OPTIONAL_TIME,
    AwareDatetime,
    as_utc,
    decode,
    decode_or_classify,
)
from chrono.exchanges.fast import (
    PLAIN_RE,
    TIME_RE,
    Received,
    TextRules,
    decode_each,
    real_date,
    texts_pattern,
)
from chrono.feeds import Feeds
from chrono.model import PriceFeed, to_symbol

SOURCE: Final = "coinbase"


class Channel(msgspec.Struct, frozen=True):
    name: str
    product_ids: list[str] = []


class Subscriptions(msgspec.Struct, frozen=True, tag_field="type", tag="subscriptions"):
    channels: list[Channel] = []


class ErrorMessage(msgspec.Struct, frozen=True, tag_field="type", tag="error"):
    message: str = ""
    reason: str = ""


class Heartbeat(msgspec.Struct, frozen=True, tag_field="type", tag="heartbeat"):
    product_id: str = ""
    sequence: int | None = None
    last_trade_id: int | None = None
    time: AwareDatetime | None = None


class Ticker(msgspec.Struct, frozen=True, tag_field="type", tag="ticker"):
    """The fields Chrono keeps; ``time``/``trade_id`` are absent on untraded products. Numbers
    and time stay raw until ``_parse_ticker`` types them (``chrono.exchanges.decoding``)."""

    product_id: str
    price: msgspec.Raw
    sequence: int | None = None
    trade_id: int | None = None
    time: msgspec.Raw = NULL
    volume_24h: msgspec.Raw = NULL
    best_bid: msgspec.Raw = NULL
    best_ask: msgspec.Raw = NULL


Message = Subscriptions | ErrorMessage | Heartbeat | Ticker

_DECODER: Final[msgspec.json.Decoder[Message]] = msgspec.json.Decoder(Message)
_KNOWN_TYPES: Final = frozenset({"subscriptions", "error", "heartbeat", "ticker"})


class _TextTicker(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="ticker"):
    """``Ticker`` with its numbers and time kept as the exchange's text (the fast path)."""

    product_id: str
    price: str
    sequence: int | None = None
    trade_id: int | None = None
    time: str | None = None
    volume_24h: str | None = None
    best_bid: str | None = None
    best_ask: str | None = None


@lru_cache(maxsize=4)
def _texts(amounts: int) -> Callable[[str], object]:
    """``texts_pattern`` of a price, ``amounts`` amounts and a time."""
    return texts_pattern(*[PLAIN_RE] * (amounts + 1), TIME_RE)


# A ticker's price, volume, bid, ask and time, in one check (the common case: all five sent).
_TEXTS: Final = _texts(3)

# A heartbeat decodes exactly as on the full path, so a bad one is left to it to count.
_FAST_DECODER: Final = msgspec.json.Decoder(_TextTicker | Heartbeat)


class _Envelope(msgspec.Struct):
    """Only read when the full decode failed, to tell an unknown type from a bad shape."""

    type: str


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> Coinbase ``BTC-USD``."""
    return symbol.replace("/", "-")


def canonical_symbol(product_id: str) -> str:
    """Coinbase ``BTC-USD`` -> canonical ``BTC/USD``; ``InvalidFrame`` if it has no dash."""
    base, dash, quote = product_id.partition("-")
    if not (dash and base and quote):
        raise InvalidFrame("schema", f"bad product_id {product_id!r}")
    return to_symbol(base, quote)


class CoinbaseAdapter:
    """The Coinbase protocol for one connection's fixed products. Pure: no I/O, no clock."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        # The fast path's metadata JSON up to the sequence, per product (its id JSON-escaped).
        self._heads = {native: '{"native_symbol":' + msgspec.json.encode(native).decode()
                       + ',"sequence":' for native in symbols.by_native}  # fmt: skip

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """One subscribe, products listed per channel.

        Per-channel lists are explicit on purpose: an empty per-channel list overrides a
        top-level one and the exchange rejects it with ``" is not a valid product"``. A
        repeated subscribe is accepted and answered with the product's latest ticker.
        """
        products = self._symbols.natives(symbols)
        channels = [{"name": name, "product_ids": products} for name in ("ticker", "heartbeat")]
        request = {"type": "subscribe", "channels": channels}
        return [msgspec.json.encode(request).decode()]

    def ping_message(self) -> None:
        """Coinbase needs no application ping: its heartbeat channel proves the link."""
        return None

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        message = _decode(frame)
        if isinstance(message, Ticker):
            return self._parse_ticker(message, received_at)
        if isinstance(message, Heartbeat):
            return _parse_heartbeat(message)
        if isinstance(message, Subscriptions):
            return self._parse_subscriptions(message)
        return _parse_error(message)

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """Tickers and heartbeats only, every number and time in canonical text, every product
        one of this collector's; else ``None`` (``chrono.exchanges.fast``). Columns of the
        texts checked (``Feeds``); the metadata's JSON is written here, as ``metadata_text``
        would write the full path's dict."""
        canonical, heads, price_text = self._symbols.by_native.get, self._heads, rules.price_text
        nonzero_is_enough, day = rules.nonzero_is_enough, ""
        if (decoded := decode_each(_FAST_DECODER, frames)) is None:
            return None
        columns: Columns = ([], [], [], [], [], [], [])
        symbols, prices, volumes, bids, asks, times, metadata = columns
        for ticker in decoded:
            if type(ticker) is not _TextTicker:
                continue  # a heartbeat
            text, native, time = ticker.price, ticker.product_id, ticker.time
            volume, bid, ask = ticker.volume_24h, ticker.best_bid, ticker.best_ask
            if time is None or (symbol := canonical(native)) is None:
                return None
            # Inline, the common case of each check (a read is thousands of these).
            if volume is None or bid is None or ask is None:
                if not _plain(text, time, volume, bid, ask):
                    return None
            elif _TEXTS(f"{text},{volume},{bid},{ask},{time}") is None:
                return None
            if not (text.strip("0.") if nonzero_is_enough else price_text(symbol, text)):
                return None
            if time[:10] != day:
                if not real_date(time[:10]):
                    return None
                day = time[:10]
            sequence, trade_id = ticker.sequence, ticker.trade_id  # JSON: None is null
            symbols.append(symbol)
            prices.append(text)
            volumes.append(volume)
            bids.append(bid)
            asks.append(ask)
            times.append(time)
            metadata.append(f"{heads[native]}{'null' if sequence is None else sequence},"
                            f'"trade_id":{"null" if trade_id is None else trade_id}}}')  # fmt: skip
        return Feeds.of_read(SOURCE, self.worker_id, received.at, received.text, columns)

    def _parse_ticker(self, ticker: Ticker, received_at: datetime) -> ParsedFrame:
        """A trade, e.g. (real capture, trimmed)::

            {"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",
             "volume_24h":"94381.28000000","best_bid":"14.7550","best_ask":"14.8060",
             "side":"buy","time":"2021-04-17T16:43:30.244075Z","trade_id":881613,...}

        A product that never traded sends ``"price":"0"`` and no ``time``: skipped as
        ``untraded``. Any other ticker without ``time`` is skipped as ``no_time``, since the
        receive time would invent a trade time.
        """
        price, time = (
            decode(DECIMAL, ticker.price, at="price"),
            decode(OPTIONAL_TIME, ticker.time, at="time"),
        )
        if time is None:
            return ParsedFrame(
                FrameKind.DATA, skipped=["untraded" if price.is_zero() else "no_time"]
            )
        product_id = ticker.product_id
        symbol = self._symbols.to_canonical(product_id) or canonical_symbol(product_id)
        feed = PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=as_utc(time),
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=decode(OPTIONAL_DECIMAL, ticker.volume_24h, at="volume_24h"),
            bid=decode(OPTIONAL_DECIMAL, ticker.best_bid, at="best_bid"),
            ask=decode(OPTIONAL_DECIMAL, ticker.best_ask, at="best_ask"),
            metadata={
                "native_symbol": product_id,
                "sequence": ticker.sequence,
                "trade_id": ticker.trade_id,
            },
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def _parse_subscriptions(self, ack: Subscriptions) -> ParsedFrame:
        """The cumulative subscription set after each (un)subscribe (real capture, trimmed)::

            {"type":"subscriptions","channels":[{"name":"ticker","product_ids":["YFI-BTC"]}]}

        ``message`` lists the acked ticker products, comma-separated, in the exchange's order;
        ``symbols`` holds the canonical ones this collector asked for.
        """
        ticker = [
            pid
            for channel in ack.channels
            if channel.name == "ticker"
            for pid in channel.product_ids
        ]
        mine = [s for pid in ticker if (s := self._symbols.to_canonical(pid)) is not None]
        return ParsedFrame(FrameKind.ACK, message=",".join(ticker), symbols=mine)


Columns = tuple[list[str], list[str], list[str | None], list[str | None], list[str | None],
                list[str], list[str]]  # fmt: skip


def _plain(price: str, time: str, volume: str | None, bid: str | None, ask: str | None) -> bool:
    """Whether a fast ticker's texts are plain decimals and a fixed-width time, in one regex
    call of as many parts as it has amounts (``parse_fast`` calls ``_TEXTS``, all three, itself:
    the common case)."""
    present = [text for text in (volume, bid, ask) if text is not None]
    return _texts(len(present))(",".join((price, *present, time))) is not None


def _parse_heartbeat(beat: Heartbeat) -> ParsedFrame:
    """Proof the link is alive, once a second per product (docs/exchanges.md)::

        {"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",
         "time":"2014-11-07T08:19:28.464459Z"}

    ``message`` is the product id.
    """
    return ParsedFrame(FrameKind.HEARTBEAT, message=beat.product_id)


def _parse_error(error: ErrorMessage) -> ParsedFrame:
    """A refused request; the link stays up (docs/exchanges.md)::

        {"type":"error","message":"Failed to subscribe",
         "reason":"BTC-XYZ is not a valid product"}

    ``message`` is ``"<message>: <reason>"``.
    """
    text = f"{error.message}: {error.reason}" if error.reason else error.message
    return ParsedFrame(FrameKind.ERROR, message=text)


def _decode(frame: str | bytes) -> Message:
    """One message, or ``InvalidFrame`` (malformed, schema or unknown_type)."""
    return decode_or_classify(_DECODER, frame, _unknown_type)


def _unknown_type(frame: str | bytes) -> str | None:
    kind = _ENVELOPE.decode(frame).type
    return None if kind in _KNOWN_TYPES else kind


EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://ws-feed.exchange.coinbase.com",
    adapter=CoinbaseAdapter,
    native_symbol=native_symbol,
    # 8 connections/s per IP (current docs; older docs said 1 per 4 s, so stay at 1/s);
    # 100 client messages/s per IP.
    limits=Limits(connects=1, connects_window_s=1.0, messages_per_s=10.0, max_symbols=500),
)
