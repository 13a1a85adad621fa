"""SQLite, the embedded zero-setup store.

One writer connection (WAL, ``synchronous=NORMAL``) used only under a ``CapacityLimiter(1)``:
sqlite3 connections are bound to a thread unless told otherwise, and ``trio.to_thread`` may
pick any worker thread (docs/stack.md, trap 7), so the limiter serializes every use.
Readers get their own connection and limiter, so an API query never waits for a write.

The schema comes from ``MIGRATIONS`` (``chrono.store.migrations``), applied when the writer
connection opens. Prices and sizes are stored as TEXT, exactly as received; times as
fixed-width ISO 8601 UTC text (``2024-12-07T18:00:00.542551Z``), which sorts in time order.
OHLCV is computed in Python with ``Decimal`` (``chrono.store.candles``): SQLite would compare
the text prices as text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from chrono.errors import StoreError
from chrono.model import PriceFeed, decimal_text, utc_now
from chrono.store.base import INTERVALS, MAX_RANGE_FEEDS, Candle
from chrono.store.candles import candles_of
from chrono.store.migrations import CURRENT_VERSION, VERSION_TABLE, Migration, apply_pending

T = TypeVar("T")

# How long a write waits for another process's lock before failing (and being retried by the
# writer). Short, so that an aborted drain is not held up by a thread waiting on a lock.
BUSY_TIMEOUT_MS = 1000

MIGRATIONS = (
    Migration(
        1,
        "price_feeds, each feed once, newest first per symbol",
        (
            """
            CREATE TABLE IF NOT EXISTS price_feeds (
                id          INTEGER PRIMARY KEY,
                symbol      TEXT NOT NULL,
                price       TEXT NOT NULL,
                volume      TEXT,
                bid         TEXT,
                ask         TEXT,
                timestamp   TEXT NOT NULL,
                received_at TEXT NOT NULL,
                ingested_at TEXT NOT NULL,
                source      TEXT NOT NULL,
                worker_id   TEXT NOT NULL,
                metadata    TEXT NOT NULL DEFAULT '{}',
                UNIQUE (source, symbol, timestamp, price)
            )
            """,
            "CREATE INDEX IF NOT EXISTS price_feeds_symbol_time"
            " ON price_feeds (symbol, timestamp DESC)",
        ),
    ),
)

VERSION_DDL = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
RECORD_VERSION = f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (?, ?)"

INSERT = """
INSERT OR IGNORE INTO price_feeds
    (symbol, price, volume, bid, ask, timestamp, received_at, ingested_at, source, worker_id,
     metadata)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

COLUMNS = "symbol, price, volume, bid, ask, timestamp, received_at, source, worker_id, metadata"
# A NULL source parameter means any source (each is passed twice).
LATEST = f"""
SELECT {COLUMNS} FROM price_feeds
WHERE symbol = ? AND (? IS NULL OR source = ?) ORDER BY timestamp DESC LIMIT 1
"""
# SQLite fills bare columns from the row holding the max(): the newest feed of each source.
LATEST_BY_SOURCE = f"""
SELECT {COLUMNS}, MAX(timestamp) FROM price_feeds
WHERE symbol = ? AND timestamp >= ? GROUP BY source ORDER BY source
"""
BETWEEN = f"""
SELECT {COLUMNS} FROM price_feeds
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? AND (? IS NULL OR source = ?)
ORDER BY timestamp, id LIMIT ?
"""
CANDLE_ROWS = """
SELECT timestamp, price, volume FROM price_feeds
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? AND (? IS NULL OR source = ?)
ORDER BY timestamp, id
"""

_meta_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(dict[str, Any])


