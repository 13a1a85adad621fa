"""What Kraken's two wire versions share: v2 lives in ``kraken``, v1 in ``kraken_v1``.

Both versions are one market (the feed source ``kraken``) with one connection budget, so they
share the asset spellings (v1 says ``XBT``/``XDG`` where canonical and v2 say ``BTC``/``DOGE``)
and the functions between them, ``KrakenAdapterBase`` (the symbol map, request ids, batching,
resubscribe order, building a feed), the decoding helpers, and the limits and ping interval of
both registry entries. Names with a leading underscore are for the Kraken modules only.

Errors: every bad frame raises ``InvalidFrame`` with one of three reasons, ``malformed`` (not
JSON), ``schema`` (JSON of the wrong shape, bad numbers or times) or ``unknown_type`` (a channel,
method or event the protocol does not have, raised by each version's ``parse``);
``chrono.exchanges.decoding.decode`` translates msgspec's errors into the first two.

Resubscribing: Kraken refuses a duplicate subscribe ("Already subscribed"), so a resubscribe
(the collector's ``resubscribe=True``, for quiet symbols) is preceded by an unsubscribe of the
same symbols. A new connection's subscribe is sent plain: an unsubscribe there would earn one
"Subscription Not Found" error per symbol.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec

from chrono.exchanges.base import Limits, SymbolMap
from chrono.model import PriceFeed, to_symbol

SOURCE: Final = "kraken"
# Pairs per (un)subscribe request. Kraken documents no cap on a request's list; 100 keeps a
# frame a few KB and a full connection (max_symbols) to two requests, i.e. one second of pacing.
BATCH_SYMBOLS: Final = 100
_V1_ASSETS: Final = {"BTC": "XBT", "DOGE": "XDG"}  # canonical -> v1 (REST ``wsname``)
_CANONICAL_ASSETS: Final = {v1: canonical for canonical, v1 in _V1_ASSETS.items()}


def native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> v2 ``BTC/USD``: v2 spells pairs the canonical way."""
    return symbol


def v1_native_symbol(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> v1 ``XBT/USD``; ``DOGE`` -> ``XDG`` likewise, on either side."""
    base, _, quote = symbol.partition("/")
    return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"


def canonical_symbol(pair: str) -> str:
    """A v1 (or v2) pair -> canonical: ``XBT/USD`` -> ``BTC/USD``, ``ETH/XBT`` -> ``ETH/BTC``.

    Raises ``ValueError`` for a pair without ``/`` (Kraken: "not in ISO 4217-A3 format").
    """
    base, slash, quote = pair.partition("/")
    if not (slash and base and quote):
        raise ValueError(f"not a BASE/QUOTE pair: {pair!r}")
    return to_symbol(_CANONICAL_ASSETS.get(base, base), _CANONICAL_ASSETS.get(quote, quote))


class KrakenAdapterBase:
    """What both versions share: the symbol map, request ids, batching, resubscribe order."""

    def __init__(self, symbols: SymbolMap, worker_id: str) -> None:
        self.worker_id = worker_id
        self._symbols = symbols
        self._req_ids = itertools.count(1)

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """One subscribe per ``BATCH_SYMBOLS`` pairs; a resubscribe unsubscribes first
        (Kraken refuses a pair the connection holds: "Already subscribed")."""
        natives = self._symbols.natives(symbols)
        messages = []
        for start in range(0, len(natives), BATCH_SYMBOLS):
            batch = natives[start : start + BATCH_SYMBOLS]
            if resubscribe:
                messages.append(_encode(self._request("unsubscribe", batch)))
            messages.append(_encode(self._request("subscribe", batch)))
        return messages

    def _request(self, method: str, natives: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _mine(self, native: str) -> list[str]:
        """The canonical symbol of ``native`` if this collector holds it."""
        symbol = self._symbols.to_canonical(native)
        return [] if symbol is None else [symbol]

    def _feed(
        self,
        symbol: str,
        native: str,
        price: Decimal,
        *,
        time: datetime,
        received_at: datetime,
        book: tuple[Decimal | None, Decimal | None, Decimal | None],  # bid, ask, volume
    ) -> PriceFeed:
        bid, ask, volume = book
        return PriceFeed(
            symbol=symbol,
            price=price,
            timestamp=time,
            received_at=received_at,
            source=SOURCE,
            worker_id=self.worker_id,
            volume=volume,
            bid=bid,
            ask=ask,
            metadata={"native_symbol": native},
        )


def _encode(request: dict[str, Any]) -> str:
    return msgspec.json.encode(request).decode()


# Kraken publishes no WebSocket rate numbers: too many requests earn {"Error":"Exceeded msg
# rate"} (the limit is dynamic), and Cloudflare, in front, answers connection bursts with 429.
# So: one connect per 2 s per process (every collector of both versions shares it), 2 messages
# per second per connection (subscribes, resubscribes and pings), and 200 pairs per connection
# (no documented cap; two subscribe requests of BATCH_SYMBOLS).
_LIMITS: Final = Limits(connects=1, connects_window_s=2.0, messages_per_s=2.0, max_symbols=200)
# Kraken heartbeats once a second, but only while a subscription exists; a ping every 30 s
# (1.7 % of the message budget) keeps a link whose subscribes all failed from idling out, and its
# pong proves the link. No rotation: Kraken documents no connection age limit.
_PING_INTERVAL_S: Final = 30.0
