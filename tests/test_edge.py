"""Edge collectors: a ``chrono run`` with ``[forward]`` collects and POSTs every batch to a
central ``chrono run``'s ``/internal/ingest``. Two real processes: the central is stopped for
30 s mid-stream and started again on its port; the edge spools meanwhile, replays in order, and
the central ends with every ticker exactly once. A 4xx (a wrong key) is logged and skipped."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from chrono.testing.process import ChronoProcess, open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.conftest import INTERNAL_KEY
from tests.daemon import SQLITE_STORAGE, get_json, write_config
from tests.test_end_to_end import assert_stored_once, stored_rows
from tests.waiting import wait_until

FORWARD = """
[forward]
url = "http://127.0.0.1:{port}"
key = "{key}"
worker_id = "edge-1"
"""
QUICK_RETRIES = SQLITE_STORAGE + "\nretry_initial_s = 0.1\nretry_max_s = 1"


async def central_config(folder: Path) -> Path:
    config = await write_config(folder, collectors="# a central: fed by its edges")
    config.write_text(
        config.read_text().replace("[auth]\n", f'[auth]\ninternal_keys = ["{INTERNAL_KEY}"]\n')
    )
    return config


async def edge_config(folder: Path, sim_url: str, central: Path, key: str) -> Path:
    text = await trio.Path(central).read_text()
    port = next(line for line in text.splitlines() if line.startswith("port"))
    config = await write_config(folder, sim_url, storage=QUICK_RETRIES)
    config.write_text(config.read_text() + FORWARD.format(port=port.split("=")[1].strip(), key=key))
    return config


async def central_and_edge(
    folder: Path, nursery: trio.Nursery, key: str
) -> tuple[CoinbaseSimulator, Path, Path]:
    """A ticking simulator, and the configs of a central and of an edge that collects from the
    simulator and forwards with ``key``."""
    sim = CoinbaseSimulator(tick_interval_s=0.05)
    await nursery.start(sim.serve)
    await trio.Path(folder / "central").mkdir()
    await trio.Path(folder / "edge").mkdir()
    central = await central_config(folder / "central")
    return sim, central, await edge_config(folder / "edge", sim.url, central, key)


async def stop(daemon: ChronoProcess) -> None:
    daemon.process.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0


async def test_an_edge_loses_nothing_while_its_central_is_stopped_for_30_s(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim, central, edge = await central_and_edge(tmp_path, nursery, INTERNAL_KEY)
    db = tmp_path / "central" / "data" / "chrono.db"
    with trio.fail_after(120):
        async with open_chrono(edge) as edge_daemon:
            async with open_chrono(central) as first:
                await wait_until(lambda: db.exists() and len(stored_rows(db)) > 20, timeout_s=20)
                await stop(first)
            stored_before = len(stored_rows(db))
            await trio.sleep(30)  # the central is down: the edge collects on, and spools
            writer = (await get_json(edge_daemon.port, "/status"))["pipeline"]["writer"]
            assert writer["store"] == "down"
            assert writer["spool"]["batches"] > 0
            assert len(sim.ticks) > stored_before + 200  # 30 s of tickers happened meanwhile
            async with open_chrono(central) as second:  # back, on the same port and store
                await trio.sleep(1)
                sim.set_silent(True)
                sent = len(sim.ticks)
                await wait_until(lambda: len(stored_rows(db)) >= sent, timeout_s=30)
                status = await get_json(edge_daemon.port, "/status")
                assert status["pipeline"]["writer"]["store"] == "up"
                assert status["pipeline"]["writer"]["feeds_refused"] == 0
                assert status["store"]["kind"] == "forward"
                await stop(second)
            await stop(edge_daemon)
    assert_stored_once(sim, db)  # every ticker, digit for digit, exactly once, at the central
    replayed = [m for m in edge_daemon.messages() if "store is back" in m]
    assert replayed


async def test_a_central_that_refuses_the_key_gets_batches_logged_and_skipped(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _sim, central, edge = await central_and_edge(tmp_path, nursery, "not_a_key_of_the_central")
    with trio.fail_after(60):
        async with open_chrono(central) as central_daemon, open_chrono(edge) as edge_daemon:

            async def refused() -> int:
                writer = (await get_json(edge_daemon.port, "/status"))["pipeline"]["writer"]
                assert writer["spool"]["batches"] == 0  # nothing kept to retry
                return int(writer["feeds_refused"])

            while await refused() < 10:
                await trio.sleep(0.1)
            answer = await get_json(  # an edge keeps no store to read
                edge_daemon.port,
                "/prices/range?symbol=BTC/USD&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
            )
            await stop(edge_daemon)
            await stop(central_daemon)
    logged = " ".join(edge_daemon.messages())
    assert "the store refused a batch" in logged
    assert "answered 401" in logged
    assert "not_a_key_of_the_central" not in logged  # the key is a secret: redacted
    assert answer["error"]["code"] == "DATABASE_ERROR"
