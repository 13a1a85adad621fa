"""OKX v5 public (``wss://ws.okx.com:8443/ws/v5/public``): the ``tickers`` channel of SPOT pairs.

Every frame but the literal text ``pong`` is JSON of one of two shapes: an event
(``{"event": ...}``: acks, errors, notices, connection counts) or a push
(``{"arg": {...}, "data": [...]}``). Both decode into one typed Struct and are told apart by
``event``. Prices and sizes arrive as strings and stay ``Decimal`` digit for digit; ``""`` means
"no value" (an untraded pair's ``last``, an empty book side). ``ts`` is epoch milliseconds as a
string. Fields the adapter does not use are ignored, so additions on the exchange's side do
not break it. A ticker's numbers and ``ts`` are typed from the last of their keys only
(``msgspec.Raw``, then ``Number``/``Millis``), as the fast path reads them
(``chrono.exchanges.fast``).

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape, a bad number or time) or ``unknown_type`` (an event,
or a push channel, that this adapter does not know); nothing else escapes ``parse``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Annotated, Final, NamedTuple

import msgspec

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, Limits, ParsedFrame, SymbolMap
from chrono.exchanges.decoding import decode, decode_or_classify
from chrono.exchanges.fast import (
    PLAIN_OR_EMPTY_RE,
    PLAIN_RE,
    Received,
    TextRules,
    amount,
    epoch_time,
    texts_pattern,
)
from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed

SOURCE: Final = "okx"
CHANNEL: Final = "tickers"
PING: Final = "ping"  # the literal text, not JSON; the server answers ``pong``
RECONNECT_NOTICE: Final = "64008"  # "The connection will soon be closed for a service upgrade."
# The args of one request may total 64 KB (docs/exchanges.md §6). A quarter of that leaves room for
# the envelope and for however OKX counts; 200 symbols of ~50 bytes each still fit in one.
MAX_REQUEST_BYTES: Final = 16 * 1024
_ENVELOPE_BYTES: Final = 64  # {"id":"...","op":"unsubscribe","args":[]} with a long id
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ERROR_INST_ID: Final = re.compile(r"instId:([^\s,]+)")  # in 60018's "...instId:X doesn't exist"

# A decimal as OKX writes it, or "" where it has none; rejects NaN, "1_0", " 1" that Decimal takes,
# and an exponent of over 18 digits, which Decimal refuses (InvalidOperation, found by fuzzing).
Number = Annotated[str, msgspec.Meta(pattern=r"^(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,18})?)?$")]
Millis = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+$")]
_EMPTY: Final = msgspec.Raw(b'""')  # an absent number: ``""``, as OKX writes "no value"


class Arg(msgspec.Struct, frozen=True, rename="camel"):
    channel: str
    inst_id: str = ""


class Ticker(msgspec.Struct, frozen=True, rename="camel"):
    """One ``data`` item of a ``tickers`` push: the fields Chrono keeps. Numbers and ``ts``
    stay raw until ``_typed`` types them (``Number``, ``Millis``)."""

    inst_type: str
    inst_id: str
    last: msgspec.Raw
    ts: msgspec.Raw
    bid_px: msgspec.Raw = _EMPTY
    ask_px: msgspec.Raw = _EMPTY
    vol24h: msgspec.Raw = _EMPTY


class _Item(NamedTuple):
    """A ``Ticker`` with its numbers and ``ts`` typed: checked texts, ``""`` for none."""

    inst_type: str
    inst_id: str
    last: str
    ts: str
    bid_px: str
    ask_px: str
    vol24h: str


class Message(msgspec.Struct, frozen=True, rename="camel"):
    """Any JSON frame: an event when ``event`` is set, else a push (``arg`` and ``data``)."""

    event: str | None = None
    arg: Arg | None = None
    data: list[Ticker] | None = None
    code: str = ""
    msg: str = ""
    channel: str = ""  # channel-conn-count(-error)
    conn_count: str = ""


_DECODER: Final = msgspec.json.Decoder(Message)
_NUMBER: Final = msgspec.json.Decoder(Number)
_MILLIS: Final = msgspec.json.Decoder(Millis)


class _TextTicker(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """``Ticker`` with its numbers and ``ts`` as the exchange's text (the fast path), checked
    after the decode by ``_TEXTS``."""

    inst_type: str
    inst_id: str
    last: str
    ts: str
    bid_px: str = ""
    ask_px: str = ""
    vol24h: str = ""


# An item's last, ts, bid, ask and volume in one check: a plain price, a short epoch count
# (``int()`` of it always in range) and plain amounts or ``""``.
_TEXTS: Final = texts_pattern(
    PLAIN_RE, "[0-9]{1,16}", PLAIN_OR_EMPTY_RE, PLAIN_OR_EMPTY_RE, PLAIN_OR_EMPTY_RE
)


class _TextPush(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A push with nothing but ``arg`` and ``data``, as the exchange sends it (fast path)."""

    arg: Arg
    data: list[_TextTicker]


