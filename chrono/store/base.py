"""The Store seam: what the ingest writer and the API need from a database.

Every implementation keeps the table ``price_feeds`` (docs/architecture.md): prices digit for
digit, times in UTC with microseconds, and one row per (source, symbol, timestamp, price) however
often a feed is written. Blocking calls run in worker threads; methods are safe to cancel
(a cancelled write is either committed or not, never half).

``open()`` connects and applies the schema migrations (``chrono.store.migrations``); a store
that could not be opened yet is opened by the next ``write()``, so a store that is down when
Chrono starts costs nothing but a spool. Failures raise ``StoreError``; a schema newer than
this code raises ``SchemaTooNew``, which no retry mends.

The seam has two halves: ``StoreWriter`` (ingest, snapshots, FTSO answers, lifecycle) and
``StoreReader`` (what the API asks), so a caller can say which half it needs; ``Store`` is
both, and is what a store class provides. Ranges are half-open ``[start, end)``; candles are
aligned to the UTC epoch (a 1d candle starts at 00:00 UTC) and come oldest first. Where
feeds of one source tie on ``timestamp``, the one inserted last (the highest row id) is
the newer. ``feeds_page``, ``candles`` and ``snapshots_between`` refuse a ``limit`` below 1
(``ValueError``).

Besides ``price_feeds``, migration 2 keeps consensus snapshots and FTSO answers
(``chrono.store.snapshots``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import msgspec

from chrono.model import PriceFeed
from chrono.store.snapshots import FtsoAnswer, Snapshot

# Candle widths the read side serves, in seconds.
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}
MAX_RANGE_FEEDS = 10_000  # the most raw feeds one range query returns
FIRST_ID = -(2**63)  # below every row id: the key before any row at a time


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


class RowKey(msgspec.Struct, frozen=True, order=True):
    """Where a feed stands in a range: time order, then insertion order (the row id)."""

    timestamp: datetime
    id: int


class FeedPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a range; ``next`` is the ``after`` of the following page, ``None`` at the
    end."""

    feeds: list[PriceFeed]
    next: RowKey | None


def check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return limit


def feed_page(rows: Sequence[tuple[RowKey, PriceFeed]], limit: int) -> FeedPage:
    """The page of up to ``limit + 1`` keyed rows read in key order: a row past ``limit`` only
    says that another page follows."""
    kept = rows[:limit]
    more = len(rows) > limit
    return FeedPage(feeds=[feed for _, feed in kept], next=kept[-1][0] if more else None)


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A store as ``/status`` shows it; each kind fills its own optional fields."""

    kind: str
    rows_written: int
    batches_written: int
    snapshots_written: int
    ftso_answers_written: int
    last_write_at: datetime | None
    path: str | None = None  # SQLite
    writer_pid: int | None = None  # SQLite: its writer process, while one runs
    writer_starts: int | None = None  # SQLite: writer processes started (more than 1: one lost)
    url: str | None = None  # PostgreSQL, password masked
    timescaledb: str | None = None  # PostgreSQL: which path is in use, and why
    connects: int | None = None  # PostgreSQL
    broken_connections: int | None = None  # PostgreSQL


class StoreReader(Protocol):
    """What the API reads. Each method opens the store first if it is not open yet."""

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        """The newest stored feed of each symbol that has one (from ``source`` if given)."""
        ...

    async def latest_by_source(
        self, symbols: Sequence[str], *, since: datetime, until: datetime | None = None
    ) -> list[PriceFeed]:
        """The newest feed of each (symbol, source) with ``since <= timestamp <= until``
        (both inclusive; no upper bound without ``until``): a consensus as of ``until``."""
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

    async def feeds_page(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        source: str | None = None,
        limit: int,
        after: RowKey | None = None,
    ) -> FeedPage:
        """Up to ``limit`` feeds of ``[start, end)`` after ``after``, in ``RowKey`` order: a
        keyset page, stable while rows arrive (a new row never shifts a later page)."""
        ...

    async def candles(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        interval: str,
        *,
        source: str | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """OHLCV of ``symbol`` per ``interval`` (a key of ``INTERVALS``) in ``[start, end)``,
        the first ``limit`` buckets that have feeds; the next page starts at the bucket after
        the last one returned."""
        ...

    async def snapshots_at(self, symbols: Sequence[str], at: datetime) -> list[Snapshot]:
        """The snapshot of each symbol taken exactly at ``at``, in ``symbols`` order; a symbol
        without one is left out."""
        ...

    async def snapshots_between(
        self, symbol: str, start: datetime, end: datetime, *, limit: int
    ) -> list[Snapshot]:
        """Snapshots of ``symbol`` in ``[start, end)``, oldest first, at most ``limit``."""
        ...

    async def ftso_round(self, voting_round_id: int) -> list[FtsoAnswer]:
        """The answers recorded for a voting round, by category, then name (code points)."""
        ...


class StoreWriter(Protocol):
    """Ingest and lifecycle. A write opens the store first if it could not be opened yet."""

    kind: str  # "sqlite" | "postgresql" | "forward"

    async def open(self) -> None:
        """Connect and migrate the schema; ``StoreError`` if impossible now."""
        ...

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        """Insert a batch in one transaction; return rows added (repeats add none)."""
        ...

    async def write_snapshots(self, snapshots: Sequence[Snapshot]) -> int:
        """Insert snapshots in one transaction; return rows added (a (symbol, timestamp) already
        stored keeps its first snapshot)."""
        ...

    async def record_ftso_round(self, answers: Sequence[FtsoAnswer]) -> int:
        """Upsert answers in one transaction (the last write of a key wins); return rows
        inserted or replaced."""
        ...

    async def schema_version(self) -> int:
        """The migration version the store is at."""
        ...

    async def aclose(self) -> None: ...

    def statistics(self) -> StoreStatistics: ...


class Store(StoreWriter, StoreReader, Protocol):
    """A whole store: what ``open_store`` returns and the service holds."""
