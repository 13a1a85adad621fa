"""Exchange simulators by registry name, one per adapter in ``chrono.exchanges.EXCHANGES``."""

from __future__ import annotations

from chrono.testing.simulators.base import Chaos, SentTick, Simulator
from chrono.testing.simulators.coinbase import CoinbaseSimulator

SIMULATORS: dict[str, type[Simulator]] = {
    CoinbaseSimulator.exchange.name: CoinbaseSimulator,
}

__all__ = ["SIMULATORS", "Chaos", "CoinbaseSimulator", "SentTick", "Simulator"]
