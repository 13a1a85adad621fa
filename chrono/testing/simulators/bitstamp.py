"""A Bitstamp market-data server on loopback, speaking the real protocol (docs/exchanges.md §4).

Channels ``live_trades_<pair>`` and ``order_book_<pair>``, one per ``bts:subscribe`` message,
each acked with ``bts:subscription_succeeded``. Every trade sends the pair's book (top 5
levels, best bid/ask around the trade) before the trade itself, so a client holding both
channels knows the new top of book when the trade arrives. Topics are ``(channel, pair)``,
e.g. ``("live_trades", "btcusd")``.

Snapshots: a ``live_trades`` subscription gets nothing until the next trade (as on Bitstamp);
an ``order_book`` subscription gets the current book at once, once the pair has traded.

Protocol choices where docs/exchanges.md is silent: an unknown channel or pair is refused with
``{"event":"bts:error","channel":"<channel>","data":{"code":null,
"message":"Bad subscription string."}}`` (the wording is ours; the live exchange has been seen
to ack unknown pairs and then send nothing, which ``mute`` reproduces); anything that is not a
known request gets the real ``"Incorrect JSON format."`` error. Bitstamp sends no heartbeats of
its own and has no subscribe timeout; ``notice`` is ``bts:request_reconnect``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import msgspec

from chrono.exchanges.base import Exchange
from chrono.exchanges.bitstamp import BOOK, EXCHANGE, TRADES, split_channel
from chrono.testing.simulators.base import Client, Market, Simulator, Trade, fixed

CHANNELS: Final = (TRADES, BOOK)
BOOK_LEVELS: Final = 5
_ENCODER: Final = msgspec.json.Encoder()
BAD_JSON: Final = (
    b'{"event":"bts:error","channel":"","data":{"code":null,"message":"Incorrect JSON format."}}'
)
BAD_SUBSCRIPTION: Final = "Bad subscription string."
HEARTBEAT_REPLY: Final = b'{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}'
RECONNECT: Final = b'{"event":"bts:request_reconnect","channel":"","data":{}}'


def _event(event: str, channel: str, data: dict[str, Any]) -> bytes:
    return _ENCODER.encode({"event": event, "channel": channel, "data": data})


def _error(channel: str, message: str) -> bytes:
    return _event("bts:error", channel, {"code": None, "message": message})


class BitstampSimulator(Simulator):
    """Serves Bitstamp's ``live_trades`` and ``order_book`` channels; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    data_channel: ClassVar[str] = TRADES

    def __init__(self, *, symbols: Sequence[str] = ("btcusd", "ethusd"), **options: Any) -> None:
        super().__init__(symbols=symbols, **options)

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The book, then the trade, in the exchange's field order and spelling."""
        return [(BOOK, self._book(market, trade)), (TRADES, self._trade(market, trade))]

    def _trade(self, market: Market, trade: Trade) -> bytes:
        price = fixed(trade.cents, 2)
        amount = fixed(trade.size, 8)
        second = trade.time_us // 1_000_000
        data = {
            "id": trade.trade_id,
            "timestamp": str(second),
            "amount": float(amount),
            "amount_str": amount,
            "price": float(price),
            "price_str": price,
            "type": 0 if trade.buy else 1,
            "microtimestamp": str(trade.time_us),
            "buy_order_id": trade.sequence * 2 + 1,
            "sell_order_id": trade.sequence * 2,
        }
        frame = {"data": data, "channel": f"{TRADES}_{market.native}", "event": "trade"}
        return _ENCODER.encode(frame)

    def _book(self, market: Market, trade: Trade) -> bytes:
        """Top ``BOOK_LEVELS`` per side, one cent apart, best first."""
        size = trade.size
        bids = [
            [fixed(max(1, trade.bid_cents - level), 2), fixed(1 + size * (level + 3) % 10**9, 8)]
            for level in range(BOOK_LEVELS)
        ]
        asks = [
            [fixed(trade.ask_cents + level, 2), fixed(1 + size * (level + 7) % 10**9, 8)]
            for level in range(BOOK_LEVELS)
        ]
        data = {
            "timestamp": str(trade.time_us // 1_000_000),
            "microtimestamp": str(trade.time_us),
            "bids": bids,
            "asks": asks,
        }
        frame = {"data": data, "channel": f"{BOOK}_{market.native}", "event": "data"}
        return _ENCODER.encode(frame)

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """Nothing for trades (the next trade comes when it comes); the book as it stands."""
        if channel != BOOK or market.last is None:
            return []
        return [self._book(market, market.last)]

    def notice(self) -> bytes:
        return RECONNECT

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one client message; a refused one gets ``bts:error`` and changes nothing."""
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        event = request.get("event") if isinstance(request, dict) else None
        if event == "bts:heartbeat":
            client.push(HEARTBEAT_REPLY)
            return
        data = request.get("data") if isinstance(request, dict) else None
        channel = data.get("channel") if isinstance(data, dict) else None
        if event not in ("bts:subscribe", "bts:unsubscribe") or not isinstance(channel, str):
            client.push(BAD_JSON)
            return
        topic = self._topic(channel)
        if topic is None:
            client.push(_error(channel, BAD_SUBSCRIPTION))
        elif event == "bts:subscribe":
            self.subscribe_requests.append(request)
            self._subscribe(client, channel, topic)
        else:
            self.unsubscribe(client, *topic)
            client.push(_event("bts:unsubscription_succeeded", channel, {}))

    def _topic(self, channel: str) -> tuple[str, str] | None:
        kind, pair = split_channel(channel)
        if kind not in CHANNELS or pair not in self.markets:
            return None
        return kind, pair

    def _subscribe(self, client: Client, channel: str, topic: tuple[str, str]) -> None:
        """Ack, then subscribe; ``mute`` applies to trades only (the book carries no prices)."""
        self.ack(client, _event("bts:subscription_succeeded", channel, {}))
        kind, pair = topic
        if kind == TRADES:
            self.subscribe(client, kind, pair)
            return
        client.subscribed = True
        client.topics.add(topic)
        if not self.silent:
            for frame in self.snapshot(client, kind, self.markets[pair]):
                client.push(frame)
