"""Exchange adapters, one module each, looked up by registry name (``[[collectors]] exchange``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chrono.exchanges import binance, bitstamp, bybit, coinbase, gemini, kraken, okx
from chrono.exchanges.base import Adapter, Exchange, FrameKind, Limits, ParsedFrame, SymbolMap

EXCHANGES: dict[str, Exchange] = {
    entry.name: entry
    for entry in (
        coinbase.EXCHANGE,
        binance.EXCHANGE,
        binance.US_EXCHANGE,
        kraken.EXCHANGE,
        bitstamp.EXCHANGE,
        gemini.EXCHANGE,
        okx.EXCHANGE,
        bybit.EXCHANGE,
    )
}

if TYPE_CHECKING:
    from chrono.config import CollectorConfig


def endpoint(collector: CollectorConfig) -> str:
    """Where a collector connects: its own ``url``, else its exchange's (and wire version's)."""
    return collector.url or EXCHANGES[collector.exchange].protocol(collector.protocol).default_url


__all__ = [
    "EXCHANGES",
    "Adapter",
    "Exchange",
    "FrameKind",
    "Limits",
    "ParsedFrame",
    "SymbolMap",
    "endpoint",
]
