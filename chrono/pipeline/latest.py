"""The newest feed of every symbol, in memory, for ``/prices/latest``.

Updated synchronously by the fan-out, so it never blocks and never lags the pipeline. A feed
older (by exchange time) than the one held is ignored: exchanges replay the last trade after
every subscribe, and a replay must not move the price backwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chrono.model import PriceFeed


class LatestPrices:
    def __init__(self) -> None:
        self._by_symbol: dict[str, PriceFeed] = {}
        self.updates = 0

    def update(self, feeds: Iterable[PriceFeed]) -> None:
        held = self._by_symbol
        for feed in feeds:
            current = held.get(feed.symbol)
            if current is None or feed.timestamp >= current.timestamp:
                held[feed.symbol] = feed
                self.updates += 1

    def get(self, symbol: str) -> PriceFeed | None:
        return self._by_symbol.get(symbol)

    def statistics(self) -> dict[str, Any]:
        return {"symbols": len(self._by_symbol), "updates": self.updates}
