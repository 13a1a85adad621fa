"""A Coinbase Exchange market-data server on loopback, speaking the real protocol.

The protocol is docs/exchanges.md §1.

Channels ``ticker`` and ``heartbeat``; every (un)subscribe is acked with the cumulative
``subscriptions`` set and a subscribe is answered with each product's latest ticker.

Protocol choices where docs/exchanges.md is silent: a client that sends no valid subscribe within
``subscribe_timeout_s`` is closed with 1008 "subscribe timeout"; a request that is not a JSON
subscribe/unsubscribe gets ``{"type":"error","message":"Malformed message",...}``; an unknown
channel is refused with ``"<name> is not a valid channel"``. Products listed in ``untraded``
send the zeros (no ``time``) that a product with no trades sends, and never trade.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar, Final

import msgspec

from chrono.exchanges.base import Exchange
from chrono.exchanges.coinbase import EXCHANGE
from chrono.testing.simulators.base import (
    Client,
    Market,
    Simulator,
    Trade,
    fixed,
    now_us,
)

CHANNELS: Final = ("ticker", "heartbeat")
_PLAIN_PRODUCT: Final = re.compile(r"[A-Za-z0-9-]+").fullmatch
_ENCODER: Final = msgspec.json.Encoder()


@lru_cache(maxsize=8)
def _second_prefix(second: int) -> str:
    return f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}."


def stamp(epoch_us: int) -> str:
    """ISO 8601 UTC with 6 fractional digits and ``Z``, as the exchange writes ``time``."""
    second, micro = divmod(epoch_us, 1_000_000)
    return f"{_second_prefix(second)}{micro:06d}Z"


class _Rejected(Exception):
    """A request the exchange refuses; the message is the error frame's ``reason``."""


def _error(message: str, reason: str) -> bytes:
    return _ENCODER.encode({"type": "error", "message": message, "reason": reason})


def _channel_spec(channel: object, default: object) -> tuple[str, list[Any]]:
    """``"ticker"`` or ``{"name": "ticker", "product_ids": [...]}`` -> (name, product ids)."""
    if isinstance(channel, dict):
        name, ids = channel.get("name"), channel.get("product_ids", default)
    else:
        name, ids = channel, default
    if not isinstance(name, str) or name not in CHANNELS:
        raise _Rejected(f"{name} is not a valid channel")
    if not isinstance(ids, list):
        raise _Rejected("Invalid product ID provided")
    return name, ids


