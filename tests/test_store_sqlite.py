"""What is SQLite's own (the contract both stores keep is in test_store_contract.py): the text
it stores, one writer connection shared by many tasks, and a database made before schema
versions existed."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from chrono.config import StorageConfig
from chrono.errors import StoreError
from chrono.store import SQLiteStore, open_store
from tests.feeds import make_feed

TRICKY_PRICES = ["67234.56000000", "0.000000012345678901", "1000", "99999999999999.99", "0.1"]


async def test_stored_as_fixed_width_text(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "chrono.db"))
    await store.open()
    feeds = [make_feed(i, price=p) for i, p in enumerate(TRICKY_PRICES)]
    assert await store.write(feeds) == len(feeds)
    await store.aclose()

    # Read with plain sqlite3, not the store's own code.
    with sqlite3.connect(tmp_path / "chrono.db") as db:
        rows = db.execute(
            "SELECT symbol, price, volume, bid, ask, timestamp, received_at, source, worker_id,"
            " metadata, ingested_at FROM price_feeds ORDER BY id"
        ).fetchall()
    assert [r[1] for r in rows] == TRICKY_PRICES
    first = rows[0]
    assert first[:5] == ("BTC/USD", "67234.56000000", "9756.91661100", "67234.55", "67234.57000000")
    assert first[5] == "2026-11-20T12:00:00.123456Z"
    assert first[6] == "2026-11-20T12:00:00.126456Z"
    assert first[7:9] == ("coinbase", "coinbase-1")
    assert first[9] == '{"native_symbol":"BTC-USD","trade_id":0}'
    assert first[10].endswith("Z")


async def test_writes_from_many_tasks_share_one_connection(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.open()
    async with trio.open_nursery() as nursery:
        for n in range(8):
            batch = [make_feed(n * 100 + i) for i in range(100)]
            nursery.start_soon(store.write, batch)
    assert store.rows_written == 800
    await store.aclose()


async def test_errors_become_store_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = SQLiteStore(str(tmp_path / "dir.db"))
    with pytest.raises(StoreError, match="sqlite"):
        await store.open()
    with pytest.raises(StoreError, match="sqlite"):
        await store.write([make_feed()])  # a write tries to open it again, and says why not


def test_open_store_by_url(tmp_path: Path) -> None:
    storage = StorageConfig(url=f"sqlite:///{tmp_path}/a.db")
    assert isinstance(open_store(storage), SQLiteStore)


PRE_VERSIONS_SCHEMA = """
CREATE TABLE price_feeds (
    id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, price TEXT NOT NULL, volume TEXT, bid TEXT,
    ask TEXT, timestamp TEXT NOT NULL, received_at TEXT NOT NULL, ingested_at TEXT NOT NULL,
    source TEXT NOT NULL, worker_id TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (source, symbol, timestamp, price)
);
CREATE INDEX price_feeds_symbol_time ON price_feeds (symbol, timestamp DESC);
INSERT INTO price_feeds (symbol, price, timestamp, received_at, ingested_at, source, worker_id)
VALUES ('BTC/USD', '67234.56', '2026-11-20T12:00:00.000000Z', '2026-11-20T12:00:00.001000Z',
        '2026-11-20T12:00:00.002000Z', 'coinbase', 'coinbase');
"""


async def test_a_database_from_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    """Chrono 0.1 created the table without a version table: its rows stay, it becomes v1 and is
    migrated on."""
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.executescript(PRE_VERSIONS_SCHEMA)
    store = SQLiteStore(str(tmp_path / "old.db"))
    await store.open()
    assert await store.schema_version() == 3
    assert [f.price for f in await store.latest(["BTC/USD"])] == [Decimal("67234.56")]
    await store.aclose()
