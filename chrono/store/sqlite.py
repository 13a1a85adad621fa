"""SQLite, the embedded zero-setup store.

One writer connection (WAL, ``synchronous=NORMAL``) used only under a ``CapacityLimiter(1)``:
sqlite3 connections are bound to a thread unless told otherwise, and ``trio.to_thread`` may
pick any worker thread (../shared/STACK.md trap 7), so the limiter serializes every use.
Readers get their own connection and limiter, so an API query never waits for a write.

Prices and sizes are stored as TEXT, exactly as received; times as fixed-width ISO 8601 UTC
text (``2024-12-07T18:00:00.542551Z``), which sorts in time order.
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

T = TypeVar("T")

# How long a write waits for another process's lock before failing (and being retried by the
# writer). Short, so that an aborted drain is not held up by a thread waiting on a lock.
BUSY_TIMEOUT_MS = 1000

SCHEMA = """
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
);
CREATE INDEX IF NOT EXISTS price_feeds_symbol_time ON price_feeds (symbol, timestamp DESC);
"""

INSERT = """
INSERT OR IGNORE INTO price_feeds
    (symbol, price, volume, bid, ask, timestamp, received_at, ingested_at, source, worker_id,
     metadata)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

LATEST = """
SELECT symbol, price, volume, bid, ask, timestamp, received_at, source, worker_id, metadata
FROM price_feeds WHERE symbol = ? ORDER BY timestamp DESC LIMIT 1
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


def _row(feed: PriceFeed, ingested_at: str) -> tuple[Any, ...]:
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
        volume=None if volume is None else Decimal(volume),
        bid=None if bid is None else Decimal(bid),
        ask=None if ask is None else Decimal(ask),
        timestamp=parse_time(ts),
        received_at=parse_time(received),
        source=source,
        worker_id=worker,
        metadata=_meta_decoder.decode(meta),
    )


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)
        self.rows_written = 0
        self.batches_written = 0
        self.last_write_at: datetime | None = None

    async def open(self) -> None:
        try:
            self._writer = await self._in_thread(self._write_lock, self._open_writer)
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
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA)
        return conn

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
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
            conn.executemany(INSERT, [_row(feed, ingested_at) for feed in feeds])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return conn.total_changes - before

    async def latest(self, symbols: Sequence[str]) -> list[PriceFeed]:
        conn = self._require(self._reader)

        def query() -> list[PriceFeed]:
            rows = [conn.execute(LATEST, (s,)).fetchone() for s in symbols]
            return [_feed(row) for row in rows if row is not None]

        return await self._in_thread(self._read_lock, query)

    async def aclose(self) -> None:
        for conn, lock in ((self._writer, self._write_lock), (self._reader, self._read_lock)):
            if conn is not None:
                await self._in_thread(lock, conn.close)
        self._writer = self._reader = None

    def statistics(self) -> dict[str, Any]:
        return {
            "kind": "sqlite",
            "path": str(self.path),
            "rows_written": self.rows_written,
            "batches_written": self.batches_written,
            "last_write_at": self.last_write_at.isoformat() if self.last_write_at else None,
        }

    @staticmethod
    def _require(conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise StoreError("the SQLite store is not open")
        return conn

    @staticmethod
    async def _in_thread(lock: trio.CapacityLimiter, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread; sqlite3 errors become ``StoreError``."""
        try:
            return await trio.to_thread.run_sync(fn, limiter=lock)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
