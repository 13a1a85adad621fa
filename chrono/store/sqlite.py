"""SQLite, the embedded zero-setup store.

One writer connection (WAL, ``synchronous=NORMAL``) used only under a ``CapacityLimiter(1)``:
sqlite3 connections are bound to a thread unless told otherwise, and ``trio.to_thread`` may
pick any worker thread (docs/stack.md, trap 7), so the limiter serializes every use.
Readers get their own connection and limiter, so an API query never waits for a write.

The schema comes from ``MIGRATIONS`` (``chrono.store.migrations``), applied when the writer
connection opens; since version 3 one unique index on (symbol, timestamp, source, price) is
both the feed key and the index every read searches. A write of feeds is one transaction of
multi-row ``INSERT OR IGNORE`` statements of a few fixed sizes (``ROW_SIZES``), each prepared
once per connection, from one flat parameter list: one SQLite step per ~3,000 rows, not one per
row, since sqlite3 gives up and re-takes the GIL around every step (``statement_rows``).

Prices and sizes are stored as TEXT, exactly as received; times as fixed-width ISO 8601 UTC
text (``2024-12-07T18:00:00.542551Z``), which sorts in time order. OHLCV is computed in Python
with ``Decimal`` (``chrono.store.candles``): SQLite would compare the text prices as text.
Snapshot and FTSO bodies are TEXT holding the caller's JSON as given.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from chrono.errors import StoreError
from chrono.model import PriceFeed, feed_text, fixed_time_text, optional_decimal_text, utc_now
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
from chrono.store.migrations import CURRENT_VERSION, VERSION_TABLE, Migration, apply_pending
from chrono.store.snapshots import (
    FtsoAnswer,
    Snapshot,
    json_text,
    optional_json_bytes,
    optional_json_text,
)

T = TypeVar("T")

# How long a write waits for another process's lock before failing (and being retried by the
# writer). Short, so that an aborted drain is not held up by a thread waiting on a lock.
BUSY_TIMEOUT_MS = 1000

# Every column of price_feeds but id, in the order of a row's parameters.
ALL_COLUMNS = (
    "symbol, price, volume, bid, ask, timestamp, received_at, ingested_at, source, worker_id,"
    " metadata"
)
WIDTH = 11  # parameters per row

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
    Migration(
        2,
        "aggregated_prices (consensus snapshots) and ftso_rounds (answers to FTSO providers)",
        (
            """
            CREATE TABLE aggregated_prices (
                symbol        TEXT NOT NULL,
                timestamp     TEXT NOT NULL,
                price         TEXT,
                status        TEXT NOT NULL,
                method        TEXT NOT NULL,
                num_sources   INTEGER NOT NULL,
                inputs_digest TEXT NOT NULL,
                body          TEXT NOT NULL,
                PRIMARY KEY (symbol, timestamp)
            )
            """,
            """
            CREATE TABLE ftso_rounds (
                voting_round_id INTEGER NOT NULL,
                category        INTEGER NOT NULL,
                name            TEXT NOT NULL,
                value           TEXT,
                answered_at     TEXT NOT NULL,
                body            TEXT,
                PRIMARY KEY (voting_round_id, category, name)
            )
            """,
        ),
    ),
    Migration(
        3,
        "price_feeds keyed by one unique index on (symbol, timestamp, source, price)",
        (
            # SQLite cannot drop a table constraint: rebuild the table, keeping every id.
            """
            CREATE TABLE price_feeds_v3 (
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
                metadata    TEXT NOT NULL DEFAULT '{}'
            )
            """,
            f"INSERT INTO price_feeds_v3 (id, {ALL_COLUMNS})"
            f" SELECT id, {ALL_COLUMNS} FROM price_feeds ORDER BY id",
            "DROP TABLE price_feeds",  # and its two indexes
            "ALTER TABLE price_feeds_v3 RENAME TO price_feeds",
            "CREATE UNIQUE INDEX price_feeds_feed_key"
            " ON price_feeds (symbol, timestamp, source, price)",
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

# Rows per INSERT statement. sqlite3 gives up the GIL around every statement step; beside a
# busy event loop, taking it back waits for the loop's switch interval (5 ms), so a write makes
# as few steps as it can: statements of the largest size (2,944 rows are 32,384 parameters,
# under SQLite's 32,766 default; sizes above the connection's limit are left out), then one
# that holds the rest, padded (``statement_rows``). Measured beside a spinning thread, 10,000
# rows per transaction: 38k rows/s in 256-row statements, 159k in 2,944-row ones (312k alone).
ROW_SIZES = (2944, *(2**n for n in range(11, -1, -1)))
# Enough for every INSERT size and every read, so each is prepared once per connection.
CACHED_STATEMENTS = 128


def insert_rows(rows: int) -> str:
    """``INSERT OR IGNORE`` of ``rows`` rows; anonymous ``?`` placeholders, since numbered ones
    (``?NNN``) make SQLite's parser quadratic in their number."""
    values = ", ".join(["(" + ", ".join(["?"] * WIDTH) + ")"] * rows)
    return f"INSERT OR IGNORE INTO price_feeds ({ALL_COLUMNS}) VALUES {values}"


INSERTS = {rows: insert_rows(rows) for rows in ROW_SIZES}  # the same text each time: cached
INSERT = INSERTS[1]

