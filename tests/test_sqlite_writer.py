"""SQLite's multi-row feed writer and schema version 3: every batch length writes each row once
with the text the one-row INSERT would store, duplicates are counted out, the reads keep using
the one unique index, and a version 2 database is rebuilt keeping every row and id."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chrono.model import FeedText, PriceFeed, feed_text
from chrono.store import sqlite as sqlite_module
from chrono.store.sqlite import SQLiteStore, to_row
from chrono.store.sqlite_sql import ALL_COLUMNS, INSERT, MIGRATIONS, ROW_SIZES, statement_rows
from tests.feeds import make_feed

CONTENT = ALL_COLUMNS.replace(" ingested_at,", "")  # ingested_at is the write's own time
LENGTHS = [0, 1, 3, 17, 255, 256, 257, 1000, 2944, 2945, 10_000]


def varied_feed(i: int) -> PriceFeed:
    """Feed ``i``: every third without volume, bid and ask; every other one with its text."""
    symbol = ("BTC/USD", "ETH/USD")[i % 2]
    feed = make_feed(i, price=f"{67000 + i % 97}.{i % 1000:03d}", symbol=symbol)
    if i % 3 == 0:
        feed = msgspec.structs.replace(feed, volume=None, bid=None, ask=None)
    if i % 2 == 0:
        feed = msgspec.structs.replace(feed, text=feed_text(feed))
    return feed


def stored(path: Path, columns: str = CONTENT) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT {columns} FROM price_feeds ORDER BY id").fetchall()


def one_row_inserts(path: Path, feeds: Sequence[PriceFeed]) -> None:
    """The same feeds written the old way: executemany of the one-row INSERT, ``to_row``."""
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS:
            for statement in migration.statements:
                db.execute(statement)
        db.executemany(INSERT, [to_row(f, "2026-11-20T12:00:00.000000Z") for f in feeds])


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore(str(path))
    await store.open()
    return store


@pytest.mark.parametrize("length", LENGTHS)
async def test_a_batch_of_any_length_stores_each_row_once_as_one_row_inserts_would(
    tmp_path: Path, length: int
) -> None:
    feeds = [varied_feed(i) for i in range(length)]
    store = await opened(tmp_path / "new.db")
    assert await store.write(feeds) == length
    assert store.rows_written == length
    await store.aclose()
    one_row_inserts(tmp_path / "old.db", feeds)

    assert stored(tmp_path / "new.db") == stored(tmp_path / "old.db")
    ids_and_times = stored(tmp_path / "new.db", "id, ingested_at")
    assert [row[0] for row in ids_and_times] == list(range(1, length + 1))  # in batch order
    assert len({row[1] for row in ids_and_times}) <= 1  # one ingested_at per write


def test_statements_are_the_largest_then_one_padded() -> None:
    assert statement_rows(0, ROW_SIZES) == []
    assert statement_rows(1, ROW_SIZES) == [1]
    assert statement_rows(100, ROW_SIZES) == [128]
    assert statement_rows(2944, ROW_SIZES) == [2944]
    assert statement_rows(10_000, ROW_SIZES) == [2944, 2944, 2944, 2048]
    for rows in range(0, 20_000, 7):
        statements = statement_rows(rows, ROW_SIZES)
        assert all(size in ROW_SIZES for size in statements)
        assert sum(statements[:-1]) < rows <= sum(statements) or rows == 0
        assert sum(statements) - rows < max(1, rows)  # padding below the rows themselves


async def test_a_padded_batch_counts_only_its_new_rows(tmp_path: Path) -> None:
    """The last statement's padding repeats the last row: the unique key ignores the copies,
    and a row already stored counts as a duplicate, padded or not."""
    feeds = [varied_feed(i) for i in range(3001)]
    store = await opened(tmp_path / "new.db")
    assert await store.write(feeds[:100]) == 100  # one 128-row statement
    assert await store.write(feeds[50:]) == 2901  # 2,944 and 8 rows; 50 stored already
    assert await store.write(feeds[-3:]) == 0  # all stored, padded to 4
    await store.aclose()
    one_row_inserts(tmp_path / "old.db", feeds)
    assert stored(tmp_path / "new.db") == stored(tmp_path / "old.db")
    assert [row[0] for row in stored(tmp_path / "new.db", "id")] == list(range(1, 3002))


async def test_nulls_are_stored_as_null(tmp_path: Path) -> None:
    store = await opened(tmp_path / "x.db")
    await store.write([varied_feed(0), varied_feed(1), varied_feed(3)])
    await store.aclose()
    amounts = stored(tmp_path / "x.db", "volume, bid, ask")
    assert amounts[0] == amounts[2] == (None, None, None)
    assert amounts[1] == ("9756.91661100", "67234.55", "67234.57000000")


async def test_a_feeds_text_is_written_as_given(tmp_path: Path) -> None:
    """A feed with ``text`` is written from it: the writer formats nothing."""
    feed = make_feed(1, price="0.5")
    text = FeedText("0.50", None, "0.49", None, "2026-11-20T12:00:01.000000Z",
                    "2026-11-20T12:00:01.003000Z")  # fmt: skip
    store = await opened(tmp_path / "x.db")
    await store.write([msgspec.structs.replace(feed, text=text)])
    await store.aclose()
    row = stored(tmp_path / "x.db", "price, volume, bid, ask, timestamp, received_at")
    assert row == [tuple(msgspec.structs.astuple(text))]


async def test_duplicates_in_a_batch_and_across_batches_are_not_counted(tmp_path: Path) -> None:
    first = [varied_feed(i) for i in range(300)]
    repeats = first[250:290]  # straddle the 256-row statement's edge, in a later statement
    store = await opened(tmp_path / "x.db")
    assert await store.write([*first[:260], *repeats, *first[260:]]) == 300
    # The key alone decides: other columns may differ, the first row stays.
    changed = [msgspec.structs.replace(f, volume=Decimal(1), worker_id="other") for f in first]
    fresh = [varied_feed(i) for i in range(300, 400)]
    assert await store.write([*changed[::7], *fresh, *fresh[:5]]) == 100
    assert await store.write(first) == 0
    assert store.rows_written == 400
    assert store.batches_written == 3
    await store.aclose()
    assert stored(tmp_path / "x.db", "count(*), count(DISTINCT worker_id)") == [(400, 1)]


async def test_an_empty_write_is_one_empty_transaction(tmp_path: Path) -> None:
    store = await opened(tmp_path / "x.db")
    assert await store.write([]) == 0
    assert (store.rows_written, store.batches_written) == (0, 1)
    await store.aclose()


# --- schema version 3: one unique index for the key and the reads -------------------------

A, B = "2026-11-20T12:00:00.000000Z", "2026-11-20T13:00:00.000000Z"
QUERIES = {
    "latest": (sqlite_module.LATEST, ("BTC/USD", None, None)),
    "latest of a source": (sqlite_module.LATEST, ("BTC/USD", "coinbase", "coinbase")),
    "latest by source": (sqlite_module.LATEST_BY_SOURCE, ("BTC/USD", A, None, None)),
    "latest by source until": (sqlite_module.LATEST_BY_SOURCE, ("BTC/USD", A, B, B)),
    "between": (sqlite_module.BETWEEN, ("BTC/USD", A, B, None, None, 10_000)),
    "between of a source": (sqlite_module.BETWEEN, ("BTC/USD", A, B, "kraken", "kraken", 100)),
    "page": (sqlite_module.PAGE, ("BTC/USD", A, B, None, None, A, 0, 101)),
    "page of a source": (sqlite_module.PAGE, ("BTC/USD", A, B, "kraken", "kraken", A, 7, 101)),
    "candle rows": (sqlite_module.CANDLE_ROWS, ("BTC/USD", A, B, None, None)),
    "candle rows of a source": (sqlite_module.CANDLE_ROWS, ("BTC/USD", A, B, "x", "x")),
}


@pytest.mark.parametrize("name", QUERIES)
async def test_every_read_searches_the_unique_index(tmp_path: Path, name: str) -> None:
    store = await opened(tmp_path / "x.db")
    await store.write([varied_feed(i) for i in range(2000)])
    await store.aclose()
    sql, args = QUERIES[name]
    with sqlite3.connect(tmp_path / "x.db") as db:
        db.execute("ANALYZE")
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
    on_table = [step for step in plan if re.match(r"(SEARCH|SCAN) (price_feeds|p)\b", step)]
    assert on_table, plan
    for step in on_table:  # an index search, or a row by its id found that way; never a scan
        assert re.match(ON_INDEX, step), plan


ON_INDEX = (
    r"SEARCH (price_feeds|p) USING (COVERING )?INDEX price_feeds_feed_key \(symbol=\?"
    r"|SEARCH price_feeds USING INTEGER PRIMARY KEY \(rowid=\?\)"
)


async def test_the_key_is_still_unique_for_every_way_of_inserting(tmp_path: Path) -> None:
    store = await opened(tmp_path / "x.db")
    await store.write([make_feed(1)])
    await store.aclose()
    row = to_row(make_feed(1), "2026-11-20T12:00:00.000000Z")
    values = ", ".join(["?"] * len(row))
    with sqlite3.connect(tmp_path / "x.db") as db:
        db.execute(INSERT, row)
        db.execute(f"INSERT INTO price_feeds ({ALL_COLUMNS}) VALUES ({values})"
                   " ON CONFLICT (source, symbol, timestamp, price) DO NOTHING", row)  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute(f"INSERT INTO price_feeds ({ALL_COLUMNS}) VALUES ({values})", row)
        assert db.execute("SELECT count(*) FROM price_feeds").fetchone() == (1,)


async def test_a_version_2_database_is_rebuilt_keeping_every_row_and_id(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    old = SQLiteStore(str(path), migrations=MIGRATIONS[:2])
    await old.open()
    await old.write([varied_feed(i) for i in range(500)])
    await old.aclose()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM price_feeds WHERE id % 10 = 3")  # gaps, which must stay
    before = stored(path, f"id, {ALL_COLUMNS}")

    store = await opened(path)
    assert await store.schema_version() == 3
    assert await store.write([varied_feed(i) for i in range(500, 510)]) == 10
    assert await store.write([varied_feed(0), varied_feed(499)]) == 0
    await store.aclose()

    after = stored(path, f"id, {ALL_COLUMNS}")
    assert after[: len(before)] == before
    assert [row[0] for row in after[len(before) :]] == list(range(501, 511))
    with sqlite3.connect(path) as db:
        indexes = db.execute("SELECT name, \"unique\" FROM pragma_index_list('price_feeds')")
        assert indexes.fetchall() == [("price_feeds_feed_key", 1)]
        (table,) = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'price_feeds'").fetchone()
        assert "UNIQUE" not in table
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        versions = db.execute("SELECT version FROM chrono_schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,), (3,)]
