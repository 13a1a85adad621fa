"""Exchange simulators by registry name, one per adapter in ``chrono.exchanges.EXCHANGES``."""

from __future__ import annotations

from chrono.testing.simulators.coinbase import CoinbaseSimulator, SentTick

SIMULATORS: dict[str, type] = {
    "coinbase": CoinbaseSimulator,
}

__all__ = ["SIMULATORS", "CoinbaseSimulator", "SentTick"]
