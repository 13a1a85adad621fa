"""TimescaleDB, when the server has it: ``price_feeds`` as a hypertable, compression and
retention from ``[storage]``, and continuous aggregates of 1m / 1h / 1d candles.

Run at every start after the migrations, and idempotent: policies are replaced so that a
changed config takes effect. Without the extension (not in Debian's packages; README.md says
how to install it) nothing here runs and the same queries work on the plain table. A step the
server refuses (no privilege to create the extension, say) is logged and leaves Chrono on the
plain path: TimescaleDB is an optimisation, never a reason not to store.

The aggregates keep one row per (bucket, symbol, source) with the bucket's first and last feed
times, so candles over all sources can be combined from them exactly (``first``/``last`` by
time); ``materialized_only = false`` adds what the refresh policy has not reached yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from chrono.store.pg_pool import Connection

log = logging.getLogger(__name__)

# interval name -> (bucket width, refresh start offset, refresh end offset, refresh every)
AGGREGATES = {
    "1m": ("1 minute", "2 hours", "1 minute", "1 minute"),
    "1h": ("1 hour", "2 days", "1 hour", "30 minutes"),
    "1d": ("1 day", "4 days", "1 day", "1 hour"),
}
MIN_RETENTION_DAYS = 5  # raw data must outlive the widest refresh window (4 days), or the
# refresh would empty the candles whose feeds retention dropped.

AGGREGATE = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {view}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL {width}, timestamp) AS bucket, symbol, source,
       first(price, timestamp) AS open, max(price) AS high, min(price) AS low,
       last(price, timestamp) AS close, last(volume, timestamp) AS volume,
       count(*) AS num_feeds, min(timestamp) AS first_at, max(timestamp) AS last_at
FROM price_feeds GROUP BY bucket, symbol, source
WITH NO DATA
"""


@dataclass(frozen=True, slots=True)
class TimescaleSettings:
    mode: str = "auto"  # "auto": use it when the server has it; "off": plain tables
    compress_after_days: int = 7  # 0: no compression
    retention_days: int = 0  # 0: keep raw feeds forever


@dataclass(slots=True)
class TimescaleState:
    active: bool = False  # price_feeds is a hypertable
    aggregates: set[str] = field(default_factory=set)  # intervals read from aggregates
    detail: str = "not checked"


def aggregate_view(interval: str) -> str:
    return f"price_candles_{interval}"


def setup_timescale(conn: Connection, settings: TimescaleSettings) -> TimescaleState:
    """Make ``price_feeds`` a hypertable with policies and aggregates, if the server can."""
    if settings.mode == "off":
        return TimescaleState(detail="off in config")
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        return TimescaleState(detail="extension not installed on the server: plain tables")
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(
            "SELECT create_hypertable('price_feeds', 'timestamp',"
            " if_not_exists => TRUE, migrate_data => TRUE)"
        )
    except psycopg.Error as exc:
        log.warning("TimescaleDB not used: %s", exc)
        return TimescaleState(detail=f"not used: {exc}")
    state = TimescaleState(active=True, detail="hypertable")
    for step in (_compression, _retention):
        try:
            step(conn, settings)
        except psycopg.Error as exc:
            log.warning("TimescaleDB %s not set: %s", step.__name__.strip("_"), exc)
    for interval in AGGREGATES:
        try:
            _aggregate(conn, interval)
        except psycopg.Error as exc:
            log.warning("TimescaleDB aggregate %s not made: %s", interval, exc)
        else:
            state.aggregates.add(interval)
    return state


def _compression(conn: Connection, settings: TimescaleSettings) -> None:
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'price_feeds'"
    ).fetchone()
    if settings.compress_after_days > 0 and not (row and row[0]):
        # Once: the settings cannot change while chunks are compressed. Every column of the
        # feed key is a segment or order column, as TimescaleDB requires of a unique key.
        conn.execute(
            "ALTER TABLE price_feeds SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'symbol, source',"
            " timescaledb.compress_orderby = 'timestamp DESC, price')"
        )
    conn.execute("SELECT remove_compression_policy('price_feeds', if_exists => TRUE)")
    if settings.compress_after_days > 0:
        conn.execute(
            "SELECT add_compression_policy('price_feeds', make_interval(days => %s))",
            (settings.compress_after_days,),
        )


def _retention(conn: Connection, settings: TimescaleSettings) -> None:
    conn.execute("SELECT remove_retention_policy('price_feeds', if_exists => TRUE)")
    if settings.retention_days > 0:
        conn.execute(
            "SELECT add_retention_policy('price_feeds', make_interval(days => %s))",
            (settings.retention_days,),
        )


def _aggregate(conn: Connection, interval: str) -> None:
    width, start, end, every = AGGREGATES[interval]
    view = sql.Identifier(aggregate_view(interval))
    # CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) refuses a transaction block:
    # the pool's connections are in autocommit.
    conn.execute(sql.SQL(AGGREGATE).format(view=view, width=sql.Literal(width)))
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s, start_offset => %s::interval,"
        " end_offset => %s::interval, schedule_interval => %s::interval, if_not_exists => TRUE)",
        (aggregate_view(interval), start, end, every),
    )
