"""PostgreSQL, the production store (TimescaleDB when the server has it).

Writes: one writer connection; each batch is one transaction. Almost every batch is new feeds
only (the pipeline drops repeats it has seen), so the batch is ``COPY``d straight into
``price_feeds`` under a savepoint: the rows cross once, with no staging table and no ``INSERT
... SELECT`` (the direct path). A batch that meets the feed key (source, symbol, timestamp,
price), a feed already stored (a batch written again after its commit's answer was lost, or
replayed from the spool) or one feed twice in the batch, fails that COPY with a unique
violation; the transaction rolls back to the savepoint and takes the staging path: ``COPY``
into the session's temp table ``price_feeds_incoming``, then ``INSERT ... SELECT ... ON
CONFLICT DO NOTHING``, which adds only the new feeds. Either way a batch is all or nothing and
``write()`` returns exactly the rows it added; a batch written twice adds no row twice. The
fallback costs the failed COPY (its rows are sent twice, and those it inserted before the
conflict are left dead for vacuum), paid only by the rare batch that needs it. A TimescaleDB
hypertable keeps the feed key as a unique index per chunk (the key holds the time), so both
paths work on it unchanged. A batch of ``Feeds`` (the pipeline's: columns of the store's
texts) or whose feeds all carry their texts (``PriceFeed.text``) is COPYd in text format,
any other in binary: measured on 10,000-row batches, binary costs the writer about 4 us of CPU
per row (dumping Decimals and datetimes), texts already made about 1.2 us, formatting them here
about 5 us. Reads: a small pool of their own, so the API never waits behind a write.

Prices are ``numeric`` (the scale is kept: ``67234.56000000`` reads back with its zeros), times
``timestamptz``; sessions run in UTC. The schema comes from ``MIGRATIONS``, applied under an
advisory lock so that two Chrono processes starting together migrate once. Needs PostgreSQL 14
or newer (``date_bin``).

Snapshot and FTSO bodies are ``json``, not ``jsonb``: ``json`` keeps the text as given (key
order, spacing, number spelling), which the API hands back byte for byte; nothing queries
inside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
import trio
from psycopg import Cursor
from psycopg.conninfo import make_conninfo
from psycopg.errors import UniqueViolation
from psycopg.sql import Composed
from psycopg.types.json import set_json_dumps

from chrono.feeds import Feeds
from chrono.model import FeedText, PriceFeed, utc_now
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
from chrono.store.migrations import CURRENT_VERSION, VERSION_TABLE, Migration, apply_pending
from chrono.store.pg_pool import Connection, ConnectionPool
from chrono.store.pg_sql import (
    BETWEEN,
    CANDLES,
    CANDLES_TIMESCALE,
    COPY_FEEDS,
    COPY_FEEDS_TEXT,
    COPY_INCOMING,
    COPY_INCOMING_TEXT,
    FTSO_ROUND,
    INCOMING_DDL,
    INCOMING_TYPES,
    INSERT_SNAPSHOT,
    LATEST,
    LATEST_BY_SOURCE,
    MOVE_INCOMING,
    PAGE,
    SNAPSHOTS_AT,
    SNAPSHOTS_BETWEEN,
    UPSERT_ANSWER,
    from_aggregate,
)
from chrono.store.snapshots import (
    FtsoAnswer,
    Snapshot,
    json_text,
    optional_json_bytes,
    optional_json_text,
)
from chrono.store.timescale import (
    TimescaleSettings,
    TimescaleState,
    aggregate_view,
    setup_timescale,
)
from chrono.store.urls import masked_url

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATION_LOCK_ID = 0x6368726F6E6F  # "chrono": one advisory lock for every migrating process
READ_STATEMENT_TIMEOUT_MS = 30_000  # an API query that runs longer is cancelled by the server

MIGRATIONS = (
    Migration(
        1,
        "price_feeds keyed by (source, symbol, timestamp, price), newest first per symbol",
        (
            # No primary key on id: a TimescaleDB hypertable's unique keys must hold the time.
            """
            CREATE TABLE IF NOT EXISTS price_feeds (
                id          bigint GENERATED ALWAYS AS IDENTITY,
                symbol      text NOT NULL,
                price       numeric NOT NULL,
                volume      numeric,
                bid         numeric,
                ask         numeric,
                timestamp   timestamptz NOT NULL,
                received_at timestamptz NOT NULL,
                ingested_at timestamptz NOT NULL DEFAULT now(),
                source      text NOT NULL,
                worker_id   text NOT NULL,
                metadata    jsonb NOT NULL DEFAULT '{}',
                CONSTRAINT price_feeds_feed_key PRIMARY KEY (source, symbol, timestamp, price)
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
            # Small tables, plain on TimescaleDB too. json, not jsonb: the body as written.
            """
            CREATE TABLE aggregated_prices (
                symbol        text NOT NULL,
                timestamp     timestamptz NOT NULL,
                price         numeric,
                status        text NOT NULL,
                method        text NOT NULL,
                num_sources   integer NOT NULL,
                inputs_digest text NOT NULL,
                body          json NOT NULL,
                CONSTRAINT aggregated_prices_key PRIMARY KEY (symbol, timestamp)
            )
            """,
            # name in code point order ("C"), as SQLite sorts it.
            """
            CREATE TABLE ftso_rounds (
                voting_round_id bigint NOT NULL,
                category        integer NOT NULL,
                name            text COLLATE "C" NOT NULL,
                value           numeric,
                answered_at     timestamptz NOT NULL,
                body            json,
                CONSTRAINT ftso_rounds_key PRIMARY KEY (voting_round_id, category, name)
            )
            """,
        ),
    ),
)

