"""A Binance spot (or Binance.US) market-data server on loopback, speaking the real protocol.

Serves docs/exchanges.md §2 at the exchange's paths: ``/stream`` (combined: payloads wrapped as
``{"stream","data"}``, streams subscribed live), ``/stream?streams=a/b`` (subscribed at
connect) and ``/ws/<stream>[/<stream>...]`` or ``/ws`` (raw: bare payloads). Streams
``<symbol>@ticker`` (``24hrTicker`` events, 8-decimal prices, the invariants ``p=c-o``,
``P=100*p/o``, ``C=E``, ``O=C-86400000``, ``n=L-F+1``) and ``<symbol>@bookTicker``. Requests
``SUBSCRIBE``/``UNSUBSCRIBE`` (acked ``{"result":null,"id":N}``), ``LIST_SUBSCRIPTIONS`` and
``SET_PROPERTY``/``GET_PROPERTY`` ``combined``.

Server-side behaviours a collector must survive: a stream of an unknown symbol is acked and
then silent (the real lie); more than ``max_messages_per_s`` client messages in a second close
the connection with 1008 "Too many requests"; ``notice`` is the ``serverShutdown`` event;
``max_connection_age_s`` is the 24 h cut; WebSocket pings every 20 s (the base's).

Choices where docs/exchanges.md is silent: errors use the nested wire shape
``{"error":{"code","msg"},"id"}`` with the docs' codes and texts (``id`` null when the request
had none or was not JSON); a stream name that is not ``<lowercase symbol>@ticker`` or
``@bookTicker`` is refused as "Invalid request: invalid stream", and so is the whole request;
passing ``max_streams`` (1024) is refused as "Invalid request: too many streams"; bad streams in
a connect URL get the same error frames (id null) instead of a refused handshake. The message
rate counts text frames only (the library answers pings; Binance also counts pongs).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import parse_qs

import msgspec
import trio
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from chrono.exchanges.base import Exchange
from chrono.exchanges.binance import EXCHANGE, SHUTDOWN_STREAM, US_EXCHANGE
from chrono.testing.simulators.base import (
    Client,
    Market,
    SentTick,
    Simulator,
    Trade,
    fixed,
    now_us,
    scaled,
)

CHANNELS: Final = ("ticker", "bookTicker")
STREAM: Final = re.compile(r"^([a-z0-9]+)@(ticker|bookTicker)$")
METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# Quote assets, longest match first, to find a symbol's base (for its starting price only).
QUOTES: Final = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
DAY_MS: Final = 86_400_000
PLACES: Final = 8  # Binance writes every price and quantity with 8 decimals
_ENCODER: Final = msgspec.json.Encoder()
RequestId = int | str | None


class _Refused(Exception):
    """A request the exchange refuses with an error frame."""

    def __init__(self, code: int, msg: str, request_id: RequestId = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.request_id = code, msg, request_id


@dataclass(slots=True)
class _Session:
    """One connection's protocol state (``Client.state["binance"]``)."""

    combined: bool  # payloads wrapped as {"stream","data"}
    streams: dict[str, None] = field(default_factory=dict)  # subscribed, in order
    received: deque[float] = field(default_factory=deque)  # times of messages in the last 1 s


def _session(client: Client) -> _Session:
    session: _Session = client.state["binance"]
    return session


def topic_channel(channel: str, combined: bool) -> str:
    """The base's topic channel: raw clients get their own frames, without the wrapper."""
    return channel if combined else f"{channel}/raw"


def _error(code: int, msg: str, request_id: RequestId) -> bytes:
    return _ENCODER.encode({"error": {"code": code, "msg": msg}, "id": request_id})


def _answer(result: Any, request_id: RequestId) -> bytes:
    return _ENCODER.encode({"result": result, "id": request_id})


def _wrap(stream: str, payload: bytes) -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def _signed(units: int, places: int) -> str:
    return f"-{fixed(-units, places)}" if units < 0 else fixed(units, places)


def _percent(change_cents: int, open_cents: int) -> str:
    """``P``: the change in percent of the open, 3 decimals as Binance writes it."""
    return format((Decimal(100 * change_cents) / open_cents).quantize(Decimal("0.001")), "f")


class _Request(NamedTuple):
    body: dict[str, Any]
    method: str
    params: Any
    id: RequestId


