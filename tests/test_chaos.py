"""Chaos: ``chrono run`` against every exchange simulator at once, with faults on, for ~30 s.

Drops (1006), silences, garbage, 429s on connect and the exchanges' reconnect notices, all at
once. Afterwards: every feed Chrono accepted is stored exactly once, each stored row is a trade
a simulator really sent (canonical symbol, price digit for digit, exchange time), and every
collector is flowing again once the faults stop.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import trio

from chrono.exchanges import EXCHANGES
from chrono.store.sqlite import parse_time
from chrono.testing.process import open_chrono
from chrono.testing.simulators import SIMULATORS, Chaos, Simulator
from tests.daemon import get_json, write_config
from tests.waiting import wait_until

CHAOS_S = 30.0
CHAOS = Chaos(
    drop_every_s=7.0,
    silent_every_s=11.0,
    silent_for_s=3.0,
    garbage_ratio=0.02,
    reject_every_s=5.0,
    notice_every_s=9.0,
)


def symbols_for(exchange: str) -> list[str]:
    return SIMULATORS[exchange].sample_symbols()


def collector(exchange: str, sim: Simulator) -> str:
    symbols = ", ".join(f'"{s}"' for s in symbols_for(exchange))
    return f"""
[[collectors]]
exchange = "{exchange}"
symbols = [{symbols}]
url = "{sim.endpoint}"
backoff_initial_s = 0.2
backoff_max_s = 2
silence_timeout_s = 2
stale_floor_s = 1
"""


def expected(exchange: str, sim: Simulator) -> set[tuple[str, str, str]]:
    """(symbol, price, time) of every trade the simulator sent, as Chrono must store it."""
    symbols = EXCHANGES[exchange].symbol_map(symbols_for(exchange))
    out = set()
    for tick in sim.ticks:
        canonical = symbols.to_canonical(tick.native)
        assert canonical is not None
        assert tick.time is not None
        out.add((canonical, tick.price, tick.time.isoformat()))
    return out


def stored(db: Path) -> dict[str, list[tuple[str, str, str]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT source, symbol, price, timestamp FROM price_feeds").fetchall()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for source, symbol, price, timestamp in rows:
        out.setdefault(source, []).append((symbol, price, parse_time(timestamp).isoformat()))
    return out


def flowing(status: dict[str, Any]) -> bool:
    return all(c["state"] == "streaming" and not c["stale_symbols"] for c in status["collectors"])


async def test_chaos_against_every_exchange(tmp_path: Path, nursery: trio.Nursery) -> None:
    sims = {
        name: cls(
            symbols=EXCHANGES[name].symbol_map(symbols_for(name)).natives(),
            tick_interval_s=0.1,
        )
        for name, cls in SIMULATORS.items()
    }
    for sim in sims.values():
        await nursery.start(sim.serve)
    config = await write_config(
        tmp_path, collectors="".join(collector(name, sim) for name, sim in sims.items())
    )
    with trio.fail_after(CHAOS_S + 60):
        async with open_chrono(config) as daemon:
            port = daemon.port
            await wait_until(lambda: all(sim.ticks for sim in sims.values()))
            with trio.move_on_after(CHAOS_S):
                async with trio.open_nursery() as chaos:
                    for sim in sims.values():
                        chaos.start_soon(sim.run_chaos, CHAOS)
            for sim in sims.values():
                sim.set_garbage_ratio(0.0)
                sim.set_silent(False)
            status = await _wait_flowing(port)
            for sim in sims.values():
                sim.set_silent(True)  # nothing new: what was accepted can be counted
            status = await _wait_settled(port)
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    rows = stored(tmp_path / "data" / "chrono.db")
    writer = status["pipeline"]["writer"]
    assert sum(len(r) for r in rows.values()) == writer["feeds_written"]  # each accepted once
    for name, sim in sims.items():
        source = EXCHANGES[name].name
        assert len(set(rows[source])) == len(rows[source]), f"{name}: a row stored twice"
        assert set(rows[source]) <= expected(name, sim), f"{name}: a row no trade explains"
        assert sim.connections_total > 1, f"{name}: chaos never reached it"
    faults = {
        "reconnects": sum(c["reconnects"] for c in status["collectors"]),
        "rate_limited": sum(c["rate_limited"] for c in status["collectors"]),
        "invalid": sum(sum(c["invalid_frames"].values()) for c in status["collectors"]),
    }
    assert all(faults.values()), faults


async def _wait_flowing(port: int) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal status
        status = await get_json(port, "/status")
        return flowing(status)

    while not await check():
        await trio.sleep(0.2)
    return status


async def _wait_settled(port: int) -> dict[str, Any]:
    """Poll until the pipeline has written everything it took in (two equal readings)."""
    previous = None
    while True:
        await trio.sleep(0.5)
        status = await get_json(port, "/status")
        pipeline = status["pipeline"]
        written = pipeline["writer"]["feeds_written"] + pipeline["writer"]["duplicates_ignored"]
        taken = pipeline["fanout"]["feeds_in"] - pipeline["fanout"]["duplicates_dropped"]
        if written == taken and written == previous:
            return dict(status)
        previous = written