VERSION_DDL = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
RECORD_VERSION = f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (%s, %s)"
VERSION_TABLE_EXISTS = f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL"


class PostgresStore:
    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
        timescale: TimescaleSettings | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.url = url
        self.migrations = migrations
        self.timescale_settings = timescale or TimescaleSettings()
        self.timescale = TimescaleState()
        common: dict[str, str | int] = {
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": "chrono",
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": round(connect_timeout_s * 2000),  # unacked sends fail, not hang
        }
        self._writer = ConnectionPool(
            make_conninfo(url, options="-c TimeZone=UTC", **common), 1, setup=_writer_setup
        )
        reader_options = f"-c TimeZone=UTC -c statement_timeout={READ_STATEMENT_TIMEOUT_MS}"
        self._readers = ConnectionPool(
            make_conninfo(url, options=reader_options, **common), pool_size
        )
        self._opening = trio.Lock()
        self._ready = False
        self.rows_written = 0
        self.batches_written = 0
        self.direct_batches = 0  # batches COPYd straight into price_feeds
        self.staged_batches = 0  # batches that met a stored feed: the staging table's path
        self.snapshots_written = 0
        self.ftso_answers_written = 0
        self.last_write_at: datetime | None = None

    async def open(self) -> None:
        async with self._opening:
            if not self._ready:
                self.timescale = await self._writer.run(self._migrate)
                log.info("postgresql store ready: timescaledb %s", self.timescale.detail)
                self._ready = True

    def _migrate(self, conn: Connection) -> TimescaleState:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            apply_pending(conn, self.migrations, version_ddl=VERSION_DDL,
                          record=RECORD_VERSION, where=masked_url(self.url))  # fmt: skip
        return setup_timescale(conn, self.timescale_settings)

    async def schema_version(self) -> int:
        def query(conn: Connection) -> int:
            if not _one(conn, VERSION_TABLE_EXISTS)[0]:
                return 0
            version: int = _one(conn, CURRENT_VERSION)[0]
            return version

        return await self._readers.run(query)

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        await self.open()  # at once when open; a store that was down at start opens now
        added, direct = await self._writer.run(lambda conn: _copy_in(conn, feeds))
        self.rows_written += added
        self.batches_written += 1
        if direct:
            self.direct_batches += 1
        else:
            self.staged_batches += 1
        self.last_write_at = utc_now()
        return added

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        return await self._feeds(LATEST, {"symbols": list(symbols), "source": source})

    async def write_snapshots(self, snapshots: Sequence[Snapshot]) -> int:
        rows = [snapshot_row(s) for s in snapshots]  # a bad body fails here, before any write
        await self.open()
        added = await self._writer.run(lambda conn: _execute_many(conn, INSERT_SNAPSHOT, rows))
        self.snapshots_written += added
        return added

    async def record_ftso_round(self, answers: Sequence[FtsoAnswer]) -> int:
        rows = [answer_row(a) for a in answers]
        await self.open()
        written = await self._writer.run(lambda conn: _execute_many(conn, UPSERT_ANSWER, rows))
        self.ftso_answers_written += written
        return written

    async def latest_by_source(
        self, symbols: Sequence[str], *, since: datetime, until: datetime | None = None
    ) -> list[PriceFeed]:
        args = {"symbols": list(symbols), "since": since, "until": until}
        return await self._feeds(LATEST_BY_SOURCE, args)

    async def feeds_between(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        source: str | None = None,
        limit: int = MAX_RANGE_FEEDS,
    ) -> list[PriceFeed]:
        args = {"symbol": symbol, "start": start, "end": end, "source": source, "limit": limit}
        return await self._feeds(BETWEEN, args)

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
        args = {"symbol": symbol, "from": max(start, key.timestamp), "end": end,
                "source": source, "after_at": key.timestamp, "after_id": key.id,
                "limit": check_limit(limit) + 1}  # fmt: skip

        def run(conn: Connection) -> FeedPage:
            rows = conn.execute(PAGE, args)
            return feed_page([(RowKey(r[0], r[1]), _feed(r[2:])) for r in rows], limit)

        return await self._read(run)

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
        width = timedelta(seconds=INTERVALS[interval])
        if limit is not None:
            check_limit(limit)
        args: dict[str, Any] = {"symbol": symbol, "start": start, "end": end, "source": source}
        args |= {"width": width, "limit": limit}
        query: str | Composed
        if interval in self.timescale.aggregates:
            query = from_aggregate(aggregate_view(interval))
        else:
            query = CANDLES_TIMESCALE if self.timescale.active else CANDLES

        def run(conn: Connection) -> list[Candle]:
            return [_candle(row) for row in conn.execute(query, args)]

        return await self._read(run)

    async def snapshots_at(self, symbols: Sequence[str], at: datetime) -> list[Snapshot]:
        args = {"symbols": list(symbols), "at": at}
        return await self._read(
            lambda conn: [_snapshot(r) for r in conn.execute(SNAPSHOTS_AT, args)]
        )

    async def snapshots_between(
        self, symbol: str, start: datetime, end: datetime, *, limit: int
    ) -> list[Snapshot]:
        args = {"symbol": symbol, "start": start, "end": end, "limit": check_limit(limit)}
        return await self._read(
            lambda conn: [_snapshot(r) for r in conn.execute(SNAPSHOTS_BETWEEN, args)]
        )

    async def ftso_round(self, voting_round_id: int) -> list[FtsoAnswer]:
        args = {"round": voting_round_id}
        return await self._read(lambda conn: [_answer(r) for r in conn.execute(FTSO_ROUND, args)])

    async def aclose(self) -> None:
        await self._writer.aclose()
        await self._readers.aclose()
        self._ready = False

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            kind=self.kind,
            url=masked_url(self.url),
            timescaledb=self.timescale.detail,
            rows_written=self.rows_written,
            batches_written=self.batches_written,
            snapshots_written=self.snapshots_written,
            ftso_answers_written=self.ftso_answers_written,
            last_write_at=self.last_write_at,
            connects=self._writer.connects + self._readers.connects,
            broken_connections=self._writer.broken + self._readers.broken,
        )

    async def _read(self, query: Callable[[Connection], T]) -> T:
        await self.open()
        return await self._readers.run(query)

    async def _feeds(self, query: str, args: dict[str, Any]) -> list[PriceFeed]:
        return await self._read(lambda conn: [_feed(row) for row in conn.execute(query, args)])


