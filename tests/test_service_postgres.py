"""The whole service in-process on PostgreSQL: feeds through the pipeline into the cluster, the
API reading them back, and a store that is not there at start (degraded, 503 on reads, every
feed delivered once it is)."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import trio

from chrono.feeds import Feeds
from chrono.service import Service
from chrono.testing.postgres import PostgresCluster
from tests.conftest import PUBLIC_KEY, service_config
from tests.feeds import make_feed
from tests.waiting import wait_until

PUBLIC = {"Authorization": f"Bearer {PUBLIC_KEY}"}


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM price_feeds").fetchone()
    return int(row[0]) if row else 0


async def test_feeds_reach_postgres_and_the_api_reads_them_back(
    tmp_path: Path, pg_url: str
) -> None:
    config = service_config(
        tmp_path, storage={"url": pg_url}, batch={"max_feeds": 50, "max_interval_ms": 100}
    )
    service = Service(config)
    feeds = [make_feed(i, price=f"67234.{i:02d}000000") for i in range(120)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.run)
            async with service.intake() as intake:
                await intake.send(Feeds.of(feeds))
            await wait_until(lambda: service.writer.feeds_written == 120)
            # SOL/USD only in the store (written behind the pipeline's back): read from it.
            await service.store.write([make_feed(7, symbol="SOL/USD", price="150.10")])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                body = (await http.get("/prices/latest?symbols=SOL/USD", headers=PUBLIC)).json()
                health = (await http.get("/health")).json()
            service.stop()
    assert body["cached"] is False
    assert [(i["symbol"], i["price"]) for i in body["data"]] == [("SOL/USD", "150.10")]
    assert health["status"] in {"healthy", "degraded"}  # no collectors: never "streaming"
    assert health["services"]["store"] == "up"
    assert count(pg_url) == 121
    stats = service.store.statistics()
    assert stats.kind == "postgresql"
    # No TimescaleDB on this server: the plain tables, and /status says so.
    assert stats.timescaledb == "extension not installed on the server: plain tables"


async def test_a_store_missing_at_start_is_an_outage_not_a_crash(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    name = f"late_{id(tmp_path)}"
    url = pg_cluster.url(name)
    config = service_config(
        tmp_path,
        storage={"url": url, "retry_initial_s": 0.05, "retry_max_s": 0.2},
        batch={"max_feeds": 10, "max_interval_ms": 100},
    )
    service = Service(config)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                health = (await http.get("/health")).json()
                assert health["status"] == "degraded"
                assert health["services"]["store"] == "down"
                read = await http.get("/prices/latest?symbols=SOL/USD", headers=PUBLIC)
                assert read.status_code == 503
                assert read.json()["error"]["code"] == "DATABASE_ERROR"
                async with service.intake() as intake:
                    await intake.send(Feeds.of([make_feed(i) for i in range(30)]))
                await wait_until(lambda: service.writer.spool.feeds_spooled == 30)
                pg_cluster.create_database(name)
                await wait_until(lambda: service.writer.healthy)
                assert (await http.get("/health")).json()["services"]["store"] == "up"
            service.stop()
    assert service.writer.feeds_replayed == 30
    assert count(url) == 30
