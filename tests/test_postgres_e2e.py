"""`chrono run` storing into a real PostgreSQL cluster that the tests stop and start: every
ticker of an outside exchange peer lands once, digit for digit; the seed's own check query
answers; an outage mid-stream, a SIGTERM during an outage and a kill -9 with a full spool lose
nothing and duplicate nothing.

The outage lasts ``CHRONO_TEST_OUTAGE_S`` seconds (default 30; the issue's acceptance run
used 60).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from chrono.model import PriceFeed
from chrono.testing.postgres import PostgresCluster, free_port
from chrono.testing.process import ChronoProcess, open_chrono
from chrono.testing.simulators import CoinbaseSimulator
from tests.daemon import chrono_status, get_json, write_config
from tests.waiting import wait_until

OUTAGE_S = float(os.environ.get("CHRONO_TEST_OUTAGE_S", "30"))

# What the seed ran to see that feeds were arriving.
SEED_CHECK = """
SELECT source, COUNT(*), COUNT(DISTINCT symbol), MAX(timestamp) FROM price_feeds
WHERE timestamp > NOW() - INTERVAL '10 minutes' GROUP BY source
"""
Row = tuple[str, str, Any, str]


def storage(url: str) -> str:
    return (
        f'url = "{url}"\nspool_dir = "spool"\n'
        "retry_initial_s = 0.1\nretry_max_s = 1\nconnect_timeout_s = 1"
    )


def stored(url: str) -> list[Row]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT symbol, price::text, timestamp, source FROM price_feeds")
        return rows.fetchall()


def sent(sim: CoinbaseSimulator) -> list[Row]:
    return [(t.native.replace("-", "/"), t.price, t.time, "coinbase") for t in sim.ticks]


def assert_stored_once(sim: CoinbaseSimulator, url: str) -> None:
    expected = sent(sim)
    assert len(set(expected)) == len(expected)
    assert sorted(stored(url)) == sorted(expected)  # every ticker, digit for digit, once


async def writer_status(daemon: ChronoProcess) -> dict[str, Any]:
    writer: dict[str, Any] = (await get_json(daemon.port, "/status"))["pipeline"]["writer"]
    return writer


async def wait_status(daemon: ChronoProcess, check: Any, timeout_s: float = 30) -> None:
    with trio.fail_after(timeout_s):
        while not check(await writer_status(daemon)):
            await trio.sleep(0.1)


@dataclass
class Rig:
    """A Coinbase simulator and a config for `chrono run` storing into a cluster of its own."""

    cluster: PostgresCluster
    url: str
    sim: CoinbaseSimulator
    config: Path


@pytest.fixture
async def rig(tmp_path: Path, nursery: trio.Nursery, own_pg_cluster: PostgresCluster) -> Rig:
    url = own_pg_cluster.create_database("chrono")
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    config = await write_config(tmp_path, sim.url, storage=storage(url))
    return Rig(own_pg_cluster, url, sim, config)


async def spool_during_an_outage(rig: Rig, daemon: ChronoProcess) -> None:
    """Feeds flowing into the store, then the server stopped until a few batches are spooled."""
    await wait_until(lambda: len(stored(rig.url)) > 20, timeout_s=20)
    await stop_pg(rig.cluster)
    await wait_status(daemon, lambda w: w["spool"]["batches"] >= 3)


async def stop_pg(cluster: PostgresCluster) -> None:
    await trio.to_thread.run_sync(cluster.stop)


async def start_pg(cluster: PostgresCluster) -> None:
    await trio.to_thread.run_sync(cluster.start)


async def test_an_outage_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, rig: Rig) -> None:
    url, sim, config = rig.url, rig.sim, rig.config
    with trio.fail_after(OUTAGE_S + 90):
        async with open_chrono(config) as daemon:
            await wait_until(lambda: len(stored(url)) > 20, timeout_s=20)
            [(source, count, symbols, newest)] = stored_check(url)
            assert (source, symbols) == ("coinbase", 2)
            assert count >= 20
            assert newest == max(r[2] for r in stored(url))

            await stop_pg(rig.cluster)
            outage_ends = trio.current_time() + OUTAGE_S
            health: dict[str, Any] = {}
            while trio.current_time() < outage_ends:
                health = await get_json(daemon.port, "/health")
                await trio.sleep(1)
            assert health["status"] == "degraded"
            assert health["services"]["store"] == "down"
            writer = await writer_status(daemon)
            assert writer["spool"]["batches"] >= OUTAGE_S / 2  # a batch every 200 ms or so
            assert writer["write_errors"] >= 1
            shown = (await chrono_status(config)).stdout.decode()
            assert "store: postgresql postgresql://postgres@127.0.0.1" in shown
            assert "FAILING: postgresql:" in shown
            assert "batches spooled)" in shown

            await start_pg(rig.cluster)
            await wait_status(daemon, lambda w: w["healthy"], timeout_s=30)
            sim.set_silent(True)
            await wait_until(lambda: len(stored(url)) == len(sim.ticks), timeout_s=30)
            assert (await get_json(daemon.port, "/health"))["status"] == "healthy"
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    assert_stored_once(sim, url)
    assert not any((tmp_path / "spool").iterdir())


def stored_check(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(SEED_CHECK).fetchall()


async def test_sigterm_during_an_outage_exits_0_and_the_next_start_delivers_the_rest(
    tmp_path: Path, rig: Rig
) -> None:
    url, sim, config = rig.url, rig.sim, rig.config
    with trio.fail_after(120):
        async with open_chrono(config) as daemon:
            await spool_during_an_outage(rig, daemon)
            sim.set_silent(True)
            await wait_until_received(daemon, sim)
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
        assert "drained" in daemon.messages()
        spooled = spool_files(tmp_path / "spool")
        assert spooled  # the rest waits on disk

        await start_pg(rig.cluster)
        async with open_chrono(config) as again:
            await wait_until(lambda: len(stored(url)) == len(sim.ticks), timeout_s=30)
            await wait_status(again, lambda w: w["healthy"])
            again.process.send_signal(signal.SIGTERM)
            assert await again.wait_exit() == 0
    assert_stored_once(sim, url)
    assert any("from an earlier run; replaying them" in m for m in again.messages())


async def test_kill_9_with_a_spool_then_a_new_start_replays_it(tmp_path: Path, rig: Rig) -> None:
    url, sim, config = rig.url, rig.sim, rig.config
    with trio.fail_after(120):
        async with open_chrono(config) as daemon:
            await spool_during_an_outage(rig, daemon)
            daemon.process.kill()
            assert await daemon.wait_exit() == -signal.SIGKILL
        spooled = spool_files(tmp_path / "spool")
        assert len(spooled) >= 3
        sim.set_silent(True)

        await start_pg(rig.cluster)
        async with open_chrono(config) as again:
            await wait_status(again, lambda w: w["healthy"] and w["feeds_replayed"] > 0)
            again.process.send_signal(signal.SIGTERM)
            assert await again.wait_exit() == 0
    rows = stored(url)
    assert len(set(rows)) == len(rows)  # nothing twice
    keys = {(f.symbol, str(f.price), f.timestamp, f.source) for f in spooled}
    in_store = {(r[0], r[1], r[2], r[3]) for r in rows}
    assert keys <= in_store  # every spooled feed, digit for digit
    assert set(rows) <= set(sent(sim))  # and nothing that was not sent


async def wait_until_received(daemon: ChronoProcess, sim: CoinbaseSimulator) -> None:
    """The simulator is silent: wait until the pipeline has taken every ticker it sent."""
    with trio.fail_after(20):
        while True:
            fanout = (await get_json(daemon.port, "/status"))["pipeline"]["fanout"]
            if fanout["feeds_in"] - fanout["duplicates_dropped"] >= len(sim.ticks):
                return
            await trio.sleep(0.05)


def spool_files(folder: Path) -> list[PriceFeed]:
    """The feeds in a spool folder, read with the file format alone (msgpack feed lists)."""
    decoder = msgspec.msgpack.Decoder(list[PriceFeed])
    feeds: list[PriceFeed] = []
    for path in sorted(folder.glob("*.feeds")):
        feeds.extend(decoder.decode(path.read_bytes()))
    return feeds


async def test_a_store_that_is_not_there_is_an_outage_and_its_password_is_never_shown(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    url = f"postgresql://chrono:pa55-w0rd@127.0.0.1:{free_port()}/chrono"  # nothing listens
    config = await write_config(tmp_path, sim.url, storage=storage(url))
    with trio.fail_after(60):
        async with open_chrono(config) as daemon:
            await wait_status(daemon, lambda w: w["spool"]["batches"] >= 2)
            status = await get_json(daemon.port, "/status")
            health = await get_json(daemon.port, "/health")
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    assert health["services"]["store"] == "down"
    assert status["store"]["url"] == f"postgresql://chrono:***@127.0.0.1:{url.split(':')[3]}"
    assert any("store unavailable at start" in m for m in daemon.messages())
    assert "pa55-w0rd" not in json.dumps(daemon.logs) + json.dumps(status)
    assert spool_files(tmp_path / "spool")  # kept for the next start
