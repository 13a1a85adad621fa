"""Gemini's current WebSocket API (``wss://ws.gemini.com``): the ``{symbol}@bookTicker`` streams.

A Binance-style control plane (docs/exchanges.md §5): requests ``{"id","method","params"}``,
answered by an envelope ``{"id","status","result"|"error"}`` that echoes the request id. The
adapter keeps the ids it sent (subscribe -> its symbols, ping) so a response can say what it
confirms.

The API has no type tag: a frame is a response if it carries ``id``/``status``, a bookTicker if it
carries ``u`` (and no ``e``, which the other streams' events have). Frames decode in one pass into
one Struct of every key Chrono reads; prices stay ``Decimal`` digit for digit. bookTicker fires on
every top-of-book change and repeats the last trade (``c``/``C``) each time: the same ``c`` at a
later ``E`` is a new feed, since a feed's identity includes its timestamp. Bids and asks may be
the empty string (a production frame did, dp_exchange changelog): that is "no level", ``None``.

Errors: ``InvalidFrame`` with ``malformed`` (not JSON), ``schema`` (wrong shape, bad numbers or
times) or ``unknown_type`` (another stream's event); nothing else escapes ``parse``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import DECIMAL, decode
from chrono.exchanges.fast import (
    PLAIN_OR_EMPTY_RE,
    PLAIN_RE,
    Received,
    TextRules,
    amount,
    decode_each,
    epoch_time,
    texts_pattern,
)
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed, decimal_text

SOURCE: Final = "gemini"
STREAM: Final = "bookTicker"
# Gemini documents no cap on streams per request. 50 keeps a subscribe near 1 KB; Binance, whose
# protocol this one copies, allows 1024 streams per connection and batches of hundreds.
MAX_STREAMS_PER_REQUEST: Final = 50
# Requests awaiting a response; past this the oldest are forgotten (their response then reads
# as INFO), so a server that never answers cannot grow a long-lived adapter without bound.
MAX_PENDING_REQUESTS: Final = 1024

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SIZE_TEXT: Final = 1000  # characters of a last trade size written out (metadata)
_ABSENT: Final = msgspec.Raw()
_EMPTY_STRING: Final = msgspec.Raw(b'""')
_NULL: Final = msgspec.Raw(b"null")


class WsError(msgspec.Struct, frozen=True):
    code: int | None = None
    msg: str = ""


class Frame(msgspec.Struct, frozen=True):
    """Every top-level key Chrono reads, from any frame; which are present tells the kind.

    Response keys: ``id`` (string, integer or null), ``status``, ``error``, ``result``.
    bookTicker keys: ``u``, ``E``, ``s``, ``b``, ``a``, ``c``, ``C``. Other streams carry ``e``.
    Numbers stay ``Raw`` until read, so ``""`` can mean "no level" instead of a bad decimal.
    """

    id: str | int | UnsetType | None = UNSET
    status: int | UnsetType = UNSET
    error: WsError | None = None
    result: msgspec.Raw = _ABSENT
    e: str | None = None
    u: int | UnsetType = UNSET
    E: int | None = None
    s: str | None = None
    b: msgspec.Raw = _ABSENT
    a: msgspec.Raw = _ABSENT
    c: msgspec.Raw = _ABSENT
    C: msgspec.Raw = _ABSENT


_DECODER: Final = msgspec.json.Decoder(Frame)


class _TextBookTicker(msgspec.Struct, frozen=True, gc=False):
    """A bookTicker with its numbers as the exchange's text (the fast path), checked after the
    decode by ``_TEXTS`` (``Frame`` keeps them raw: both read a repeated key's last value);
    its other fields are never looser than ``Frame``'s, and a response's or another stream's
    keys may not be there."""

    u: int
    E: int
    s: str
    c: str
    b: str | None = None
    a: str | None = None
    C: str | None = None
    id: UnsetType = UNSET
    status: UnsetType = UNSET
    error: UnsetType = UNSET
    result: UnsetType = UNSET
    e: UnsetType = UNSET


_FAST_DECODER: Final = msgspec.json.Decoder(_TextBookTicker)
# A bookTicker's c, b, a and C in one check: a plain price, then plain amounts or "" (absent
# and null are "" too). Plain text is short, so C is never too long to write out.
_TEXTS: Final = texts_pattern(PLAIN_RE, PLAIN_OR_EMPTY_RE, PLAIN_OR_EMPTY_RE, PLAIN_OR_EMPTY_RE)
_ENCODER: Final = msgspec.json.Encoder()


class _Request(NamedTuple):
    """What a request id asked for: ``method`` and, for a subscribe, its canonical symbols."""

    method: str
    symbols: list[str]
    natives: list[str]


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> ``btcusd`` (lowercase in this API; legacy wrote ``BTCUSD``)."""
    return symbol.replace("/", "").lower()


def stream_name(native: str) -> str:
    return f"{native}@{STREAM}"


class GeminiAdapter:
    """The Gemini protocol for one collector's fixed symbols. No I/O, no clock.

    It holds the ids of requests still awaiting a response; ids are unique for the adapter's
    lifetime, so the connections of one collector (a rotation overlaps two) can share it.
    """

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._next_id = 0
        self._pending: OrderedDict[str, _Request] = OrderedDict()

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """One ``subscribe`` per ``MAX_STREAMS_PER_REQUEST`` streams.

        No unsubscribe first: docs/exchanges.md does not say Gemini refuses a repeated subscribe
        (Binance, whose protocol this is, accepts it), so a resubscribe is a plain subscribe.
        """
        messages = []
        for start in range(0, len(symbols), MAX_STREAMS_PER_REQUEST):
            batch = list(symbols[start : start + MAX_STREAMS_PER_REQUEST])
            natives = self._symbols.natives(batch)
            request_id = self._remember(_Request("subscribe", batch, natives))
            params = [stream_name(native) for native in natives]
            request = {"id": request_id, "method": "subscribe", "params": params}
            messages.append(_ENCODER.encode(request).decode())
        return messages

    def ping_message(self) -> str:
        """The utility method ``ping`` (docs/exchanges.md §5); its response is a HEARTBEAT."""
        request_id = self._remember(_Request("ping", [], []))
        return _ENCODER.encode({"id": request_id, "method": "ping"}).decode()

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        message = _decode(frame)
        if message.id is not UNSET or message.status is not UNSET:
            return self._parse_response(message)
        if message.e is not None:
            raise InvalidFrame("unknown_type", message.e)
        if message.u is not UNSET:
            return self._parse_book_ticker(message, received_at)
        raise InvalidFrame("unknown_type", "neither a response nor a bookTicker")

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """bookTickers of ours with a last trade only, every number canonical text (``""``
        for no level); else ``None`` (``chrono.exchanges.fast``). Responses (pings included)
        are the full path's: they settle pending requests."""
        to_canonical, feeds = self._symbols.to_canonical, []
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        price_of, texts = rules.price_of_plain, _TEXTS
        if (decoded := decode_each(_FAST_DECODER, frames)) is None:
            return None
        for ticker in decoded:
            native, nanos, last = ticker.s, ticker.E, ticker.c
            bid, ask, size = ticker.b or None, ticker.a or None, ticker.C or None
            if (
                nanos <= 0
                or (symbol := to_canonical(native)) is None
                or texts(f"{last},{bid or ''},{ask or ''},{size or ''}") is None
                or (price := price_of(symbol, last)) is None
                or (time := epoch_time(nanos // 1000, 1)) is None
            ):
                return None
            feeds.append(PriceFeed(
                symbol=symbol, price=price, timestamp=time[0], received_at=received_at,
                source=SOURCE, worker_id=worker_id, volume=None,
                bid=amount(bid), ask=amount(ask),
                metadata={"native_symbol": native, "update_id": ticker.u, "last_size": size},
                text=FeedText(last, None, bid, ask, time[1], received_text),
            ))  # fmt: skip
        return Feeds.of(feeds)

    def _remember(self, request: _Request) -> str:
        self._next_id += 1
        request_id = str(self._next_id)
        self._pending[request_id] = request
        while len(self._pending) > MAX_PENDING_REQUESTS:
            self._pending.popitem(last=False)
        return request_id

    def _parse_book_ticker(self, ticker: Frame, received_at: datetime) -> ParsedFrame:
        """A top-of-book change (docs/exchanges.md §5)::

            {"u":12345678,"E":1759240000123456789,"s":"btcusd","b":"109876.12","B":"0.5",
             "a":"109876.45","A":"1.25","c":"109876.30","C":"0.01"}

        ``c``/``C`` (last trade price/size) appear once the book has traded; without ``c`` the
        frame is skipped as ``no_trade``. ``E`` is nanoseconds; ``b``/``a`` of ``""`` are None.
        """
        native, nanos = ticker.s, ticker.E
        if native is None or nanos is None:
            raise InvalidFrame("schema", "bookTicker without s or E")
        symbol = self._symbols.to_canonical(native)
        if symbol is None:
            return ParsedFrame(FrameKind.DATA, skipped=["unknown_symbol"])
        price = _decimal(ticker.c, "c")
        if price is None:
            return ParsedFrame(FrameKind.DATA, skipped=["no_trade"])
        size = _decimal(ticker.C, "C")
        feed = PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=from_nanoseconds(nanos),
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=None,  # not on the WebSocket: 24 h volume is REST only
            bid=_decimal(ticker.b, "b"),
            ask=_decimal(ticker.a, "a"),
            metadata={
                "native_symbol": native,
                "update_id": ticker.u,
                "last_size": None if size is None else _size_text(size),
            },
        )
        return ParsedFrame(FrameKind.DATA, feeds=[feed])

    def _parse_response(self, response: Frame) -> ParsedFrame:
        """The answer to a request, matched by its id (docs/exchanges.md §5)::

            {"id":"1","status":200,"result":null}
            {"id":"1","status":400,"error":{"code":-1002,"msg":"..."}}

        A subscribe's success is an ACK of its symbols, a ping's a HEARTBEAT; an error names the
        symbols of the request it refuses.
        """
        if response.status is UNSET:
            raise InvalidFrame("schema", "response without status")
        key = None if response.id is None or response.id is UNSET else str(response.id)
        request = None if key is None else self._pending.pop(key, None)
        if response.error is not None or not 200 <= response.status < 300:
            symbols = [] if request is None else request.symbols
            return ParsedFrame(FrameKind.ERROR, message=_error_text(response), symbols=symbols)
        if request is None:
            return ParsedFrame(FrameKind.INFO, message=_result_text(response))
        if request.method == "subscribe":
            return ParsedFrame(
                FrameKind.ACK, message=",".join(request.natives), symbols=request.symbols
            )
        if request.method == "ping":
            return ParsedFrame(FrameKind.HEARTBEAT, message="pong")
        return ParsedFrame(FrameKind.INFO, message=_result_text(response))


def from_nanoseconds(nanos: int) -> datetime:
    """``E`` (ns since the epoch) as an aware UTC datetime.

    Python datetimes hold microseconds: the last three digits are truncated, by integer
    arithmetic (a float would round 19-digit values to ~256 ns).
    """
    if nanos <= 0:
        raise InvalidFrame("schema", f"E out of range: {nanos}")
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError as exc:
        raise InvalidFrame("schema", f"E out of range: {nanos}") from exc


def _decimal(raw: msgspec.Raw, name: str) -> Decimal | None:
    """A decimal string (or JSON number) as sent; absent, ``null`` or ``""`` is None."""
    if not raw or raw in (_EMPTY_STRING, _NULL):
        return None
    return decode(DECIMAL, raw, at=name)  # Raw skips UTF-8 checks inside strings: malformed


def _size_text(size: Decimal) -> str:
    """``C`` written out; ``InvalidFrame`` past ``MAX_SIZE_TEXT`` characters: ``1E+999999999``
    is a short text (and a valid ``Decimal``) whose digits would not fit in memory."""
    _, digits, exponent = size.as_tuple()
    if isinstance(exponent, int):  # finite
        places = -exponent
        if exponent < 0:
            length = max(len(digits), places + 1) + 1
        else:
            length = 1 if size.is_zero() else len(digits) + exponent
        if length > MAX_SIZE_TEXT:
            raise InvalidFrame("schema", f"C: {length} digits written out")
    return decimal_text(size)


def _error_text(response: Frame) -> str:
    """``"<msg> (code <code>, status <status>, id <id>)"``."""
    error = response.error or WsError()
    parts = [f"code {error.code}"] if error.code is not None else []
    parts += [f"status {response.status}", f"id {response.id}"]
    return f"{error.msg or 'error'} ({', '.join(parts)})"


def _result_text(response: Frame) -> str:
    raw = bytes(response.result)
    result = raw.decode(errors="replace") if raw else "no result"  # Raw skips UTF-8 checks
    return f"id {response.id}: {result[:200]}"


def _decode(frame: str | bytes) -> Frame:
    """A frame of any of the known shapes; ``InvalidFrame`` if it is none."""
    return decode(_DECODER, frame)


EXCHANGE: Final = Exchange(
    name=SOURCE,
    default_url="wss://ws.gemini.com",
    adapter=GeminiAdapter,
    native_symbol=native_symbol,
    # No connection, message or stream limits are documented for this API (docs/exchanges.md §5),
    # so stay well inside Binance's (300 connects / 5 min, 5 msg/s, 1024 streams), which this
    # protocol copies: one connect per 2 s per IP, 2 requests/s, 200 streams per connection
    # (production served a 347-stream subscribe on one connection, dp_exchange changelog).
    limits=Limits(connects=1, connects_window_s=2.0, messages_per_s=2.0, max_symbols=200),
    quote_aliases={},  # USD is USD on Gemini; GUSD, USDT and USDC are their own quotes
    # No idle cut is documented; a ping every 30 s proves the link both ways (its response
    # is a HEARTBEAT) at 1/60 of the request budget.
    ping_interval_s=30.0,
)
