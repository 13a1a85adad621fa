"""The SQLite store: the table of ARCHITECTURE.md, read back digit for digit, each feed once."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from chrono.errors import StoreError
from chrono.store import SQLiteStore, open_store
from tests.feeds import make_feed

TRICKY_PRICES = ["67234.56000000", "0.000000012345678901", "1000", "99999999999999.99", "0.1"]


async def test_round_trip_digit_for_digit(tmp_path: Path) -> None:
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


async def test_a_feed_is_stored_once(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.open()
    feeds = [make_feed(i) for i in range(10)]
    assert await store.write(feeds) == 10
    assert await store.write([*feeds[5:], make_feed(10)]) == 1
    other_source = [make_feed(0, source="kraken")]
    assert await store.write(other_source) == 1
    await store.aclose()
    with sqlite3.connect(tmp_path / "x.db") as db:
        assert db.execute("SELECT COUNT(*) FROM price_feeds").fetchone() == (12,)


async def test_latest_per_symbol(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.open()
    await store.write(
        [
            make_feed(2, price="3.00"),
            make_feed(1, price="2.00"),
            make_feed(5, symbol="ETH/USD", price="4000.10"),
        ]
    )
    latest = await store.latest(["BTC/USD", "ETH/USD", "DOGE/USD"])
    await store.aclose()
    assert [(f.symbol, f.price) for f in latest] == [
        ("BTC/USD", Decimal("3.00")),
        ("ETH/USD", Decimal("4000.10")),
    ]
    assert latest[0] == make_feed(2, price="3.00")  # every field comes back as written


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
    closed = SQLiteStore(str(tmp_path / "never-opened.db"))
    with pytest.raises(StoreError, match="not open"):
        await closed.write([make_feed()])


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db"), SQLiteStore)
