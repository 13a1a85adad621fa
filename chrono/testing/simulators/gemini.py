"""A Gemini server on loopback speaking the current API, ``wss://ws.gemini.com``.

The protocol is docs/exchanges.md §5.

Serves ``{symbol}@bookTicker`` only. Requests ``{"id","method","params"}`` are answered with
``{"id","status":200[,"result"]}``; methods ``subscribe``, ``unsubscribe``, ``list_subscriptions``
(either case), ``ping`` and ``time``. A subscribe is acked, then each stream gets its current
bookTicker (the last trade again; a first trade if the market has none yet).

bookTicker frames: ``u`` is the market's increasing sequence, ``E`` the trade time in µs times
1000 exactly (so ``SentTick.time`` is exact), ``c``/``C`` the trade. Every 50th trade of a
market (by trade id, so the same trade always renders the same) carries ``"b":""``, the empty
bid a production frame carried. Markets in ``untraded`` send a book without ``c``/``C`` and
never trade.

Protocol choices where docs/exchanges.md is silent (its status/code values are illustrative): a
request that is not a JSON object with a string ``method`` gets status 400, code -1000 and id
``null``; an unknown method 400/-1001; a subscribe naming an unknown symbol or another stream
400/-1002, all-or-nothing. A repeated subscribe is accepted and re-sends the current frame.
``time`` answers ``{"serverTime": <ns>}``. With ``max_messages_per_s`` set, a client sending more
requests within one second is dropped (a rate cut, as Binance's, this protocol's model, does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import msgspec
import trio

from chrono.exchanges.base import Exchange
from chrono.exchanges.gemini import EXCHANGE, STREAM, stream_name
from chrono.testing.simulators.base import (
    Client,
    Market,
    Simulator,
    Trade,
    fixed,
    now_us,
)

EMPTY_BID_EVERY: Final = 50  # trades per market between frames with an empty-string bid
_ENCODER: Final = msgspec.json.Encoder()
_SUFFIX: Final = "@" + STREAM


class _Refused(Exception):
    """A request the exchange refuses: (status, code, msg) of the error envelope."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def response(request_id: object, result: object = None, *, with_result: bool = True) -> bytes:
    """The success envelope; ``result`` is left out when ``with_result`` is False."""
    frame: dict[str, object] = {"id": request_id, "status": 200}
    if with_result:
        frame["result"] = result
    return _ENCODER.encode(frame)


def error(request_id: object, status: int, code: int, msg: str) -> bytes:
    return _ENCODER.encode(
        {"id": request_id, "status": status, "error": {"code": code, "msg": msg}}
    )


class GeminiSimulator(Simulator):
    """Serves Gemini ``bookTicker`` streams; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    data_channel: ClassVar[str] = STREAM
    resolution_us: ClassVar[int] = 1  # E is ns; every µs time is exact in it

    def __init__(
        self,
        *,
        symbols: Sequence[str] = ("btcusd", "ethusd"),
        untraded: Sequence[str] = (),
        max_messages_per_s: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(symbols=[*symbols, *untraded], **options)
        self.untraded = frozenset(untraded)
        self.max_messages_per_s = max_messages_per_s

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The bookTicker frame, in the exchange's field order and spelling."""
        empty = trade.trade_id % EMPTY_BID_EVERY == 0
        frame = {
            "u": trade.sequence,
            "E": trade.time_us * 1000,
            "s": market.native,
            "b": "" if empty else fixed(trade.bid_cents, 2),
            "B": "" if empty else fixed(trade.size * 3 % 10**8, 8),
            "a": fixed(trade.ask_cents, 2),
            "A": fixed(trade.size * 7 % 10**8, 8),
            "c": fixed(trade.cents, 2),
            "C": fixed(trade.size, 8),
        }
        return [(STREAM, _ENCODER.encode(frame))]

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """The current bookTicker: the last trade again, a first one if none, or a bare book."""
        if channel != STREAM:
            return []
        if market.native in self.untraded:
            return [_untraded(market)]
        if market.last is None:
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
        assert market.last is not None
        return [frame for _, frame in self.render(market, market.last)]

    def _subscribers(self, native: str) -> list[Client]:
        return [] if native in self.untraded else super()._subscribers(native)

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one request; a refused one gets an error envelope and changes nothing."""
        if self._over_rate(client):
            client.drop()
            return
        request = _loads(message)
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            method = _method(request)
            self._apply(client, method, request_id, request)
        except _Refused as exc:
            client.push(error(request_id, exc.status, exc.code, exc.msg))

    def _apply(self, client: Client, method: str, request_id: object, request: Any) -> None:
        if method == "subscribe":
            self.subscribe_requests.append(request)
            natives = self._streams(request, known_only=True)
            self.ack(client, response(request_id, with_result=False))
            for native in natives:
                self.subscribe(client, STREAM, native)
        elif method == "unsubscribe":
            for native in self._streams(request, known_only=False):
                self.unsubscribe(client, STREAM, native)
            client.push(response(request_id, with_result=False))
        elif method == "list_subscriptions":
            topics = sorted(client.topics | client.muted)
            client.push(response(request_id, [stream_name(native) for _, native in topics]))
        elif method == "ping":
            client.push(response(request_id, {}))
        elif method == "time":
            client.push(response(request_id, {"serverTime": now_us() * 1000}))
        else:
            raise _Refused(400, -1001, f"Unknown method: {method}")

    def _streams(self, request: dict[str, Any], *, known_only: bool) -> list[str]:
        """The native symbols of ``params``; raises ``_Refused`` for a bad list or stream."""
        params = request.get("params")
        if not isinstance(params, list) or not params:
            raise _Refused(400, -1002, "params must be a non-empty list of stream names")
        natives = []
        for param in params:
            native = param[: -len(_SUFFIX)] if isinstance(param, str) else ""
            if not (isinstance(param, str) and param.endswith(_SUFFIX) and native):
                raise _Refused(400, -1002, f"Invalid stream: {param}")
            if known_only and native not in self.markets:
                raise _Refused(400, -1002, f"Invalid symbol: {native}")
            natives.append(native)
        return list(dict.fromkeys(natives))

    def _over_rate(self, client: Client) -> bool:
        """True once a client sends more than ``max_messages_per_s`` requests in a second."""
        limit = self.max_messages_per_s
        if limit is None:
            return False
        now = trio.current_time()
        window: float
        count: int
        window, count = client.state.get("rate", (now, 0))
        if now - window >= 1.0:
            window, count = now, 0
        client.state["rate"] = (window, count + 1)
        return count + 1 > limit


def _loads(message: str | bytes) -> Any:
    try:
        return json.loads(message)
    except ValueError:  # also bad UTF-8 in bytes
        return None


def _method(request: Any) -> str:
    """The request's method, lower-cased (``SUBSCRIBE`` and ``subscribe`` are one)."""
    method = request.get("method") if isinstance(request, dict) else None
    if not isinstance(method, str):
        raise _Refused(400, -1000, "Invalid request: expected a JSON object with a method")
    return method.lower()


def _untraded(market: Market) -> bytes:
    """A book that never traded: no ``c``/``C``."""
    frame = {
        "u": market.sequence,
        "E": now_us() * 1000,
        "s": market.native,
        "b": "99.99",
        "B": "1.00000000",
        "a": "100.01",
        "A": "2.00000000",
    }
    return _ENCODER.encode(frame)