_json = msgspec.json.Encoder()


def _writer_setup(conn: Connection) -> None:
    """Each writer session: JSON by msgspec, and its own staging table for COPY."""
    set_json_dumps(_json.encode, context=conn)
    conn.execute(INCOMING_DDL)


def copy_row(f: PriceFeed) -> tuple[Any, ...]:
    """A feed as one row of ``COPY`` (``COLUMNS`` order, ``INCOMING_TYPES``)."""
    return (f.symbol, f.price, f.volume, f.bid, f.ask, f.timestamp, f.received_at, f.source,
            f.worker_id, f.metadata)  # fmt: skip


def text_row(f: PriceFeed) -> tuple[Any, ...]:
    """A feed that has its texts as one row of text-format ``COPY`` (``COLUMNS`` order)."""
    t: FeedText = f.text  # type: ignore[assignment]  # the caller checked every feed has one
    return (f.symbol, t.price, t.volume, t.bid, t.ask, t.timestamp, t.received_at, f.source,
            f.worker_id, _json.encode(f.metadata).decode())  # fmt: skip


def _copy_in(conn: Connection, feeds: Sequence[PriceFeed]) -> tuple[int, bool]:
    """One batch in one transaction: (rows added, whether it went by the direct path).

    COPY straight into ``price_feeds`` under a savepoint; on a unique violation of the feed
    key, back to the savepoint and through the staging table, which skips the feeds already
    stored (module docstring). Any other error rolls the whole transaction back.
    """
    texts = isinstance(feeds, Feeds) or all(f.text is not None for f in feeds)
    direct, staged = (COPY_FEEDS_TEXT, COPY_INCOMING_TEXT) if texts else (COPY_FEEDS, COPY_INCOMING)
    with conn.transaction(), conn.cursor() as cur:
        try:
            with conn.transaction():  # SAVEPOINT: a conflict undoes this COPY only
                _copy(cur, direct, feeds, texts)
            return cur.rowcount, True  # COPY inserts every row or fails: all are new
        except UniqueViolation:
            pass
        _copy(cur, staged, feeds, texts)
        cur.execute(MOVE_INCOMING)
        return cur.rowcount, False


