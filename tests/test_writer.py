"""The ingest writer against stores that really fail: SQLite held locked by the test, and a
PostgreSQL cluster stopped and started again. Batches spool in order while the store is down,
replay in order when it is back, land exactly once, and a drain leaves the rest spooled for
the next start."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import trio

from chrono.feeds import Feeds
from chrono.model import PriceFeed
from chrono.pipeline.writer import IngestWriter
from chrono.store import PostgresStore, SQLiteStore, Store
from chrono.store.spool import Spool
from chrono.testing.postgres import PostgresCluster
from tests.feeds import make_feed
from tests.stores import store_locked
from tests.waiting import wait_until


def batches(count: int, size: int = 10, start: int = 0) -> list[list[PriceFeed]]:
    return [[make_feed(start + b * size + i) for i in range(size)] for b in range(count)]


@asynccontextmanager
async def running_writer(
    store: Store, spool_dir: Path
) -> AsyncIterator[tuple[IngestWriter, trio.MemorySendChannel[Feeds]]]:
    """A writer fed by the yielded channel; leaving closes the channel and waits for the drain."""
    send, receive = trio.open_memory_channel[Feeds](0)
    writer = IngestWriter(
        receive, store, Spool(spool_dir, 1 << 20), retry_initial_s=0.05, retry_cap_s=0.2
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        async with send:
            yield writer, send


def sqlite_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT timestamp, price FROM price_feeds ORDER BY id").fetchall()


async def test_an_outage_spools_in_order_and_replays_each_feed_once(tmp_path: Path) -> None:
    db = tmp_path / "chrono.db"
    store = SQLiteStore(str(db))
    sent = batches(8)
    with trio.fail_after(60):
        async with running_writer(store, tmp_path / "spool") as (writer, send):
            await send.send(Feeds.of(sent[0]))
            await wait_until(lambda: writer.feeds_written == 10)
            with store_locked(db):
                for b in sent[1:6]:
                    await send.send(Feeds.of(b))
                await wait_until(lambda: writer.spool.feeds_spooled == 50)
                assert not writer.healthy
                assert writer.state() == "down"
                assert writer.write_errors >= 1
            await send.send(Feeds.of(sent[1]))  # a batch sent again: stored once
            await wait_until(lambda: writer.healthy)
            for b in sent[6:]:
                await send.send(Feeds.of(b))
    assert writer.feeds_replayed == 60  # the 5 spooled while locked, and the repeat behind them
    assert writer.duplicates_ignored == 10
    assert writer.feeds_written == 80
    expected = [(f.timestamp, f.price) for b in sent for f in b]
    stored = [(f.timestamp, f.price) for f in await store.feeds_between(
        "BTC/USD", expected[0][0], expected[-1][0] + (expected[1][0] - expected[0][0])
    )]  # fmt: skip
    assert stored == expected
    # ids follow the batches' order: replayed in order, and the newer batches after them.
    assert [r[0] for r in sqlite_rows(db)] == sorted(r[0] for r in sqlite_rows(db))
    assert not any((tmp_path / "spool").iterdir())
    await store.aclose()


async def test_a_drain_during_an_outage_leaves_the_rest_spooled_for_the_next_start(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chrono.db"
    store = SQLiteStore(str(db))
    sent = batches(4)
    with trio.fail_after(60):
        with store_locked(db):
            async with running_writer(store, tmp_path / "spool") as (writer, send):
                for b in sent:
                    await send.send(Feeds.of(b))
            # The input ended, the store still refused: run() returned, nothing lost.
            assert len(writer.spool) >= 1
            assert writer.spool.feeds_spooled == 40
        # The next start: a new writer on the same folder replays before anything else.
        async with running_writer(store, tmp_path / "spool") as (again, send):
            await wait_until(lambda: again.healthy and again.feeds_replayed == 40)
            await send.send(Feeds.of(batches(1, start=1000)[0]))
        await store.aclose()
    assert len(sqlite_rows(db)) == 50
    assert not any((tmp_path / "spool").iterdir())


async def test_postgres_stopped_and_started_again_loses_nothing(
    tmp_path: Path, own_pg_cluster: PostgresCluster
) -> None:
    url = own_pg_cluster.create_database("chrono")
    store = PostgresStore(url, connect_timeout_s=1)
    sent = batches(6)
    with trio.fail_after(120):
        async with running_writer(store, tmp_path / "spool") as (writer, send):
            await send.send(Feeds.of(sent[0]))
            await wait_until(lambda: writer.feeds_written == 10)
            await trio.to_thread.run_sync(own_pg_cluster.stop)
            for b in sent[1:4]:
                await send.send(Feeds.of(b))
            await wait_until(lambda: writer.spool.feeds_spooled == 30, timeout_s=30)
            assert writer.state() == "down"
            await trio.to_thread.run_sync(own_pg_cluster.start)
            await wait_until(lambda: writer.healthy, timeout_s=30)
            for b in sent[4:]:
                await send.send(Feeds.of(b))
        await store.aclose()
    assert store.statistics().broken_connections >= 1  # the old session died with the server
    with psycopg.connect(url) as conn:
        count = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT (source, symbol, timestamp, price)) FROM price_feeds"
        ).fetchone()
    assert count == (60, 60)
