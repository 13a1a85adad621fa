"""SQLite's schema and its writes: what runs on the one writer connection.

The writer connection lives in its own process (``chrono.store.sqlite_child``), so this module
imports nothing but ``sqlite3`` and the migrations: a child starts in the time Python does.
The schema comes from ``MIGRATIONS``, applied when the writer connection opens; since version
3 one unique index on (symbol, timestamp, source, price) is both the feed key and the index
every read searches. A write of feeds is one transaction of multi-row ``INSERT OR IGNORE``
statements of a few fixed sizes (``ROW_SIZES``), each prepared once per connection, from one
flat parameter list (``statement_rows``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from chrono.store.migrations import VERSION_TABLE, Migration, apply_pending

# How long a write waits for another process's lock before failing (and being retried by the
# writer). Short, so that an aborted drain is not held up by a write waiting on a lock.
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


def statement_rows(rows: int, sizes: Sequence[int]) -> list[int]:
    """The statements' sizes for ``rows`` rows: the largest size as often as it fits, then the
    smallest size that holds the rest (``sizes`` is descending and ends with 1). The last
    statement is padded with copies of the last row, which its unique key ignores: a padded
    row costs SQLite an index probe, a statement more would cost a wait for the GIL."""
    largest = sizes[0]
    full, rest = divmod(rows, largest)
    return [largest] * full + ([min(s for s in sizes if s >= rest)] if rest else [])


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), its statements cached."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           cached_statements=CACHED_STATEMENTS)  # fmt: skip
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


# Pages of WAL between checkpoints (SQLite's default 1,000, 4 MB): a checkpoint copies the
# WAL's pages into the database file, and at 100,000 feeds/s the default ran one every few
# writes; 10,000 (40 MB of WAL) cut the writer's CPU per row by a fifth (bench/README.md).
WAL_CHECKPOINT_PAGES = 10_000


def open_writer(
    path: Path, migrations: Sequence[Migration]
) -> tuple[sqlite3.Connection, tuple[int, ...]]:
    """The writer connection (WAL, ``synchronous=NORMAL``), migrated, and the ``ROW_SIZES``
    that fit its parameter limit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        migrate(conn, migrations, where=str(path))
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except BaseException:
        conn.close()
        raise
    return conn, tuple(n for n in ROW_SIZES if n * WIDTH <= limit)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *, where: str) -> None:
    """Apply the pending migrations in one transaction (SQLite's DDL is transactional)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        apply_pending(conn, migrations, version_ddl=VERSION_DDL, record=RECORD_VERSION,
                      where=where)  # fmt: skip
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def execute_many(conn: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> int:
    """``statement`` for each row in one transaction; the rows it changed."""
    return in_transaction(conn, lambda: conn.executemany(statement, rows))


def row_params(columns: Sequence[Any]) -> list[Any]:
    """The flat parameters (``WIDTH`` a row, in ``INSERT`` order) of ``feed_columns``'s
    ``ingested_at`` and columns."""
    (ingested_at, symbols, prices, volumes, bids, asks, timestamps, received, sources, workers,
     metadata) = columns  # fmt: skip
    rows = zip(symbols, prices, volumes, bids, asks, timestamps, received, repeat(ingested_at),
               sources, workers, metadata)  # fmt: skip
    return list(chain.from_iterable(rows))


def insert_feeds(conn: sqlite3.Connection, sizes: Sequence[int], params: list[Any]) -> int:
    """The rows in ``params`` (``row_params``) in one transaction, by as few multi-row
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
        return in_transaction(conn, insert)
    before = conn.total_changes
    insert()  # nothing, or one statement: atomic alone
    return conn.total_changes - before


def in_transaction(conn: sqlite3.Connection, body: Callable[[], object]) -> int:
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
