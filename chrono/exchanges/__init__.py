"""Exchange adapters, one module each, looked up by registry name (``[[collectors]] exchange``)."""

from __future__ import annotations

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

__all__ = ["EXCHANGES", "Adapter", "Exchange", "FrameKind", "Limits", "ParsedFrame", "SymbolMap"]