def _parse_request(message: str | bytes) -> _Request:
    """A request, checked as the exchange does; raises ``_Refused`` with its texts."""
    try:
        request = json.loads(message)
    except json.JSONDecodeError as exc:
        where = f"at line {exc.lineno} column {exc.colno}"
        raise _Refused(3, f"Invalid JSON: {exc.msg.lower()} {where}") from None
    except ValueError:  # bytes that are not UTF-8
        raise _Refused(3, "Invalid JSON: expected value at line 1 column 1") from None
    if not isinstance(request, dict):
        raise _Refused(2, "Invalid request: expected an object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        raise _Refused(2, "Invalid request: request ID must be an integer or a string")
    method = request.get("method")
    if method is None:
        raise _Refused(2, "Invalid request: missing field `method`", request_id)
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        raise _Refused(
            2, f"Invalid request: unknown variant `{method}`, expected one of {expected}"
        )
    return _Request(request, method, request.get("params", []), request_id)


def _valid_id(request_id: object) -> bool:
    """A signed 64-bit integer, an alphanumeric string of at most 36 characters, or null."""
    if request_id is None:
        return True
    if isinstance(request_id, bool):
        return False
    if isinstance(request_id, int):
        return -(2**63) <= request_id < 2**63
    return isinstance(request_id, str) and len(request_id) <= 36 and request_id.isalnum()


def _streams(params: Any, request_id: RequestId) -> list[str]:
    """Valid stream names, or ``_Refused`` for the whole request."""
    if not isinstance(params, list) or not params:
        raise _Refused(2, "Invalid request: invalid stream", request_id)
    for stream in params:
        if not isinstance(stream, str) or STREAM.match(stream) is None:
            raise _Refused(2, "Invalid request: invalid stream", request_id)
    return list(dict.fromkeys(params))


class BinanceSimulator(Simulator):
    """Serves Binance's combined and raw streams; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    resolution_us: ClassVar[int] = 1000  # E is in milliseconds
    data_channel: ClassVar[str] = "ticker"
    default_symbols: ClassVar[tuple[str, ...]] = ("BTCUSDT", "ETHUSDT")

    def __init__(
        self,
        *,
        symbols: Sequence[str] | None = None,
        max_messages_per_s: int = 5,
        max_streams: int = 1024,
        **options: Any,
    ) -> None:
        super().__init__(symbols=self.default_symbols if symbols is None else symbols, **options)
        self.max_messages_per_s = max_messages_per_s
        self.max_streams = max_streams
        self._first_trade_ids: dict[str, int] = {}

    def base_asset(self, native: str) -> str:
        for quote in QUOTES:
            if native.endswith(quote) and len(native) > len(quote):
                return native[: -len(quote)]
        return native[:3]

    # --- frames ---------------------------------------------------------------------------

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """Both streams of a trade, each wrapped (combined clients) and bare (raw clients)."""
        name = market.native.lower()
        frames = []
        for channel, payload in (
            ("ticker", self._ticker(market, trade)),
            ("bookTicker", _book_ticker(market, trade)),
        ):
            frames.append((channel, _wrap(f"{name}@{channel}", payload)))
            frames.append((topic_channel(channel, False), payload))
        return frames

    def _ticker(self, market: Market, trade: Trade) -> bytes:
        """A ``24hrTicker`` over everything since the market opened, in Binance's field order."""
        event_ms = trade.time_us // 1000
        first = self._first_trade_ids.setdefault(market.native, trade.trade_id)
        change = trade.cents - trade.open_cents
        average = (trade.high_cents + trade.low_cents) // 2
        frame = {
            "e": "24hrTicker",
            "E": event_ms,
            "s": market.native,
            "p": _signed(change * 10 ** (PLACES - 2), PLACES),
            "P": _percent(change, trade.open_cents),
            "w": scaled(average, PLACES),
            "x": scaled(trade.open_cents, PLACES),
            "c": scaled(trade.cents, PLACES),
            "Q": fixed(trade.size, PLACES),
            "b": scaled(trade.bid_cents, PLACES),
            "B": fixed(1 + trade.size * 3 % 10**10, PLACES),
            "a": scaled(trade.ask_cents, PLACES),
            "A": fixed(1 + trade.size * 7 % 10**10, PLACES),
            "o": scaled(trade.open_cents, PLACES),
            "h": scaled(trade.high_cents, PLACES),
            "l": scaled(trade.low_cents, PLACES),
            "v": fixed(trade.volume, PLACES),
            "q": fixed(trade.volume * average // 100, PLACES),
            "O": event_ms - DAY_MS,
            "C": event_ms,
            "F": first,
            "L": trade.trade_id,
            "n": trade.trade_id - first + 1,
        }
        return _ENCODER.encode(frame)

    def sent_tick(self, market: Market, trade: Trade) -> SentTick:
        """The ticker's ``c`` (8 decimals) at ``E`` (ms)."""
        return SentTick(market.native, scaled(trade.cents, PLACES), trade.time, trade.trade_id)

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """A new ticker subscription gets the current state; bookTicker waits for a change."""
        if market.last is None or channel.partition("/")[0] != "ticker":
            return []
        return [frame for ch, frame in self.render(market, market.last) if ch == channel]

    def notice(self) -> bytes:
        """The maintenance notice, as a combined stream sends it."""
        event = {"e": "serverShutdown", "E": now_us() // 1000}
        return _ENCODER.encode({"stream": SHUTDOWN_STREAM, "data": event})

    def _subscribers(self, native: str) -> list[Client]:
        """Clients of either stream, wrapped or bare: each needs the market to trade."""
        topics = {
            (topic_channel(ch, combined), native) for ch in CHANNELS for combined in (True, False)
        }
        return [client for client in self.clients if not topics.isdisjoint(client.topics)]

    # --- requests -------------------------------------------------------------------------

    def on_connect(self, client: Client) -> None:
        """The URL picks combined or raw and may name streams: subscribed at once, no ack."""
        path, _, query = client.path.partition("?")
        combined = not (path == "/ws" or path.startswith("/ws/"))
        client.state["binance"] = _Session(combined)
        names = parse_qs(query).get("streams", [""])[0] if combined else path[len("/ws/") :]
        for name in filter(None, names.split("/")):
            try:
                self._add(client, _streams([name], None))
            except _Refused as exc:
                client.push(_error(exc.code, exc.msg, None))

    async def _read_requests(self, client: Client) -> None:
        """Apply requests; more than ``max_messages_per_s`` in any second closes with 1008.

        Replaces the base's reader: Binance has no subscribe timeout.
        """
        received = _session(client).received
        try:
            while True:
                message = await client.ws.recv()
                now = trio.current_time()
                received.append(now)
                while now - received[0] >= 1.0:
                    received.popleft()
                if len(received) > self.max_messages_per_s:
                    await client.ws.aclose(CloseCode.POLICY_VIOLATION, "Too many requests")
                    return
                self.handle(client, message)
        except ConnectionClosed:
            return

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one request; a refused one gets an error frame and changes nothing."""
        try:
            request = _parse_request(message)
            if request.method == "SUBSCRIBE":
                self.subscribe_requests.append(request.body)
                self._subscribe(client, _streams(request.params, request.id), request.id)
            elif request.method == "UNSUBSCRIBE":
                self._unsubscribe(client, _streams(request.params, request.id), request.id)
            elif request.method == "LIST_SUBSCRIPTIONS":
                client.push(_answer(list(_session(client).streams), request.id))
            else:
                self._property(client, request.method, request.params, request.id)
        except _Refused as exc:
            client.push(_error(exc.code, exc.msg, exc.request_id))

    def _subscribe(self, client: Client, streams: list[str], request_id: RequestId) -> None:
        """Ack, then subscribe: an unknown symbol is acked too, and never sends anything."""
        session = _session(client)
        new = [stream for stream in streams if stream not in session.streams]
        if len(session.streams) + len(new) > self.max_streams:
            raise _Refused(2, "Invalid request: too many streams", request_id)
        self.ack(client, _answer(None, request_id))
        self._add(client, streams)

    def _add(self, client: Client, streams: list[str]) -> None:
        session = _session(client)
        for stream in streams:
            if len(session.streams) >= self.max_streams and stream not in session.streams:
                raise _Refused(2, "Invalid request: too many streams")
            session.streams[stream] = None
            native, channel = _split(stream)
            if native in self.markets:
                self.subscribe(client, topic_channel(channel, session.combined), native)

    def _unsubscribe(self, client: Client, streams: list[str], request_id: RequestId) -> None:
        session = _session(client)
        for stream in streams:
            session.streams.pop(stream, None)
            native, channel = _split(stream)
            self.unsubscribe(client, topic_channel(channel, session.combined), native)
        client.push(_answer(None, request_id))  # wait_subscribed counts subscribe acks only

    def _property(self, client: Client, method: str, params: Any, request_id: RequestId) -> None:
        """``GET_PROPERTY ["combined"]`` and ``SET_PROPERTY ["combined", true|false]``."""
        if not isinstance(params, list) or not params or params[0] != "combined":
            raise _Refused(0, "Unknown property", request_id)
        session = _session(client)
        if method == "GET_PROPERTY":
            client.push(_answer(session.combined, request_id))
            return
        if len(params) != 2 or not isinstance(params[1], bool):
            raise _Refused(1, "Invalid value type: expected Boolean", request_id)
        _retag(client, session, params[1])
        client.push(_answer(None, request_id))


def _split(stream: str) -> tuple[str, str]:
    """``btcusdt@ticker`` -> (``BTCUSDT``, ``ticker``)."""
    name, _, channel = stream.partition("@")
    return name.upper(), channel


def _retag(client: Client, session: _Session, combined: bool) -> None:
    """Move the client's topics to the wrapped or the bare frames."""
    for topics in (client.topics, client.muted):
        for channel in CHANNELS:
            old, new = topic_channel(channel, session.combined), topic_channel(channel, combined)
            for topic in [t for t in topics if t[0] == old]:
                topics.discard(topic)
                topics.add((new, topic[1]))
    session.combined = combined


def _book_ticker(market: Market, trade: Trade) -> bytes:
    """Best bid/offer; ``u`` is the book's update id, taken from the market's sequence."""
    frame = {
        "u": trade.sequence,
        "s": market.native,
        "b": scaled(trade.bid_cents, PLACES),
        "B": fixed(1 + trade.size * 3 % 10**10, PLACES),
        "a": scaled(trade.ask_cents, PLACES),
        "A": fixed(1 + trade.size * 7 % 10**10, PLACES),
    }
    return _ENCODER.encode(frame)


class BinanceUSSimulator(BinanceSimulator):
    """Binance.US: the same protocol, with real USD quotes."""

    exchange: ClassVar[Exchange] = US_EXCHANGE
    default_symbols: ClassVar[tuple[str, ...]] = ("BTCUSD", "ETHUSD")
