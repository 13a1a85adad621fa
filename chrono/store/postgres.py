"""PostgreSQL, the production store (TimescaleDB when the server has it).

Writes: one writer connection; each batch is one transaction that binary-``COPY``s the feeds
into a session-local staging table and moves them into ``price_feeds`` with ``ON CONFLICT DO
NOTHING`` on the feed key (source, symbol, timestamp, price): COPY's speed, and a batch that
is retried or replayed after an outage adds no row twice. Reads: a small pool of their own, so
the API never waits behind a write.

Prices are ``numeric`` (the scale is kept: ``67234.56000000`` reads back with its zeros), times
``timestamptz``; sessions run in UTC. The schema comes from ``MIGRATIONS``, applied under an
advisory lock so that two Chrono processes starting together migrate once. Needs PostgreSQL 14
or newer (``date_bin``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
import trio
from psycopg.conninfo import make_conninfo
from psycopg.sql import Composed
from psycopg.types.json import set_json_dumps

from chrono.model import PriceFeed, utc_now
from chrono.store.base import INTERVALS, MAX_RANGE_FEEDS, Candle
from chrono.store.migrations import CURRENT_VERSION, VERSION_TABLE, Migration, apply_pending
from chrono.store.pg_pool import Connection, ConnectionPool
from chrono.store.pg_sql import (
    BETWEEN,
    CANDLES,
    CANDLES_TIMESCALE,
    COPY_INCOMING,
    INCOMING_DDL,
    INCOMING_TYPES,
    LATEST,
    LATEST_BY_SOURCE,
    MOVE_INCOMING,
    from_aggregate,
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
        added = await self._writer.run(lambda conn: _copy_in(conn, feeds))
        self.rows_written += added
        self.batches_written += 1
        self.last_write_at = utc_now()
        return added

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        return await self._feeds(LATEST, {"symbols": list(symbols), "source": source})

    async def latest_by_source(self, symbols: Sequence[str], *, since: datetime) -> list[PriceFeed]:
        return await self._feeds(LATEST_BY_SOURCE, {"symbols": list(symbols), "since": since})

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

    async def candles(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        interval: str,
        *,
        source: str | None = None,
    ) -> list[Candle]:
        width = timedelta(seconds=INTERVALS[interval])
        args: dict[str, Any] = {"symbol": symbol, "start": start, "end": end, "source": source}
        args["width"] = width
        query: str | Composed
        if interval in self.timescale.aggregates:
            query = from_aggregate(aggregate_view(interval))
        else:
            query = CANDLES_TIMESCALE if self.timescale.active else CANDLES

        def run(conn: Connection) -> list[Candle]:
            return [_candle(row) for row in conn.execute(query, args)]

        return await self._read(run)

    async def aclose(self) -> None:
        await self._writer.aclose()
        await self._readers.aclose()
        self._ready = False

    def statistics(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": masked_url(self.url),
            "timescaledb": self.timescale.detail,
            "rows_written": self.rows_written,
            "batches_written": self.batches_written,
            "last_write_at": self.last_write_at.isoformat() if self.last_write_at else None,
            "connects": self._writer.connects + self._readers.connects,
            "broken_connections": self._writer.broken + self._readers.broken,
        }

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


def _copy_in(conn: Connection, feeds: Sequence[PriceFeed]) -> int:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(COPY_INCOMING) as copy:
            copy.set_types(INCOMING_TYPES)
            for feed in feeds:
                copy.write_row(copy_row(feed))
        cur.execute(MOVE_INCOMING)
        return cur.rowcount


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
