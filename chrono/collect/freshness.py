"""Freshness per (source, symbol): how old each symbol's last data is, against its own pace.

Only data frames count; heartbeats prove the link, not the data. Each symbol learns its pace
from the gaps between its feeds: a gap estimate that rises at once with a long gap and decays
slowly with short ones (so it tracks the longer lulls of a bursty pair, not its average). A
symbol is stale when its age passes ``factor`` times that estimate, clamped to
``[floor_s, ceiling_s]``; until it has a pace, ``first_data_s`` applies. A quiet pair thus
gets a long threshold of its own and does not trigger restarts.

What staleness leads to is the session's business (``chrono.collect.session``): a stale symbol
is resubscribed, with its next check doubling each time; a connection on which every symbol
is stale is silent and is replaced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

RISE = 0.5  # weight of a gap longer than the estimate: lulls are learnt at once
DECAY = 0.05  # weight of a shorter gap: the estimate forgets lulls slowly


class FreshnessStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's freshness as ``/status`` shows it."""

    symbol: str
    native_symbol: str
    acked: bool
    feeds: int
    age_s: float | None  # since its last data frame; None before the first
    threshold_s: float
    stale: bool
    resubscribes: int


@dataclass(frozen=True, slots=True)
class FreshnessRules:
    """The thresholds' parameters (``[[collectors]]`` ``stale_*`` and ``silence_timeout_s``)."""

    first_data_s: float = 30.0  # before a symbol's pace is known
    factor: float = 5.0
    floor_s: float = 10.0
    ceiling_s: float = 600.0


@dataclass(slots=True)
class SymbolFreshness:
    """One symbol of one collector. Times are ``trio.current_time()`` seconds."""

    symbol: str
    native: str
    last_data: float | None = None
    gap_s: float | None = None  # the pace estimate
    feeds: int = 0
    acked: bool = False
    resubscribes: int = 0

    def seen(self, now: float, ticks: int = 1) -> None:
        """``ticks`` of this symbol arrived together at ``now`` (one read): one gap."""
        if self.last_data is not None:
            gap = now - self.last_data
            if self.gap_s is None:
                self.gap_s = gap
            else:
                weight = RISE if gap > self.gap_s else DECAY
                self.gap_s += weight * (gap - self.gap_s)
        self.last_data = now
        self.feeds += ticks

    def threshold_s(self, rules: FreshnessRules) -> float:
        if self.gap_s is None:
            return rules.first_data_s
        return min(rules.ceiling_s, max(rules.floor_s, rules.factor * self.gap_s))


class Freshness:
    """Every symbol of one collector, shared by its connections (a rotation keeps the pace)."""

    def __init__(self, pairs: dict[str, str], rules: FreshnessRules) -> None:
        """``pairs``: canonical -> native, in config order."""
        self.rules = rules
        self.symbols = {s: SymbolFreshness(s, native) for s, native in pairs.items()}

    def seen(self, symbol: str, now: float, ticks: int = 1) -> None:
        entry = self.symbols.get(symbol)
        if entry is not None:
            entry.seen(now, ticks)

    def seen_ticks(self, symbols: Iterable[str], now: float) -> None:
        """The ticks of one read, by symbol: each symbol seen once (its gap is between reads,
        not between ticks that arrived together), its tick count raised by all of them."""
        for symbol, count in Counter(symbols).items():
            self.seen(symbol, now, count)

    def acked(self, symbols: list[str]) -> None:
        for symbol in symbols:
            if (entry := self.symbols.get(symbol)) is not None:
                entry.acked = True

    def threshold_s(self, symbol: str) -> float:
        return self.symbols[symbol].threshold_s(self.rules)

    def connection_silence_s(self) -> float:
        """No data at all on a connection for this long: every symbol is stale, so it is dead."""
        return max(entry.threshold_s(self.rules) for entry in self.symbols.values())

    def is_stale(self, symbol: str, now: float, since: float, patience: float = 1.0) -> bool:
        """Older than ``patience`` x its threshold, counting from ``since`` (its subscription)
        at the latest."""
        entry = self.symbols[symbol]
        last = since if entry.last_data is None else max(entry.last_data, since)
        return now - last > patience * entry.threshold_s(self.rules)

    def statistics(self, now: float) -> list[FreshnessStatistics]:
        out = []
        for entry in self.symbols.values():
            threshold = entry.threshold_s(self.rules)
            age = None if entry.last_data is None else round(now - entry.last_data, 3)
            out.append(
                FreshnessStatistics(
                    symbol=entry.symbol,
                    native_symbol=entry.native,
                    acked=entry.acked,
                    feeds=entry.feeds,
                    age_s=age,
                    threshold_s=round(threshold, 3),
                    stale=age is None or age > threshold,
                    resubscribes=entry.resubscribes,
                )
            )
        return out
