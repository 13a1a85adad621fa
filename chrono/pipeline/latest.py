"""The newest feed of every (symbol, source), in memory, for ``/prices/latest`` and the
consensus.

Updated synchronously by the fan-out, so it never blocks and never lags the pipeline. A feed
older (by exchange time) than the one held for its source is ignored: exchanges replay the last
trade after every subscribe, and a replay must not move the price backwards.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from chrono.feeds import Feeds
from chrono.model import PriceFeed


class LatestStatistics(msgspec.Struct, frozen=True, kw_only=True):
    symbols: int
    sources: int  # (symbol, source) pairs held
    updates: int


class LatestPrices:
    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, PriceFeed]] = {}
        self.updates = 0

    def update(self, feeds: Feeds) -> None:
        """The newest of each (symbol, source) in ``feeds`` replaces the one held unless that
        is newer. Only those feeds are made into ``PriceFeed`` objects; a later feed wins a
        tie, as feeds taken one at a time would."""
        held = self._by_symbol
        for (symbol, source), index in _newest(feeds).items():
            sources = held.get(symbol)
            if sources is None:
                sources = held[symbol] = {}
            current = sources.get(source)
            feed = feeds[index]
            if current is None or feed.timestamp >= current.timestamp:
                sources[source] = feed
                self.updates += 1

    def by_source(self, symbol: str) -> Mapping[str, PriceFeed]:
        """The newest feed of each source of ``symbol`` (empty if none yet)."""
        return self._by_symbol.get(symbol, {})

    def get(self, symbol: str, source: str | None = None) -> PriceFeed | None:
        """The newest feed of ``symbol`` from ``source``, or from any source."""
        sources = self._by_symbol.get(symbol, {})
        if source is not None:
            return sources.get(source)
        return max(sources.values(), key=lambda f: f.timestamp, default=None)

    def statistics(self) -> LatestStatistics:
        return LatestStatistics(
            symbols=len(self._by_symbol),
            sources=sum(len(s) for s in self._by_symbol.values()),
            updates=self.updates,
        )


def _newest(feeds: Feeds) -> dict[tuple[str, str], int]:
    """The index of the newest feed of each (symbol, source): its last one when the times are
    in order (the common read, checked and found at C speed; fixed-width time text sorts as
    time), else the last of its latest time."""
    times, pairs = feeds.timestamps, zip(feeds.symbols, feeds.sources, strict=True)
    if times == sorted(times):
        return dict(zip(pairs, range(len(times)), strict=True))
    newest: dict[tuple[str, str], int] = {}
    for index, pair in enumerate(pairs):
        if (before := newest.get(pair)) is None or times[index] >= times[before]:
            newest[pair] = index
    return newest