def _copy(cur: Cursor[Any], statement: str, feeds: Sequence[PriceFeed], texts: bool) -> None:
    with cur.copy(statement) as copy:
        write = copy.write_row
        if isinstance(feeds, Feeds):  # the pipeline's: its columns are the rows' texts
            for row in zip(*feeds.row_columns(), strict=True):
                write(row)
        elif texts:
            for feed in feeds:
                write(text_row(feed))
        else:
            copy.set_types(INCOMING_TYPES)
            for feed in feeds:
                write(copy_row(feed))


def _execute_many(conn: Connection, statement: str, rows: list[tuple[Any, ...]]) -> int:
    """``statement`` for each row in one transaction; the rows it inserted or updated."""
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, rows)
        return cur.rowcount


def snapshot_row(s: Snapshot) -> tuple[Any, ...]:
    """A snapshot as the parameters of ``INSERT_SNAPSHOT``; ``ValueError`` if the body is not
    JSON."""
    return (s.symbol, s.timestamp, s.price, s.status, s.method, s.num_sources, s.inputs_digest,
            json_text(s.body))  # fmt: skip


def _snapshot(row: tuple[Any, ...]) -> Snapshot:
    symbol, ts, price, status, method, num_sources, digest, body = row
    return Snapshot(
        symbol=symbol, timestamp=ts, price=price, status=status, method=method,
        num_sources=num_sources, inputs_digest=digest, body=body.encode(),
    )  # fmt: skip


def answer_row(a: FtsoAnswer) -> tuple[Any, ...]:
    """An answer as the parameters of ``UPSERT_ANSWER``."""
    return (a.voting_round_id, a.category, a.name, a.value, a.answered_at,
            optional_json_text(a.body))  # fmt: skip


def _answer(row: tuple[Any, ...]) -> FtsoAnswer:
    round_id, category, name, value, answered_at, body = row
    return FtsoAnswer(
        voting_round_id=round_id, category=category, name=name, value=value,
        answered_at=answered_at, body=optional_json_bytes(body),
    )  # fmt: skip


def _one(conn: Connection, query: str) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate or a scalar: always one row
    return row


def _feed(row: tuple[Any, ...]) -> PriceFeed:
    symbol, price, volume, bid, ask, ts, received, source, worker, meta = row
    return PriceFeed(
        symbol=symbol, price=price, volume=volume, bid=bid, ask=ask, timestamp=ts,
        received_at=received, source=source, worker_id=worker, metadata=meta,
    )  # fmt: skip


def _candle(row: tuple[Any, ...]) -> Candle:
    bucket, open_, high, low, close, volume, count = row
    return Candle(
        timestamp=bucket, open=open_, high=high, low=low, close=close, volume=volume,
        num_feeds=count,
    )  # fmt: skip
