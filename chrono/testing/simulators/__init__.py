"""Exchange simulators by registry name, one per adapter in ``chrono.exchanges.EXCHANGES``."""

from __future__ import annotations

from chrono.testing.simulators.base import Chaos, SentTick, Simulator
from chrono.testing.simulators.binance import BinanceSimulator, BinanceUSSimulator
from chrono.testing.simulators.bitstamp import BitstampSimulator
from chrono.testing.simulators.bybit import BybitSimulator
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from chrono.testing.simulators.gemini import GeminiSimulator
from chrono.testing.simulators.kraken import KrakenSimulator
from chrono.testing.simulators.okx import OkxSimulator

SIMULATORS: dict[str, type[Simulator]] = {
    cls.exchange.name: cls
    for cls in (
        CoinbaseSimulator,
        BinanceSimulator,
        BinanceUSSimulator,
        KrakenSimulator,
        BitstampSimulator,
        GeminiSimulator,
        OkxSimulator,
        BybitSimulator,
    )
}

__all__ = ["SIMULATORS", "Chaos", "CoinbaseSimulator", "SentTick", "Simulator"]