class CoinbaseSimulator(Simulator):
    """Serves the Coinbase ``ticker`` and ``heartbeat`` channels; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    default_subscribe_timeout_s: ClassVar[float | None] = 5.0

    def __init__(
        self,
        *,
        symbols: Sequence[str] = ("BTC-USD", "ETH-USD"),
        untraded: Sequence[str] = (),
        **options: Any,
    ) -> None:
        super().__init__(symbols=[*symbols, *untraded], **options)
        self.untraded = frozenset(untraded)

    def base_asset(self, native: str) -> str:
        return native.partition("-")[0]

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The ticker frame, in the exchange's field order and spelling.

        Written straight into one f-string, not a dict encoded (a tenth less; the benchmarks'
        steady 50,000 frames/s leans on the simulator's speed): every value is digits or the
        product id, which ``_PLAIN_PRODUCT`` keeps to characters JSON writes as they are.
        """
        if not _PLAIN_PRODUCT(native := market.native):
            raise ValueError(f"product id {native!r} would need JSON escaping")
        frame = (
            f'{{"type":"ticker","sequence":{trade.sequence},"product_id":"{native}",'
            f'"price":"{fixed(trade.cents, 2)}","open_24h":"{fixed(trade.open_cents, 2)}",'
            f'"volume_24h":"{fixed(trade.volume, 8)}","low_24h":"{fixed(trade.low_cents, 2)}",'
            f'"high_24h":"{fixed(trade.high_cents, 2)}",'
            f'"volume_30d":"{fixed(trade.volume + 30 * 10**12, 8)}",'
            f'"best_bid":"{fixed(trade.bid_cents, 2)}",'
            f'"best_bid_size":"{fixed(trade.size * 3 % 10**8, 8)}",'
            f'"best_ask":"{fixed(trade.ask_cents, 2)}",'
            f'"best_ask_size":"{fixed(trade.size * 7 % 10**8, 8)}",'
            f'"side":"{"buy" if trade.buy else "sell"}","time":"{stamp(trade.time_us)}",'
            f'"trade_id":{trade.trade_id},"last_size":"{fixed(trade.size, 8)}"}}'
        )
        return [("ticker", frame.encode())]

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """The latest state: the last trade again, a first one if none yet, or the zeros."""
        if channel != "ticker":
            return []
        if market.native in self.untraded:
            return [_untraded(market)]
        if market.last is None:
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
        assert market.last is not None
        return [self.render(market, market.last)[0][1]]

    def _subscribers(self, native: str) -> list[Client]:
        return [] if native in self.untraded else super()._subscribers(native)

    def heartbeats(self, client: Client) -> list[bytes]:
        """One per product on the client's heartbeat channel (docs/exchanges.md)."""
        return [
            _heartbeat(market)
            for market in self.markets.values()
            if ("heartbeat", market.native) in client.topics
        ]

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one client message; a refused one gets an error frame and changes nothing."""
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        kind = request.get("type") if isinstance(request, dict) else None
        try:
            if kind == "subscribe":
                self.subscribe_requests.append(request)
                self._subscribe(client, request)
            elif kind == "unsubscribe":
                self._unsubscribe(client, request)
            else:
                client.push(_error("Malformed message", "expected a subscribe or unsubscribe"))
        except _Rejected as exc:
            client.push(_error(f"Failed to {kind}", str(exc)))

    def _requested(self, request: dict[str, Any], *, subscribing: bool) -> dict[str, list[str]]:
        """Channel -> product ids named by ``request``; raises ``_Rejected`` like the exchange."""
        channels = request.get("channels")
        if not isinstance(channels, list) or not channels:
            raise _Rejected("No channels provided")
        wanted: dict[str, list[str]] = {}
        for channel in channels:
            name, ids = _channel_spec(channel, request.get("product_ids", []))
            if subscribing and not ids:
                raise _Rejected(f"You need to specify at least one product ID for channel {name}")
            for pid in ids:
                if not isinstance(pid, str) or pid not in self.markets:
                    raise _Rejected(f"{pid} is not a valid product")
            wanted.setdefault(name, []).extend(ids)
        return wanted

    def _subscribe(self, client: Client, request: dict[str, Any]) -> None:
        """Ack the cumulative set, then one ticker per requested product with its last trade."""
        wanted = self._requested(request, subscribing=True)
        for name, ids in wanted.items():
            for pid in ids:
                client.topics.add((name, pid))
        client.subscribed = True
        self.ack(client, self._ack(client))
        for pid in dict.fromkeys(wanted.get("ticker", [])):
            self.subscribe(client, "ticker", pid)

    def _unsubscribe(self, client: Client, request: dict[str, Any]) -> None:
        """A channel named without products leaves all of that channel's products."""
        for name, ids in self._requested(request, subscribing=False).items():
            for pid in ids or list(self.markets):
                self.unsubscribe(client, name, pid)
        client.push(self._ack(client))  # wait_subscribed counts subscribe acks only

    def _ack(self, client: Client) -> bytes:
        topics = client.topics | client.muted
        channels = [
            {"name": name, "product_ids": sorted(pid for ch, pid in topics if ch == name)}
            for name in CHANNELS
            if any(ch == name for ch, _ in topics)
        ]
        return _ENCODER.encode({"type": "subscriptions", "channels": channels})


def _untraded(market: Market) -> bytes:
    """The zeros, without ``time``/``trade_id``, that a product with no trades sends."""
    zeros = dict.fromkeys(("price", "open_24h", "volume_24h", "low_24h", "high_24h"), "0")
    frame = {"type": "ticker", "sequence": market.sequence, "product_id": market.native, **zeros}
    frame |= {"volume_30d": "0", "best_bid": "0.00000", "best_ask": "0.00000"}
    return _ENCODER.encode(frame)


def _heartbeat(market: Market) -> bytes:
    last_trade_id = market.trade_id if market.last else 0
    beat = {"type": "heartbeat", "sequence": market.sequence, "last_trade_id": last_trade_id}
    return _ENCODER.encode(beat | {"product_id": market.native, "time": stamp(now_us())})
