"""The PostgreSQL store's statements, in one place (values always bound, never formatted in).

A ``NULL`` source parameter means every source, a ``NULL`` limit no limit. Candle queries come
in three forms that answer the same question: plain SQL (``date_bin`` from the UTC epoch),
TimescaleDB's ``time_bucket`` with ``first``/``last``, and a read of a continuous aggregate,
whose rows per (bucket, source) are combined by their first and last feed times.

Snapshot and FTSO bodies are ``json`` columns (the text as given, checked to be JSON), written
as ``%s::json`` from text and read as ``body::text``: psycopg would otherwise parse them.
"""

from __future__ import annotations

from psycopg import sql

COLUMNS = (
    "symbol", "price", "volume", "bid", "ask", "timestamp", "received_at", "source",
    "worker_id", "metadata",
)  # fmt: skip
_COLS = ", ".join(COLUMNS)

# A batch is COPYd straight into price_feeds under a savepoint (COPY_FEEDS): no
# second copy of the rows, no INSERT ... SELECT. Only a batch that meets the feed key (a feed
# already stored, or twice in the batch: a unique violation) is rolled back to the savepoint
# and staged instead: COPY fills the session's staging table, one INSERT moves the new feeds on.
# Each in two formats: binary (psycopg dumps the Decimals and datetimes) and text, for a batch
# whose feeds all carry their texts already (``PriceFeed.text``): then nothing is formatted
# and the server parses the texts, about a third of the writer's per-row CPU of binary.
COPY_FEEDS = f"COPY price_feeds ({_COLS}) FROM STDIN (FORMAT BINARY)"
COPY_FEEDS_TEXT = f"COPY price_feeds ({_COLS}) FROM STDIN"
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
COPY_INCOMING_TEXT = f"COPY price_feeds_incoming ({_COLS}) FROM STDIN"
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
# Of feeds of one source at one time, the last inserted (the highest id). The sources are
# walked along the feed key (source, symbol, timestamp, price) one index probe each, then each
# (source, symbol)'s newest feed is one more probe: a few lookups, however many feeds the
# window holds (DISTINCT ON read and sorted every one of them).
LATEST_BY_SOURCE = f"""
WITH RECURSIVE sources(source) AS (
    (SELECT source FROM price_feeds ORDER BY source LIMIT 1)
    UNION ALL
    SELECT (SELECT p.source FROM price_feeds p WHERE p.source > s.source ORDER BY p.source LIMIT 1)
    FROM sources s WHERE s.source IS NOT NULL
)
SELECT f.* FROM sources s
CROSS JOIN unnest(%(symbols)s::text[]) AS wanted(symbol)
CROSS JOIN LATERAL (
    SELECT {_COLS} FROM price_feeds p
    WHERE p.source = s.source AND p.symbol = wanted.symbol AND p.timestamp >= %(since)s
      AND (%(until)s::timestamptz IS NULL OR p.timestamp <= %(until)s)
    ORDER BY p.timestamp DESC, p.id DESC LIMIT 1
) f
WHERE s.source IS NOT NULL
ORDER BY f.symbol, f.source
"""
BETWEEN = f"""
SELECT {_COLS} FROM price_feeds
WHERE symbol = %(symbol)s AND timestamp >= %(start)s AND timestamp < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
ORDER BY timestamp, id LIMIT %(limit)s
"""

# Keyset: rows after (timestamp, id); the first page starts after (start, FIRST_ID). ``from``
# is the later of start and the key's time: the index seeks there, the row comparison
# settles ties.
PAGE = f"""
SELECT timestamp, id, {_COLS} FROM price_feeds
WHERE symbol = %(symbol)s AND timestamp >= %(from)s AND timestamp < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
  AND (timestamp, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
ORDER BY timestamp, id LIMIT %(limit)s
"""

_RANGE = """
FROM price_feeds
WHERE symbol = %(symbol)s AND timestamp >= %(start)s AND timestamp < %(end)s
  AND (%(source)s::text IS NULL OR source = %(source)s)
GROUP BY bucket ORDER BY bucket LIMIT %(limit)s::bigint
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
GROUP BY bucket ORDER BY bucket LIMIT %(limit)s::bigint
"""


def from_aggregate(view: str) -> sql.Composed:
    return sql.SQL(CANDLES_FROM_AGGREGATE).format(view=sql.Identifier(view))


_SNAPSHOT_COLS = "symbol, timestamp, price, status, method, num_sources, inputs_digest"
INSERT_SNAPSHOT = f"""
INSERT INTO aggregated_prices ({_SNAPSHOT_COLS}, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json)
ON CONFLICT (symbol, timestamp) DO NOTHING
"""
SNAPSHOTS_AT = """
SELECT a.symbol, a.timestamp, a.price, a.status, a.method, a.num_sources, a.inputs_digest,
       a.body::text
FROM unnest(%(symbols)s::text[]) WITH ORDINALITY AS s(symbol, n)
JOIN aggregated_prices a ON a.symbol = s.symbol AND a.timestamp = %(at)s
ORDER BY s.n
"""
SNAPSHOTS_BETWEEN = f"""
SELECT {_SNAPSHOT_COLS}, body::text FROM aggregated_prices
WHERE symbol = %(symbol)s AND timestamp >= %(start)s AND timestamp < %(end)s
ORDER BY timestamp LIMIT %(limit)s
"""

_ANSWER_COLS = "voting_round_id, category, name, value, answered_at"
UPSERT_ANSWER = f"""
INSERT INTO ftso_rounds ({_ANSWER_COLS}, body) VALUES (%s, %s, %s, %s, %s, %s::json)
ON CONFLICT (voting_round_id, category, name) DO UPDATE
SET value = EXCLUDED.value, answered_at = EXCLUDED.answered_at, body = EXCLUDED.body
"""
# ``name`` is COLLATE "C" (migration 2): code point order, as SQLite sorts it.
FTSO_ROUND = f"""
SELECT {_ANSWER_COLS}, body::text FROM ftso_rounds WHERE voting_round_id = %(round)s
ORDER BY category, name
"""