_FAST_DECODER: Final = msgspec.json.Decoder(_TextPush)
_KNOWN_EVENTS: Final = frozenset(
    {"subscribe", "unsubscribe", "error", "notice", "channel-conn-count",
     "channel-conn-count-error"}
)  # fmt: skip
_ENCODER: Final = msgspec.json.Encoder()


class _AnyArg(msgspec.Struct):
    channel: str = ""


class _Envelope(msgspec.Struct):
    """Only read when the full decode failed, to tell an unknown kind from a bad shape."""

    event: str | None = None
    arg: _AnyArg | None = None


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USDT`` -> OKX ``BTC-USDT`` (a SPOT instId)."""
    return symbol.replace("/", "-")


class OkxAdapter:
    """The OKX protocol for one connection's fixed SPOT pairs. Pure: no I/O, no clock."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._ids = count(1)  # request ids, echoed in acks and errors

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """``{"id":"1","op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}``.

        Batched to ``MAX_REQUEST_BYTES``. OKX acks a repeated subscribe again (the recording
        subscribes the same instIds three times and gets three acks each), so a resubscribe is
        a plain subscribe: no unsubscribe first, which would double its cost against the 480
        (un)subscribes per connection per hour.
        """
        args = [{"channel": CHANNEL, "instId": n} for n in self._symbols.natives(symbols)]
        return [self._request("subscribe", batch) for batch in _batches(args)]

    def ping_message(self) -> str:
        """The literal text ``ping``; OKX cuts a link that received nothing for 30 s."""
        return PING

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Decode one frame; raise ``InvalidFrame`` (malformed/schema/unknown_type) if bad."""
        if _is_pong(frame):
            return ParsedFrame(FrameKind.HEARTBEAT, message="pong")
        message = _decode(frame)
        items = None if message.data is None else _typed(frame, message.data)
        event = message.event
        if event is None:
            return self._parse_push(message, items, received_at)
        if event == "subscribe":
            return self._parse_ack(message)
        if event == "unsubscribe":
            return ParsedFrame(FrameKind.INFO, message=f"unsubscribed {_arg_text(message)}")
        if event == "error":
            return self._parse_error(message)
        if event == "notice":
            return _parse_notice(message)
        if event in ("channel-conn-count", "channel-conn-count-error"):
            return _parse_conn_count(message)
        raise InvalidFrame("unknown_type", event)

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """``tickers`` pushes of SPOT pairs of ours and ``pong``s only, every number canonical
        text (``""`` for none, but a price); else ``None`` (``chrono.exchanges.fast``)."""
        decode, to_canonical, feeds = _FAST_DECODER.decode, self._symbols.to_canonical, []
        worker_id, received_at, received_text = self.worker_id, received.at, received.text
        price_of, texts = rules.price_of_plain, _TEXTS
        for frame in frames:
            if frame == b"pong":
                continue
            try:
                push = decode(frame)
            except (msgspec.DecodeError, UnicodeError):
                return None
            if push.arg.channel != CHANNEL or not push.data:
                return None
            for item in push.data:
                if (symbol := to_canonical(item.inst_id)) is None or item.inst_type != "SPOT":
                    return None
                last, ts = item.last, item.ts
                if texts(f"{last},{ts},{item.bid_px},{item.ask_px},{item.vol24h}") is None:
                    return None
                if (price := price_of(symbol, last)) is None:
                    return None
                if (time := epoch_time(int(ts), 1_000)) is None:
                    return None
                volume, bid, ask = item.vol24h or None, item.bid_px or None, item.ask_px or None
                feeds.append(PriceFeed(
                    symbol=symbol, price=price, timestamp=time[0], received_at=received_at,
                    source=SOURCE, worker_id=worker_id, volume=amount(volume), bid=amount(bid),
                    ask=amount(ask),
                    metadata={"native_symbol": item.inst_id, "instType": item.inst_type},
                    text=FeedText(last, volume, bid, ask, time[1], received_text),
                ))  # fmt: skip
        return Feeds.of(feeds)

    def _request(self, op: str, args: list[dict[str, str]]) -> str:
        request = {"id": str(next(self._ids)), "op": op, "args": args}
        return _ENCODER.encode(request).decode()

    def _parse_push(
        self, push: Message, items: list[_Item] | None, received_at: datetime
    ) -> ParsedFrame:
        """A ``tickers`` push, one feed per SPOT item of ours (real capture, trimmed)::

            {"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT",
             "instId":"BTC-USDT","last":"30236","lastSz":"0.0002","askPx":"30228.7",
             "bidPx":"30228.6","vol24h":"17602.13085371","ts":"1652459224956",...}]}

        Items skipped on purpose: an instId this collector does not hold (swaps, futures)
        ``unknown_symbol``; a non-SPOT item ``not_spot``; an empty ``last`` ``no_price``.
        """
        if push.arg is None or items is None:
            raise InvalidFrame("schema", "neither an event nor an arg/data push")
        if push.arg.channel != CHANNEL:
            raise InvalidFrame("unknown_type", push.arg.channel)
        parsed = ParsedFrame(FrameKind.DATA)
        for item in items:
            symbol = self._symbols.to_canonical(item.inst_id)
            if symbol is None:
                parsed.skipped.append("unknown_symbol")
            elif item.inst_type != "SPOT":
                parsed.skipped.append("not_spot")
            elif not item.last:
                parsed.skipped.append("no_price")
            else:
                parsed.feeds.append(self._feed(symbol, item, received_at))
        return parsed

    def _feed(self, symbol: str, item: _Item, received_at: datetime) -> PriceFeed:
        return PriceFeed(
            symbol=symbol,
            price=Decimal(item.last),
            timestamp=_millis(item.ts),
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=_decimal(item.vol24h),
            bid=_decimal(item.bid_px),
            ask=_decimal(item.ask_px),
            metadata={"native_symbol": item.inst_id, "instType": item.inst_type},
        )

    def _parse_ack(self, ack: Message) -> ParsedFrame:
        """One ack per subscribed arg (real capture; current ones add ``id`` and ``connId``)::

            {"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"}}

        ``message`` is ``channel:instId``; ``symbols`` the canonical one, if it is ours.
        """
        if ack.arg is None:
            raise InvalidFrame("schema", "subscribe event without arg")
        symbol = self._symbols.to_canonical(ack.arg.inst_id) if ack.arg.channel == CHANNEL else None
        return ParsedFrame(FrameKind.ACK, message=_arg_text(ack), symbols=_listed(symbol))

    def _parse_error(self, error: Message) -> ParsedFrame:
        """A refused request; the link stays up (docs/exchanges.md, and as seen on the wire)::

            {"event":"error","msg":"Wrong URL or channel:tickers,instId:BTC-XYZ doesn't
             exist. Please use the correct URL, channel and parameters referring to API
             document.","code":"60018","connId":"ed8c407d"}

        ``message`` is ``"<code>: <msg>"``; ``symbols`` the instId the text names, if ours
        (60018: no such instId; 60012: bad request; 60014: requests too frequent).
        """
        found = _ERROR_INST_ID.search(error.msg)
        symbol = self._symbols.to_canonical(found.group(1)) if found else None
        text = f"{error.code}: {error.msg}" if error.code else error.msg
        return ParsedFrame(FrameKind.ERROR, message=text, symbols=_listed(symbol))


def _parse_notice(notice: Message) -> ParsedFrame:
    """Sent 30 s before a service upgrade closes the link (docs/exchanges.md)::

        {"event":"notice","code":"64008","msg":"The connection will soon be closed for a
         service upgrade. Please reconnect.","connId":"a4d3ae55"}

    64008 is RECONNECT; a notice with another code is INFO. ``message`` is the text.
    """
    kind = FrameKind.RECONNECT if notice.code == RECONNECT_NOTICE else FrameKind.INFO
    return ParsedFrame(kind, message=f"{notice.code}: {notice.msg}")


def _parse_conn_count(event: Message) -> ParsedFrame:
    """How many links a channel has (private channels; OKX's docs)::

        {"event":"channel-conn-count","channel":"orders","connCount":"2","connId":"abcd1234"}

    ``channel-conn-count-error`` (over the cap: the subscription was refused) is an ERROR.
    """
    kind = FrameKind.ERROR if event.event == "channel-conn-count-error" else FrameKind.INFO
    return ParsedFrame(kind, message=f"{event.event} {event.channel}: {event.conn_count}")


def _is_pong(frame: str | bytes) -> bool:
    return frame == (b"pong" if isinstance(frame, bytes) else "pong")


def _arg_text(message: Message) -> str:
    arg = message.arg
    return "" if arg is None else f"{arg.channel}:{arg.inst_id}"


def _listed(symbol: str | None) -> list[str]:
    return [] if symbol is None else [symbol]


def _batches(args: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    """``args`` in order, split so each request stays within ``MAX_REQUEST_BYTES``."""
    batch: list[dict[str, str]] = []
    size = _ENVELOPE_BYTES
    for arg in args:
        length = len(_ENCODER.encode(arg)) + 1  # and its comma
        if batch and size + length > MAX_REQUEST_BYTES:
            yield batch
            batch, size = [], _ENVELOPE_BYTES
        batch.append(arg)
        size += length
    if batch:
        yield batch


def _decimal(text: str) -> Decimal | None:
    """A ``Number`` (already checked by its pattern) or ``None`` for ``""``."""
    return Decimal(text) if text else None


def _millis(text: str) -> datetime:
    """``ts``, epoch milliseconds, as an aware UTC ``datetime`` (exact: no float)."""
    try:
        return _EPOCH + timedelta(milliseconds=int(text))
    except (OverflowError, ValueError) as exc:  # past year 9999; too many digits for int()
        raise InvalidFrame("schema", f"ts out of range: {text[:32]}") from exc


def _decode(frame: str | bytes) -> Message:
    """One message, or ``InvalidFrame`` (malformed, schema or unknown_type)."""
    return decode_or_classify(_DECODER, frame, _unknown_kind)


def _typed(frame: str | bytes, data: list[Ticker]) -> list[_Item]:
    """Every item of ``data`` with its numbers and ``ts`` typed, whatever the frame's kind,
    as when they were typed fields: a bad one is ``schema``, or ``unknown_type`` if the frame
    is of a kind this adapter does not know (``decode_or_classify``)."""
    try:
        return [_item(ticker, f"data[{index}].") for index, ticker in enumerate(data)]
    except InvalidFrame as exc:
        if exc.reason == "schema" and (kind := _unknown_kind(frame)) is not None:
            raise InvalidFrame("unknown_type", kind) from exc
        raise


def _item(ticker: Ticker, at: str) -> _Item:
    """``ticker`` typed in the exchange's key order (the first bad field is the one named)."""
    last = decode(_NUMBER, ticker.last, at=f"{at}last")
    ask = decode(_NUMBER, ticker.ask_px, at=f"{at}askPx")
    bid = decode(_NUMBER, ticker.bid_px, at=f"{at}bidPx")
    volume = decode(_NUMBER, ticker.vol24h, at=f"{at}vol24h")
    ts = decode(_MILLIS, ticker.ts, at=f"{at}ts")
    return _Item(ticker.inst_type, ticker.inst_id, last, ts, bid, ask, volume)


def _unknown_kind(frame: str | bytes) -> str | None:
    """An event OKX does not have, or a push on a channel other than ``tickers``."""
    envelope = _ENVELOPE.decode(frame)
    if envelope.event is not None:
        return None if envelope.event in _KNOWN_EVENTS else envelope.event
    if envelope.arg is not None and envelope.arg.channel != CHANNEL:
        return envelope.arg.channel
    return None


def _limits() -> Limits:
    """OKX's published limits (docs/exchanges.md §6), with a margin."""
    return Limits(
        # 3 connection requests/s per IP: one a second leaves room for anything else on the IP.
        connects=1,
        connects_window_s=1.0,
        # No per-second cap is published for public requests (60014 "requests too frequent"
        # exists); the binding one is 480 subscribe/unsubscribe per connection per hour:
        # subscribes_per_hour keeps a margin below it. A connection sends one subscribe request
        # for all its symbols (max_symbols fit in one MAX_REQUEST_BYTES batch); resubscribes
        # only follow a symbol that went quiet past its own threshold, each retry waiting twice
        # as long. Pings do not count towards the 480; they are paced here, once per 20 s.
        messages_per_s=1.0,
        subscribes_per_hour=400,
        # No public per-connection cap is documented (close code 4008 says there is one); 200
        # tickers pushing at most every 100 ms is <= 2,000 frames/s on one link, and fits one
        # subscribe request.
        max_symbols=200,
    )


EXCHANGE: Final = Exchange(
    name=SOURCE,
    # The documented URL. [unverified, one blog] OKX stopped accepting port 8443 on
    # 2026-10-31; if so, configure ``url = "wss://ws.okx.com/ws/v5/public"`` (port 443).
    default_url="wss://ws.okx.com:8443/ws/v5/public",
    adapter=OkxAdapter,
    native_symbol=native_symbol,
    limits=_limits(),
    quote_aliases={},  # OKX lists USDT and USDC pairs; USD is not USDT, so quotes stay strict
    # The server cuts a link with no data for 30 s; a ping every 20 s keeps a quiet link up
    # and its pong proves it alive.
    ping_interval_s=20.0,
    version="v5",
)
