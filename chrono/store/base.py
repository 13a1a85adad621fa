"""The Store seam: what the ingest writer and the API need from a database.

Every implementation keeps the table ``price_feeds`` (docs/architecture.md): prices digit for
digit, times in UTC with microseconds, and one row per (source, symbol, timestamp, price) however
often a feed is written. Blocking calls run in worker threads; methods are safe to cancel
(a cancelled write is either committed or not, never half).

``open()`` connects and applies the schema migrations (``chrono.store.migrations``); a store
that could not be opened yet is opened by the next ``write()``, so a store that is down when
Chrono starts costs nothing but a spool. Failures raise ``StoreError``; a schema newer than
this code raises ``SchemaTooNew``, which no retry mends.

The read side (``latest``, ``latest_by_source``, ``feeds_between``, ``candles``) takes
half-open time ranges ``[start, end)``; candles are aligned to the UTC epoch (a 1d candle
starts at 00:00 UTC) and come oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from chrono.model import PriceFeed

# Candle widths the read side serves, in seconds.
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}
MAX_RANGE_FEEDS = 10_000  # the most raw feeds one range query returns


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    """OHLCV of one bucket. ``volume`` is the newest 24 h base volume reported in the bucket
    (feeds carry a rolling 24 h volume, which cannot be summed); ``None`` if none reported."""

    timestamp: datetime  # the bucket's start
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal | None
    num_feeds: int


class Store(Protocol):
    kind: str  # "sqlite" | "postgresql"

    async def open(self) -> None:
        """Connect and migrate the schema; ``StoreError`` if impossible now."""
        ...

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        """Insert a batch in one transaction; return rows added (repeats add none)."""
        ...

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        """The newest stored feed of each symbol that has one (from ``source`` if given)."""
        ...

    async def latest_by_source(self, symbols: Sequence[str], *, since: datetime) -> list[PriceFeed]:
        """The newest feed of each (symbol, source) at or after ``since``."""
        ...

    async def feeds_between(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        source: str | None = None,
        limit: int = MAX_RANGE_FEEDS,
    ) -> list[PriceFeed]:
        """Raw feeds of ``symbol`` in ``[start, end)``, oldest first, at most ``limit``."""
        ...

    async def candles(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        interval: str,
        *,
        source: str | None = None,
    ) -> list[Candle]:
        """OHLCV of ``symbol`` per ``interval`` (a key of ``INTERVALS``) in ``[start, end)``."""
        ...

    async def schema_version(self) -> int:
        """The migration version the store is at."""
        ...

    async def aclose(self) -> None: ...

    def statistics(self) -> dict[str, Any]: ...