def format_time(value: datetime) -> str:
    """Fixed-width UTC text (``2024-12-07T18:00:00.542551Z``), so text order is time order."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def to_row(feed: PriceFeed, ingested_at: str) -> tuple[Any, ...]:
    """A feed as the parameters of ``INSERT``: the text SQLite keeps."""
    return (
        feed.symbol,
        decimal_text(feed.price),
        _text(feed.volume),
        _text(feed.bid),
        _text(feed.ask),
        format_time(feed.timestamp),
        format_time(feed.received_at),
        ingested_at,
        feed.source,
        feed.worker_id,
        _meta_encoder.encode(feed.metadata).decode(),
    )


def _feed(row: tuple[Any, ...]) -> PriceFeed:
    symbol, price, volume, bid, ask, ts, received, source, worker, meta = row
    return PriceFeed(
        symbol=symbol,
        price=Decimal(price),
        volume=_decimal(volume),
        bid=_decimal(bid),
        ask=_decimal(ask),
        timestamp=parse_time(ts),
        received_at=parse_time(received),
        source=source,
        worker_id=worker,
        metadata=_meta_decoder.decode(meta),
    )


class SQLiteStore:
    kind = "sqlite"

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.migrations = migrations
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)
        self._opening = trio.Lock()
        self.rows_written = 0
        self.batches_written = 0
        self.last_write_at: datetime | None = None

    async def open(self) -> None:
        async with self._opening:  # a write and a read may both find it closed
            try:
                if self._writer is None:
                    self._writer = await self._in_thread(self._write_lock, self._open_writer)
                if self._reader is None:
                    self._reader = await self._in_thread(self._read_lock, self._connect)
            except StoreError as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the pending migrations in one transaction (SQLite's DDL is transactional)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            apply_pending(conn, self.migrations, version_ddl=VERSION_DDL,
                          record=RECORD_VERSION, where=str(self.path))  # fmt: skip
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def schema_version(self) -> int:
        version: int = (await self._read(lambda conn: conn.execute(CURRENT_VERSION).fetchone()))[0]
        return version

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        if self._writer is None:
            await self.open()  # the store was not there at start: it is now, or this raises
        conn = self._require(self._writer)
        added = await self._in_thread(self._write_lock, lambda: self._insert(conn, feeds))
        self.rows_written += added
        self.batches_written += 1
        self.last_write_at = utc_now()
        return added

    @staticmethod
    def _insert(conn: sqlite3.Connection, feeds: Sequence[PriceFeed]) -> int:
        ingested_at = format_time(utc_now())
        before = conn.total_changes
        conn.execute("BEGIN")
        try:
            conn.executemany(INSERT, [to_row(feed, ingested_at) for feed in feeds])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return conn.total_changes - before

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        def query(conn: sqlite3.Connection) -> list[PriceFeed]:
            rows = [conn.execute(LATEST, (s, source, source)).fetchone() for s in symbols]
            return [_feed(row) for row in rows if row is not None]

        return await self._read(query)

    async def latest_by_source(self, symbols: Sequence[str], *, since: datetime) -> list[PriceFeed]:
        def query(conn: sqlite3.Connection) -> list[PriceFeed]:
            after = format_time(since)
            return [
                _feed(row[:-1])
                for symbol in symbols
                for row in conn.execute(LATEST_BY_SOURCE, (symbol, after))
            ]

        return await self._read(query)

    async def feeds_between(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        source: str | None = None,
        limit: int = MAX_RANGE_FEEDS,
    ) -> list[PriceFeed]:
        args = (symbol, format_time(start), format_time(end), source, source, limit)
        return await self._read(lambda conn: [_feed(r) for r in conn.execute(BETWEEN, args)])

    async def candles(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        interval: str,
        *,
        source: str | None = None,
    ) -> list[Candle]:
        width_s = INTERVALS[interval]
        args = (symbol, format_time(start), format_time(end), source, source)

        def query(conn: sqlite3.Connection) -> list[Candle]:
            rows = conn.execute(CANDLE_ROWS, args)
            return candles_of(((parse_time(t), Decimal(p), _decimal(v)) for t, p, v in rows),
                              width_s)  # fmt: skip

        return await self._read(query)

    async def aclose(self) -> None:
        for conn, lock in ((self._writer, self._write_lock), (self._reader, self._read_lock)):
            if conn is not None:
                await self._in_thread(lock, conn.close)
        self._writer = self._reader = None

    def statistics(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "rows_written": self.rows_written,
            "batches_written": self.batches_written,
            "last_write_at": self.last_write_at.isoformat() if self.last_write_at else None,
        }

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            await self.open()
        conn = self._require(self._reader)
        return await self._in_thread(self._read_lock, lambda: query(conn))

    @staticmethod
    def _require(conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise StoreError("the SQLite store is not open")
        return conn

    @staticmethod
    async def _in_thread(lock: trio.CapacityLimiter, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread; sqlite3 and file errors become ``StoreError``."""
        try:
            return await trio.to_thread.run_sync(fn, limiter=lock)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"sqlite: {exc}") from exc