COLUMNS = "symbol, price, volume, bid, ask, timestamp, received_at, source, worker_id, metadata"
# A NULL source parameter means any source (each is passed twice).
LATEST = f"""
SELECT {COLUMNS} FROM price_feeds
WHERE symbol = ? AND (? IS NULL OR source = ?) ORDER BY timestamp DESC LIMIT 1
"""
# The newest feed of each source in [since, until]; of feeds at one time, the last inserted.
LATEST_BY_SOURCE = f"""
SELECT {COLUMNS} FROM (
    SELECT {COLUMNS},
           row_number() OVER (PARTITION BY source ORDER BY timestamp DESC, id DESC) AS n
    FROM price_feeds WHERE symbol = ? AND timestamp >= ? AND (? IS NULL OR timestamp <= ?)
)
WHERE n = 1 ORDER BY source
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


def feed_params(feeds: Iterable[PriceFeed], ingested_at: str) -> list[Any]:
    """The parameters of every feed's row, flat and in order (``WIDTH`` each): the text SQLite
    keeps. The one Python loop of a write, so it only reads attributes and encodes metadata."""
    params: list[Any] = []
    extend = params.extend
    encode = _meta_encoder.encode
    for feed in feeds:
        text = feed_text(feed)
        extend((feed.symbol, text.price, text.volume, text.bid, text.ask, text.timestamp,
                text.received_at, ingested_at, feed.source, feed.worker_id,
                encode(feed.metadata).decode()))  # fmt: skip
    return params


def to_row(feed: PriceFeed, ingested_at: str) -> tuple[Any, ...]:
    """A feed as the parameters of the one-row ``INSERT``."""
    return tuple(feed_params((feed,), ingested_at))


def statement_rows(rows: int, sizes: Sequence[int]) -> list[int]:
    """The statements' sizes for ``rows`` rows: the largest size as often as it fits, then the
    smallest size that holds the rest (``sizes`` is descending and ends with 1). The last
    statement is padded with copies of the last row, which its unique key ignores: a padded
    row costs SQLite an index probe, a statement more would cost a wait for the GIL."""
    largest = sizes[0]
    full, rest = divmod(rows, largest)
    return [largest] * full + ([min(s for s in sizes if s >= rest)] if rest else [])


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
        self.migrations = migrations
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)
        self._opening = trio.Lock()
        self._row_sizes: tuple[int, ...] = ROW_SIZES  # cut to the writer connection's limit
        self.rows_written = 0
        self.batches_written = 0
        self.snapshots_written = 0
        self.ftso_answers_written = 0
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
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               cached_statements=CACHED_STATEMENTS)  # fmt: skip
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._row_sizes = tuple(n for n in ROW_SIZES if n * WIDTH <= limit)
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
        def insert(conn: sqlite3.Connection) -> int:
            params = feed_params(feeds, format_time(utc_now()))
            return insert_feeds(conn, self._row_sizes, params)

        added = await self._in_writer(insert)
        self.rows_written += added
        self.batches_written += 1
        self.last_write_at = utc_now()
        return added

    async def write_snapshots(self, snapshots: Sequence[Snapshot]) -> int:
        rows = [snapshot_row(s) for s in snapshots]  # a bad body fails here, before any write
        added = await self._write_many(INSERT_SNAPSHOT, lambda: rows)
        self.snapshots_written += added
        return added

    async def record_ftso_round(self, answers: Sequence[FtsoAnswer]) -> int:
        rows = [answer_row(a) for a in answers]
        written = await self._write_many(UPSERT_ANSWER, lambda: rows)
        self.ftso_answers_written += written
        return written

    async def _write_many(self, statement: str, rows: Callable[[], list[tuple[Any, ...]]]) -> int:
        """``statement`` for each of ``rows()`` in one transaction; the rows changed."""
        return await self._in_writer(lambda conn: _execute_many(conn, statement, rows()))

    async def _in_writer(self, write: Callable[[sqlite3.Connection], int]) -> int:
        """``write`` on the writer connection, in a worker thread under the write limiter."""
        if self._writer is None:
            await self.open()  # the store was not there at start: it is now, or this raises
        conn = self._require(self._writer)
        return await self._in_thread(self._write_lock, lambda: write(conn))

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
        for conn, lock in ((self._writer, self._write_lock), (self._reader, self._read_lock)):
            if conn is not None:
                await self._in_thread(lock, conn.close)
        self._writer = self._reader = None

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            kind=self.kind,
            path=str(self.path),
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


def _execute_many(conn: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> int:
    """``statement`` for each row in one transaction; the rows it changed."""
    return _in_transaction(conn, lambda: conn.executemany(statement, rows))


def insert_feeds(conn: sqlite3.Connection, sizes: Sequence[int], params: list[Any]) -> int:
    """The rows in ``params`` (``feed_params``) in one transaction, by as few multi-row
    ``INSERTS`` as ``statement_rows`` gives; the rows added (a duplicate is ignored). A single
    statement is atomic alone: no ``BEGIN``/``COMMIT`` (two more steps) around it."""
    statements = statement_rows(len(params) // WIDTH, sizes)

    def insert() -> None:
        start = 0
        for size in statements:
            end = start + size * WIDTH
            chunk = params[start:end]
            if short := end - start - len(chunk):  # the last statement: pad with its last row
                chunk += chunk[-WIDTH:] * (short // WIDTH)
            conn.execute(INSERTS[size], chunk)
            start = end

    if len(statements) > 1:
        return _in_transaction(conn, insert)
    before = conn.total_changes
    insert()  # nothing, or one statement: atomic alone
    return conn.total_changes - before


def _in_transaction(conn: sqlite3.Connection, body: Callable[[], object]) -> int:
    """``body()`` between ``BEGIN`` and ``COMMIT`` (``ROLLBACK`` if it raises); rows changed."""
    before = conn.total_changes
    conn.execute("BEGIN")
    try:
        body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return conn.total_changes - before
