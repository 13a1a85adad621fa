"""SQLite, the embedded zero-setup store.

Writes go to one writer connection in a process of its own (``chrono.store.sqlite_process``),
since sqlite3 gives up and re-takes the GIL around every statement step, and beside a busy
event loop each re-take waits for the switch interval. The schema (``chrono.store.sqlite_sql``)
is migrated by that process when it opens. Reads stay in this process on a connection of
their own under a ``CapacityLimiter(1)``: sqlite3 connections are bound to a thread unless
told otherwise, and ``trio.to_thread`` may pick any worker thread (docs/stack.md, trap 7). In
WAL mode a reader sees every committed write and never waits for one.

Prices and sizes are stored as TEXT, exactly as received; times as fixed-width ISO 8601 UTC
text (``2024-12-07T18:00:00.542551Z``), which sorts in time order. OHLCV is computed in Python
with ``Decimal`` (``chrono.store.candles``): SQLite would compare the text prices as text.
Snapshot and FTSO bodies are TEXT holding the caller's JSON as given.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from chrono.errors import StoreError
from chrono.feeds import Feeds
from chrono.model import PriceFeed, fixed_time_text, optional_decimal_text, utc_now
from chrono.store.base import (
    FIRST_ID,
    INTERVALS,
    MAX_RANGE_FEEDS,
    Candle,
    FeedPage,
    RowKey,
    StoreStatistics,
    check_limit,
    feed_page,
)
from chrono.store.candles import candles_of
from chrono.store.migrations import CURRENT_VERSION, Migration
from chrono.store.snapshots import (
    FtsoAnswer,
    Snapshot,
    json_text,
    optional_json_bytes,
    optional_json_text,
)
from chrono.store.sqlite_process import WriterProcess
from chrono.store.sqlite_sql import MIGRATIONS, connect, row_params

T = TypeVar("T")

COLUMNS = "symbol, price, volume, bid, ask, timestamp, received_at, source, worker_id, metadata"
# A NULL source parameter means any source (each is passed twice).
LATEST = f"""
SELECT {COLUMNS} FROM price_feeds
WHERE symbol = ? AND (? IS NULL OR source = ?) ORDER BY timestamp DESC LIMIT 1
"""
# The newest feed of each source in [since, until]; of feeds at one time, the last inserted.
# Each source's newest time comes from the feed-key index alone (no row is read), then one
# row per source by that index again: a window function over the rows themselves read and
# sorted every feed in the window (843 ms for 300,000 feeds of one symbol, 125 ms this way).
LATEST_BY_SOURCE = f"""
SELECT {COLUMNS} FROM price_feeds WHERE id IN (
    SELECT (SELECT p.id FROM price_feeds AS p
            WHERE p.symbol = m.symbol AND p.timestamp = m.newest AND p.source = m.source
            ORDER BY p.id DESC LIMIT 1)
    FROM (SELECT symbol, source, max(timestamp) AS newest FROM price_feeds
          WHERE symbol = ? AND timestamp >= ? AND (? IS NULL OR timestamp <= ?)
          GROUP BY source) AS m
)
ORDER BY source
"""
BETWEEN = f"""
SELECT {COLUMNS} FROM price_feeds
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? AND (? IS NULL OR source = ?)
ORDER BY timestamp, id LIMIT ?
"""
# Keyset: rows after (timestamp, id); the first page starts after (start, FIRST_ID). The lower
# time bound is the later of start and the key's time, so the index seeks to the key.
PAGE = f"""
SELECT timestamp, id, {COLUMNS} FROM price_feeds
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? AND (? IS NULL OR source = ?)
  AND (timestamp, id) > (?, ?)
