"""A Kraken spot market-data server on loopback: v1 and v2 on one port (docs/exchanges.md §3).

A client connecting to ``/v2`` speaks v2, one connecting to ``/`` speaks v1; any other path is
dropped. Both see the same markets (keyed by the v2 spelling, ``BTC/USD``), so one trade goes
to v1 and v2 subscribers alike: v2 as ``{"channel":"ticker",...}`` with JSON-number prices
written without trailing zeros (``67234.5``), v1 as ``[channelID, {...}, "ticker", "XBT/USD"]``
with 5-decimal strings. Topics are ``("ticker", pair)`` for v2 clients and
``("v1:ticker", pair)`` for v1 clients. On connect a client gets the status frame of its
version; every subscription is acked per pair and answered with the pair's current ticker
(``snapshot``); clients holding a subscription get a heartbeat every ``heartbeat_interval_s``.

``SentTick`` is per market, not per client: its ``price`` is the v2 text and its ``time`` the
v2 ``timestamp``. v1 frames carry neither spelling nor time, so v1 tests compare prices as
``Decimal`` and leave time out (v1 feeds are stamped on receipt).

Protocol choices where docs/exchanges.md is silent: a duplicate subscribe is refused with
``"Already subscribed"`` (v2) / ``"Subscription already exists"`` (v1); an unsubscribe of a pair
not held with ``"Subscription Not Found"``; v1 accepts only v1 spellings (``XBT/USD``), v2 only
v2 spellings; a request that is not a known method/event gets ``"Malformed request"`` (v2
``{"error":...,"method":"error"}``, v1 ``{"errorMessage":...,"event":"error"}``). With
``max_messages_per_s``, a client's requests beyond that many in one second are dropped and
answered with ``{"Error":"Exceeded msg rate"}`` (v1) or a ``success:false`` reply (v2). A client
without a subscription after ``subscribe_timeout_s`` (Kraken: about a minute, unverified) is
closed with 1008. Kraken has no reconnect notice.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Final

import msgspec
import trio

from chrono.exchanges.base import Exchange
from chrono.exchanges.kraken import EXCHANGE
from chrono.exchanges.kraken_common import canonical_symbol, v1_native_symbol
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

V2_TICKER: Final = "ticker"
V1_TICKER: Final = "v1:ticker"
ALREADY_V2: Final = "Already subscribed"
ALREADY_V1: Final = "Subscription already exists"
NOT_FOUND: Final = "Subscription Not Found"
MALFORMED: Final = "Malformed request"
RATE: Final = "Exceeded msg rate"
V2_HEARTBEAT: Final = b'{"channel":"heartbeat"}'
V1_HEARTBEAT: Final = b'{"event":"heartbeat"}'
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")  # Decimal -> its exact number
_CONNECTION_ID: Final = 13834774380200032777  # connection ids exceed 2**53 (and 2**63)
_VOLUME_BEFORE: Final = 1234 * 10**8  # yesterday's part of the rolling 24 h volume (1e-8)


def number(units: int, places: int) -> Decimal:
    """``units`` of 10**-places as Kraken v2 writes a number: no trailing zeros, ``740.0``."""
    text = fixed(abs(units), places).rstrip("0")
    return Decimal(("-" if units < 0 else "") + text + ("0" if text.endswith(".") else ""))


def stamp(epoch_us: int) -> str:
    """RFC 3339 UTC with 6 fractional digits and ``Z``, as v2 writes ``timestamp``."""
    second, micro = divmod(epoch_us, 1_000_000)
    return f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}.{micro:06d}Z"


def _version(path: str) -> str | None:
    """``/v2`` -> v2, ``/`` -> v1, anything else None."""
    return {"": "v1", "/v2": "v2"}.get(path.partition("?")[0].rstrip("/"))


def _json_object(message: str | bytes) -> dict[str, Any]:
    """The request as a dict; ``{}`` when it is not a JSON object."""
    try:
        request = json.loads(message)
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}


def _pairs(request: dict[str, Any], key: str) -> list[str] | None:
    pairs = request.get(key)
    if isinstance(pairs, list) and pairs and all(isinstance(p, str) for p in pairs):
        return pairs
    return None


class KrakenSimulator(Simulator):
    """Serves Kraken's v1 and v2 ``ticker`` channels; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    data_channel: ClassVar[str] = V2_TICKER
    default_subscribe_timeout_s: ClassVar[float | None] = 60.0

    def __init__(
        self,
        *,
        symbols: Sequence[str] = ("BTC/USD", "ETH/USD"),
        max_messages_per_s: int | None = None,
        **options: Any,
    ) -> None:
        """``symbols`` in either spelling (``XBT/USD`` is ``BTC/USD``)."""
        super().__init__(symbols=[canonical_symbol(s) for s in symbols], **options)
        self.max_messages_per_s = max_messages_per_s
        self._channel_ids = {native: 340 + 128 * i for i, native in enumerate(self.markets)}

    def base_asset(self, native: str) -> str:
        return native.partition("/")[0]

    def mute(self, native: str, count: int = 1) -> None:
        """As the base's, for a pair in either spelling."""
        super().mute(canonical_symbol(native), count)

    # --- frames -------------------------------------------------------------------------

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The v2 frame for v2 subscribers and the v1 frame for v1 subscribers."""
        return [
            (V2_TICKER, self._v2_ticker(market, trade, "update")),
            (V1_TICKER, self._v1_ticker(market, trade)),
        ]

    def sent_tick(self, market: Market, trade: Trade) -> SentTick:
        """The v2 spelling: the price as its JSON number's text, the µs ``timestamp``."""
        return SentTick(market.native, str(number(trade.cents, 2)), trade.time, trade.trade_id)

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """The pair's current ticker; a pair with no trade yet trades once first."""
        trade = market.last
        if trade is None:
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
        if channel == V1_TICKER:
            return [self._v1_ticker(market, trade)]
        return [self._v2_ticker(market, trade, "snapshot")]

    def _v2_ticker(self, market: Market, trade: Trade, kind: str) -> bytes:
        change = trade.cents - trade.open_cents
        data = {
            "symbol": market.native,
            "bid": number(trade.bid_cents, 2),
            "bid_qty": number(trade.size * 3 % 10**8, 8),
            "ask": number(trade.ask_cents, 2),
            "ask_qty": number(trade.size * 7 % 10**8, 8),
            "last": number(trade.cents, 2),
            "volume": number(trade.volume, 8),
            "vwap": number((trade.high_cents + trade.low_cents) // 2, 2),
            "low": number(trade.low_cents, 2),
            "high": number(trade.high_cents, 2),
            "change": number(change, 2),
            "change_pct": number(round(change * 10_000 / trade.open_cents), 2),
            "timestamp": stamp(trade.time_us),
        }
        return _ENCODER.encode({"channel": "ticker", "type": kind, "data": [data]})

    def _v1_ticker(self, market: Market, trade: Trade) -> bytes:
        def level(cents: int, lots: int) -> list[Any]:
            return [scaled(cents, 5), lots // 10**8, fixed(lots, 8)]

        def both(cents: int) -> list[str]:
            return [scaled(cents, 5)] * 2

        payload = {
            "a": level(trade.ask_cents, trade.size * 7),
            "b": level(trade.bid_cents, trade.size * 3),
            "c": [scaled(trade.cents, 5), fixed(trade.size, 8)],
            "v": [fixed(trade.volume, 8), fixed(trade.volume + _VOLUME_BEFORE, 8)],
            "p": both((trade.high_cents + trade.low_cents) // 2),
            "t": [trade.trade_id % 10**5, trade.trade_id % 10**5 + 1000],
            "l": both(trade.low_cents),
            "h": both(trade.high_cents),
            "o": both(trade.open_cents),
        }
        frame = [
            self._channel_ids[market.native],
            payload,
            "ticker",
            v1_native_symbol(market.native),
        ]
        return _ENCODER.encode(frame)

    def heartbeats(self, client: Client) -> list[bytes]:
        """Only to clients holding a subscription (muted ones too)."""
        if not (client.topics or client.muted):
            return []
        return [V1_HEARTBEAT if client.state.get("version") == "v1" else V2_HEARTBEAT]

    def _subscribers(self, native: str) -> list[Client]:
        topics = ((V2_TICKER, native), (V1_TICKER, native))
        return [client for client in self.clients if not client.topics.isdisjoint(topics)]

    # --- requests -----------------------------------------------------------------------

    def on_connect(self, client: Client) -> None:
        """The version's status frame; a client on an unknown path is dropped."""
        version = _version(client.path)
        if version is None:
            client.drop()
            return
        client.state["version"] = version
        connection_id = _CONNECTION_ID + self.connections_total
        if version == "v1":
            status = {"connectionID": connection_id, "event": "systemStatus"}
            client.push(_ENCODER.encode(status | {"status": "online", "version": "1.9.5"}))
            return
        data = {"api_version": "v2", "connection_id": connection_id, "system": "online"}
        status = {"channel": "status", "type": "update", "data": [data | {"version": "2.0.10"}]}
        client.push(_ENCODER.encode(status))

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one client message in the client's version; over the rate: refused."""
        request = _json_object(message)
        v1 = client.state.get("version") == "v1"
        if not self._within_rate(client):
            client.push(_ENCODER.encode({"Error": RATE}) if v1 else _v2_refusal(request, RATE))
        elif v1:
            self._handle_v1(client, request)
        else:
            self._handle_v2(client, request)

    def _within_rate(self, client: Client) -> bool:
        """At most ``max_messages_per_s`` requests in any one second."""
        if self.max_messages_per_s is None:
            return True
        now = trio.current_time()
        recent: deque[float] = client.state.setdefault("recent", deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= self.max_messages_per_s:
            return False
        recent.append(now)
        return True

    def _handle_v2(self, client: Client, request: dict[str, Any]) -> None:
        method = request.get("method")
        if method == "ping":
            pong = {"method": "pong", **_req_id(request, "req_id"), **_times()}
            client.push(_ENCODER.encode(pong))
            return
        params = request.get("params")
        symbols = _pairs(params, "symbol") if isinstance(params, dict) else None
        if method not in ("subscribe", "unsubscribe") or symbols is None:
            client.push(_v2_refusal(request, MALFORMED, method="error"))
            return
        if method == "subscribe":
            self.subscribe_requests.append(request)
        channel = params.get("channel") if isinstance(params, dict) else None
        if channel != "ticker":
            client.push(_v2_refusal(request, f"Channel {channel} not supported"))
            return
        for symbol in symbols:
            self._v2_symbol(client, request, method, symbol)

    def _v2_symbol(self, client: Client, request: dict[str, Any], method: str, symbol: str) -> None:
        """One pair of a v2 (un)subscribe: refused, or applied and replied to."""
        native = symbol if symbol in self.markets else None
        unknown = f"Currency pair not supported {symbol}"
        error = self._refusal(client, V2_TICKER, method, native, unknown, ALREADY_V2)
        if error is not None or native is None:
            client.push(_v2_refusal(request, error or unknown, symbol=symbol))
            return
        result: dict[str, Any] = {"channel": "ticker", "symbol": symbol}
        if method == "subscribe":
            result["snapshot"] = True
        reply = {"method": method, "result": result, "success": True, **_times()}
        self._apply(client, V2_TICKER, method, native, reply | _req_id(request, "req_id"))

    def _handle_v1(self, client: Client, request: dict[str, Any]) -> None:
        event = request.get("event")
        if event == "ping":
            client.push(_ENCODER.encode({"event": "pong", **_req_id(request, "reqid")}))
            return
        pairs = _pairs(request, "pair")
        if event not in ("subscribe", "unsubscribe") or pairs is None:
            client.push(_ENCODER.encode({"errorMessage": MALFORMED, "event": "error"}))
            return
        if event == "subscribe":
            self.subscribe_requests.append(request)
        subscription = request.get("subscription")
        name = subscription.get("name") if isinstance(subscription, dict) else None
        for pair in pairs:
            self._v1_pair(client, request, event, pair, name)

    def _v1_pair(
        self, client: Client, request: dict[str, Any], event: str, pair: str, name: object
    ) -> None:
        """One pair of a v1 (un)subscribe: refused, or applied; a status frame either way."""
        native = self._v1_market(pair)
        status: dict[str, Any] = {"event": "subscriptionStatus", "pair": pair}
        status |= _req_id(request, "reqid")
        if name != "ticker":
            error: str | None = "Subscription name invalid"
        elif "/" not in pair:
            error = f"Currency pair not in ISO 4217-A3 format {pair}"
        else:
            unknown = f"Currency pair not supported {pair}"
            error = self._refusal(client, V1_TICKER, event, native, unknown, ALREADY_V1)
        if error is not None or native is None:
            status = {"errorMessage": error} | status
            status |= {"status": "error", "subscription": {"name": name}}
            client.push(_ENCODER.encode(status))
            return
        status = {"channelID": self._channel_ids[native], "channelName": "ticker"} | status
        status |= {"status": f"{event}d", "subscription": {"name": "ticker"}}
        self._apply(client, V1_TICKER, event, native, status)

    @staticmethod
    def _refusal(
        client: Client, channel: str, method: str, native: str | None, unknown: str, already: str
    ) -> str | None:
        """Why the exchange refuses this pair's (un)subscribe, or None."""
        if native is None:
            return unknown
        held = (channel, native) in client.topics or (channel, native) in client.muted
        if method == "subscribe" and held:
            return already
        if method == "unsubscribe" and not held:
            return NOT_FOUND
        return None

    def _apply(
        self, client: Client, channel: str, method: str, native: str, reply: dict[str, Any]
    ) -> None:
        """Unsubscribe and reply, or ack (counted by ``wait_subscribed``) and subscribe."""
        if method == "unsubscribe":
            self.unsubscribe(client, channel, native)
            client.push(_ENCODER.encode(reply))
        else:
            self.ack(client, _ENCODER.encode(reply))
            self.subscribe(client, channel, native)

    def _v1_market(self, pair: str) -> str | None:
        """The market a v1 pair names; only the v1 spelling counts (``XBT/USD``)."""
        if "/" not in pair:
            return None
        native = canonical_symbol(pair)
        return native if native in self.markets and v1_native_symbol(native) == pair else None


def _req_id(request: dict[str, Any], key: str) -> dict[str, Any]:
    """The request's id echoed back under ``key``, if it sent one."""
    return {key: request[key]} if key in request else {}


def _times() -> dict[str, str]:
    now = stamp(now_us())
    return {"time_in": now, "time_out": now}


def _v2_refusal(
    request: dict[str, Any], error: str, *, method: str | None = None, symbol: str | None = None
) -> bytes:
    """A v2 ``success:false`` reply to ``request`` (its method unless ``method`` is given)."""
    requested = request.get("method")
    if method is None:
        method = requested if requested in ("subscribe", "unsubscribe") else "error"
    reply: dict[str, Any] = {"error": error, "method": method, "success": False}
    if symbol is not None:
        reply["symbol"] = symbol
    return _ENCODER.encode(reply | _times() | _req_id(request, "req_id"))
