"""Store outages and signals, with `chrono run` as a real process and SQLite held locked by the
test: nothing is dropped while the store fails; a drain that cannot finish (store down, spool
full) ends with a second signal or at its deadline, exit 1."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from chrono.testing.process import ChronoProcess, open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.daemon import SQLITE_STORAGE, get_json, write_config
from tests.stores import store_locked
from tests.test_end_to_end import assert_stored_once, stored_rows
from tests.waiting import wait_until


def spool_full(daemon: ChronoProcess) -> bool:
    return "spool full: waiting for the store to take batches; collection is paused" in (
        daemon.messages()
    )


async def status(daemon: ChronoProcess) -> dict[str, object]:
    """/status with /health under "health"; health first, so what it saw is in the counts."""
    health = await get_json(daemon.port, "/health")
    body: dict[str, object] = await get_json(daemon.port, "/status")
    body["health"] = health
    return body


async def test_a_store_outage_loses_nothing(tmp_path: Path, nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    db = tmp_path / "data" / "chrono.db"
    with trio.fail_after(60):
        async with open_chrono(await write_config(tmp_path, sim.url)) as daemon:
            await wait_until(lambda: db.exists() and len(stored_rows(db)) > 20)
            with store_locked(db):
                ticks_at_lock = len(sim.ticks)
                while True:
                    body = await status(daemon)
                    if body["health"]["status"] == "degraded":  # type: ignore[index]
                        break
                    await trio.sleep(0.1)
                assert body["health"]["services"]["store"] == "down"  # type: ignore[index]
                assert body["pipeline"]["writer"]["write_errors"] >= 1  # type: ignore[index]
            await wait_until(lambda: len(sim.ticks) > ticks_at_lock + 100)
            sim.set_silent(True)
            await wait_until(lambda: len(stored_rows(db)) == len(sim.ticks))
            assert (await status(daemon))["health"]["status"] == "healthy"  # type: ignore[index]
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    assert_stored_once(sim, db)


@pytest.mark.parametrize(
    ("drain_timeout_s", "second_signal", "reason"),
    [
        (30, True, "second signal (SIGINT): exiting without draining"),
        (1, False, "drain did not finish within 1 s"),
    ],
    ids=["second-signal", "drain-deadline"],
)
async def test_an_aborted_drain_exits_1(
    tmp_path: Path,
    nursery: trio.Nursery,
    drain_timeout_s: float,
    second_signal: bool,
    reason: str,
) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    db = tmp_path / "data" / "chrono.db"
    # A spool with room for one batch: with the store down too, the drain cannot finish.
    storage = f"{SQLITE_STORAGE}\nspool_max_bytes = 1"
    config = await write_config(tmp_path, sim.url, drain_timeout_s=drain_timeout_s, storage=storage)
    with trio.fail_after(60):
        async with open_chrono(config) as daemon:
            await wait_until(lambda: db.exists() and len(stored_rows(db)) > 0)
            with store_locked(db):
                await wait_until(lambda: spool_full(daemon), timeout_s=20)
                daemon.process.send_signal(signal.SIGTERM)
                await wait_until(lambda: "SIGTERM: draining" in daemon.messages())
                if second_signal:
                    daemon.process.send_signal(signal.SIGINT)
                assert await daemon.wait_exit() == 1
    assert f"chrono stopped: {reason}" in daemon.messages()