ORDER BY timestamp, id LIMIT ?
"""
CANDLE_ROWS = """
SELECT timestamp, price, volume FROM price_feeds
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? AND (? IS NULL OR source = ?)
ORDER BY timestamp, id
"""

SNAPSHOT_COLUMNS = "symbol, timestamp, price, status, method, num_sources, inputs_digest, body"
INSERT_SNAPSHOT = f"""
INSERT INTO aggregated_prices ({SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, timestamp) DO NOTHING
"""
SNAPSHOT_AT = f"SELECT {SNAPSHOT_COLUMNS} FROM aggregated_prices WHERE symbol = ? AND timestamp = ?"
SNAPSHOTS_BETWEEN = f"""
SELECT {SNAPSHOT_COLUMNS} FROM aggregated_prices
WHERE symbol = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp LIMIT ?
"""
ANSWER_COLUMNS = "voting_round_id, category, name, value, answered_at, body"
UPSERT_ANSWER = f"""
INSERT INTO ftso_rounds ({ANSWER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (voting_round_id, category, name) DO UPDATE
SET value = excluded.value, answered_at = excluded.answered_at, body = excluded.body
"""
# SQLite's default collation compares bytes: code point order, as PostgreSQL's "C".
FTSO_ROUND = f"""
SELECT {ANSWER_COLUMNS} FROM ftso_rounds WHERE voting_round_id = ? ORDER BY category, name
"""

_meta_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(dict[str, Any])


format_time = fixed_time_text  # the one form of a time in SQLite


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def feed_columns(feeds: Sequence[PriceFeed], ingested_at: str) -> list[Any]:
    """The writer child's ``feeds`` request: ``ingested_at`` and every feed's text for SQLite,
    column by column (``Feeds``), so the rows are made by the child, on its own core
    (``sqlite_sql.row_params``)."""
    return [ingested_at, *Feeds.of(feeds).row_columns()]


def feed_params(feeds: Sequence[PriceFeed], ingested_at: str) -> list[Any]:
    """The parameters of every feed's row, flat and in order (``WIDTH`` each)."""
    return row_params(feed_columns(feeds, ingested_at))


def to_row(feed: PriceFeed, ingested_at: str) -> tuple[Any, ...]:
    """A feed as the parameters of the one-row ``INSERT``."""
    return tuple(feed_params((feed,), ingested_at))


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


def snapshot_row(s: Snapshot) -> tuple[Any, ...]:
    """A snapshot as the parameters of ``INSERT_SNAPSHOT``; ``ValueError`` if the body is not
    JSON."""
    return (s.symbol, format_time(s.timestamp), optional_decimal_text(s.price), s.status, s.method,
            s.num_sources, s.inputs_digest, json_text(s.body))  # fmt: skip


def _snapshot(row: tuple[Any, ...]) -> Snapshot:
    symbol, ts, price, status, method, num_sources, digest, body = row
    return Snapshot(
        symbol=symbol, timestamp=parse_time(ts), price=_decimal(price), status=status,
        method=method, num_sources=num_sources, inputs_digest=digest, body=body.encode(),
    )  # fmt: skip


def answer_row(a: FtsoAnswer) -> tuple[Any, ...]:
    """An answer as the parameters of ``UPSERT_ANSWER``."""
    return (a.voting_round_id, a.category, a.name, optional_decimal_text(a.value),
            format_time(a.answered_at), optional_json_text(a.body))  # fmt: skip


def _answer(row: tuple[Any, ...]) -> FtsoAnswer:
    round_id, category, name, value, answered_at, body = row
    return FtsoAnswer(
        voting_round_id=round_id, category=category, name=name, value=_decimal(value),
        answered_at=parse_time(answered_at), body=optional_json_bytes(body),
    )  # fmt: skip


class SQLiteStore:
    kind = "sqlite"

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.writer = WriterProcess(self.path, migrations)
        self._reader: sqlite3.Connection | None = None
        self._read_lock = trio.CapacityLimiter(1)
        self._opening = trio.Lock()
        self.rows_written = 0
        self.batches_written = 0
        self.snapshots_written = 0
        self.ftso_answers_written = 0
        self.last_write_at: datetime | None = None

    async def open(self) -> None:
        async with self._opening:  # a write and a read may both find it closed
            try:
                await self.writer.open()  # first: it makes the file and migrates it
                if self._reader is None:
                    self._reader = await self._in_thread(
                        self._read_lock, partial(connect, self.path)
                    )
            except StoreError as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc

    async def schema_version(self) -> int:
        version: int = (await self._read(lambda conn: conn.execute(CURRENT_VERSION).fetchone()))[0]
        return version

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        added: int = await self.writer.call("feeds", feed_columns(feeds, format_time(utc_now())))
        self.rows_written += added
        self.batches_written += 1
        self.last_write_at = utc_now()
        return added

    async def write_snapshots(self, snapshots: Sequence[Snapshot]) -> int:
        rows = [snapshot_row(s) for s in snapshots]  # a bad body fails here, before any write
        added: int = await self.writer.call("many", INSERT_SNAPSHOT, rows)
        self.snapshots_written += added
        return added

    async def record_ftso_round(self, answers: Sequence[FtsoAnswer]) -> int:
        rows = [answer_row(a) for a in answers]
        written: int = await self.writer.call("many", UPSERT_ANSWER, rows)
        self.ftso_answers_written += written
        return written

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        def query(conn: sqlite3.Connection) -> list[PriceFeed]:
            rows = [conn.execute(LATEST, (s, source, source)).fetchone() for s in symbols]
            return [_feed(row) for row in rows if row is not None]

        return await self._read(query)

    async def latest_by_source(
        self, symbols: Sequence[str], *, since: datetime, until: datetime | None = None
    ) -> list[PriceFeed]:
        bounds = (format_time(since), *(2 * [None if until is None else format_time(until)]))

        def query(conn: sqlite3.Connection) -> list[PriceFeed]:
            return [
                _feed(row)
                for symbol in symbols
                for row in conn.execute(LATEST_BY_SOURCE, (symbol, *bounds))
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
        key = after or RowKey(start, FIRST_ID)
        args = (symbol, format_time(max(start, key.timestamp)), format_time(end), source, source,
                format_time(key.timestamp), key.id, check_limit(limit) + 1)  # fmt: skip

        def query(conn: sqlite3.Connection) -> FeedPage:
            rows = conn.execute(PAGE, args)
            return feed_page([(RowKey(parse_time(r[0]), r[1]), _feed(r[2:])) for r in rows], limit)

        return await self._read(query)

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
        width_s = INTERVALS[interval]
        if limit is not None:
            check_limit(limit)
        args = (symbol, format_time(start), format_time(end), source, source)

        def query(conn: sqlite3.Connection) -> list[Candle]:
            rows = conn.execute(CANDLE_ROWS, args)
            try:
                return candles_of(rows, width_s, parse_time, limit=limit)
            finally:
                rows.close()  # a limit may leave rows unread: end the statement's read now

        return await self._read(query)

    async def snapshots_at(self, symbols: Sequence[str], at: datetime) -> list[Snapshot]:
        when = format_time(at)

        def query(conn: sqlite3.Connection) -> list[Snapshot]:
            rows = [conn.execute(SNAPSHOT_AT, (s, when)).fetchone() for s in symbols]
            return [_snapshot(row) for row in rows if row is not None]

        return await self._read(query)

    async def snapshots_between(
        self, symbol: str, start: datetime, end: datetime, *, limit: int
    ) -> list[Snapshot]:
        args = (symbol, format_time(start), format_time(end), check_limit(limit))
        return await self._read(
            lambda conn: [_snapshot(r) for r in conn.execute(SNAPSHOTS_BETWEEN, args)]
        )

    async def ftso_round(self, voting_round_id: int) -> list[FtsoAnswer]:
        return await self._read(
            lambda conn: [_answer(r) for r in conn.execute(FTSO_ROUND, (voting_round_id,))]
        )

    async def aclose(self) -> None:
        await self.writer.aclose()
        if self._reader is not None:
            await self._in_thread(self._read_lock, self._reader.close)
        self._reader = None

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            kind=self.kind,
            path=str(self.path),
            writer_pid=self.writer.pid,
            writer_starts=self.writer.starts,
            rows_written=self.rows_written,
            batches_written=self.batches_written,
            snapshots_written=self.snapshots_written,
            ftso_answers_written=self.ftso_answers_written,
            last_write_at=self.last_write_at,
        )

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
