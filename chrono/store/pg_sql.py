"""The PostgreSQL store's statements, in one place (values always bound, never formatted in).

A ``NULL`` source parameter means every source. Candle queries come in three forms that
answer the same question: plain SQL (``date_bin`` from the UTC epoch), TimescaleDB's
``time_bucket`` with ``first``/``last``, and a read of a continuous aggregate, whose rows per
(bucket, source) are combined by their first and last feed times.
"""

from __future__ import annotations

from psycopg import sql

COLUMNS = (
    "symbol", "price", "volume", "bid", "ask", "timestamp", "received_at", "source",
    "worker_id", "metadata",
)  # fmt: skip
_COLS = ", ".join(COLUMNS)

# The staging table of a writer session: COPY fills it, one INSERT moves the new feeds on.
INCOMING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS price_feeds_incoming (
    symbol text, price numeric, volume numeric, bid numeric, ask numeric,
    timestamp timestamptz, received_at timestamptz, source text, worker_id text, metadata jsonb
) ON COMMIT DELETE ROWS
"""
INCOMING_TYPES = [
    "text", "numeric", "numeric", "numeric", "numeric", "timestamptz", "timestamptz", "text",
    "text", "jsonb",
]  # fmt: skip
COPY_INCOMING = f"COPY price_feeds_incoming ({_COLS}) FROM STDIN (FORMAT BINARY)"
MOVE_INCOMING = f"""
INSERT INTO price_feeds ({_COLS}) SELECT {_COLS} FROM price_feeds_incoming
ON CONFLICT (source, symbol, timestamp, price) DO NOTHING
"""

LATEST = f"""
SELECT f.* FROM unnest(%(symbols)s::text[]) WITH ORDINALITY AS s(symbol, n)
CROSS JOIN LATERAL (
    SELECT {_COLS} FROM price_feeds p
    WHERE p.symbol = s.symbol AND (%(source)s::text IS NULL OR p.source = %(source)s)
    ORDER BY p.timestamp DESC LIMIT 1
) f
ORDER BY s.n
"""
LATEST_BY_SOURCE = f"""
SELECT DISTINCT ON (symbol, source) {_COLS} FROM price_feeds
WHERE symbol = ANY(%(symbols)s::text[]) AND timestamp >= %(since)s
ORDER BY symbol, source, timestamp DESC
"""
BETWEEN = f"""
SELECT {_COLS} FROM price_feeds
WHERE symbol = %(symbol)s AND timestamp >= %(start)s AND timestamp < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
ORDER BY timestamp, id LIMIT %(limit)s
"""

_RANGE = """
FROM price_feeds
WHERE symbol = %(symbol)s AND timestamp >= %(start)s AND timestamp < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
GROUP BY bucket ORDER BY bucket
"""
CANDLES = (
    """
SELECT date_bin(%(width)s, timestamp, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
       (array_agg(price ORDER BY timestamp, id))[1], max(price), min(price),
       (array_agg(price ORDER BY timestamp DESC, id DESC))[1],
       (array_agg(volume ORDER BY timestamp DESC, id DESC))[1], count(*)
"""
    + _RANGE
)
CANDLES_TIMESCALE = (
    """
SELECT time_bucket(%(width)s, timestamp) AS bucket,
       first(price, timestamp), max(price), min(price), last(price, timestamp),
       last(volume, timestamp), count(*)
"""
    + _RANGE
)
CANDLES_FROM_AGGREGATE = """
SELECT bucket, first(open, first_at), max(high), min(low), last(close, last_at),
       last(volume, last_at), sum(num_feeds)::bigint
FROM {view}
WHERE symbol = %(symbol)s AND bucket >= %(start)s AND bucket < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
GROUP BY bucket ORDER BY bucket
"""


def from_aggregate(view: str) -> sql.Composed:
    return sql.SQL(CANDLES_FROM_AGGREGATE).format(view=sql.Identifier(view))
