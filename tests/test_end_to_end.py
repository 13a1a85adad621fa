"""`chrono run` as a real process against the Coinbase simulator: REST while it runs, `chrono
status`, garbage and a dropped connection survived, SIGTERM, and every ticker stored once."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import trio

from chrono.model import time_text
from chrono.store.sqlite import format_time as stored_time
from chrono.testing.process import open_chrono
from chrono.testing.simulators import CoinbaseSimulator, SentTick
from tests.conftest import ADMIN_KEY, PUBLIC_KEY
from tests.daemon import chrono_status, free_port, write_config
from tests.waiting import wait_until


def last_trades(sim: CoinbaseSimulator) -> list[SentTick]:
    return list({tick.native: tick for tick in sim.ticks}.values())


def replay(tick: SentTick) -> str:
    """A ticker frame for a trade already sent, as Coinbase repeats it after a subscribe."""
    return json.dumps(
        {
            "type": "ticker",
            "product_id": tick.native,
            "price": tick.price,
            "time": time_text(tick.time) if tick.time else None,
            "trade_id": tick.trade_id,
        }
    )


def newest_sent(sim: CoinbaseSimulator) -> dict[str, str]:
    newest: dict[str, str] = {}
    for tick in sim.ticks:
        newest[tick.native.replace("-", "/")] = tick.price
    return newest


async def latest_prices(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.get(
        "/prices/latest",
        params={"symbols": "BTC/USD,ETH/USD"},
        headers={"Authorization": f"Bearer {PUBLIC_KEY}"},
    )
    if response.status_code != 200:
        return {}
    return {item["symbol"]: item["price"] for item in response.json()["data"]}


async def wait_caught_up(sim: CoinbaseSimulator, http: httpx.AsyncClient) -> None:
    """The simulator is silent; wait until Chrono shows the last price it sent of each symbol."""
    while (await latest_prices(http)) != newest_sent(sim):
        await trio.sleep(0.02)


def stored_rows(db: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT symbol, price, timestamp, source FROM price_feeds").fetchall()


def assert_stored_once(sim: CoinbaseSimulator, db: Path) -> None:
    sent = [
        (t.native.replace("-", "/"), t.price, stored_time(t.time), "coinbase") for t in sim.ticks
    ]
    assert len(set(sent)) == len(sent)
    assert sorted(stored_rows(db)) == sorted(sent)  # every ticker, digit for digit, exactly once


async def test_run_collect_serve_drain_and_store_each_ticker_once(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    config = await write_config(tmp_path, sim.url)
    with trio.fail_after(30):
        async with open_chrono(config) as daemon:
            async with httpx.AsyncClient(base_url=daemon.url) as http:
                await exercise(sim, http, config)
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    assert_stored_once(sim, tmp_path / "data" / "chrono.db")
    assert "SIGTERM: draining" in daemon.messages()
    assert "drained" in daemon.messages()
    assert all(ADMIN_KEY not in json.dumps(r) for r in daemon.logs)


async def exercise(sim: CoinbaseSimulator, http: httpx.AsyncClient, config: Path) -> None:
    await sim.wait_subscribed()
    await wait_until(lambda: len(sim.ticks) >= 50)
    # The newest price of each symbol is visible while Chrono runs.
    sim.set_silent(True)
    await wait_caught_up(sim, http)
    # Garbage is skipped without a reconnect.
    sim.inject(["{not json", '{"type":"ticker"}'])
    sim.set_silent(False)
    await wait_until(lambda: len(sim.ticks) >= 100)
    # An abrupt drop: reconnect, resubscribe; the replayed last trade is not stored twice.
    sim.set_silent(True)
    await wait_caught_up(sim, http)
    sim.drop_connections()
    await sim.wait_subscribed(2)
    # The exchange repeats each product's last trade after a subscribe: the same trades again.
    sim.inject([replay(tick) for tick in last_trades(sim)])
    sim.set_silent(False)
    await wait_until(lambda: len(sim.ticks) >= 150)
    sim.set_silent(True)
    await wait_caught_up(sim, http)

    response = await http.get("/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    status = response.json()
    [collector] = status["collectors"]
    assert status["pipeline"]["fanout"]["duplicates_dropped"] == 2  # the two replayed trades
    assert collector["invalid_frames"] == {"malformed": 1, "schema": 1}
    assert collector["reconnects"] == 1
    assert collector["state"] == "streaming"
    assert collector["frames_fast"] > 0  # the tickers' reads took the fast path (not garbage)

    shown = await chrono_status(config)
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.decode()
    assert "coinbase" in table
    assert "streaming" in table
    assert "BTC/USD,ETH/USD" in table


async def test_status_says_so_when_the_daemon_is_unreachable(tmp_path: Path) -> None:
    port = await free_port()  # nothing listens there
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\nport = {port}\n[auth]\nadmin_keys = ['{ADMIN_KEY}']\n")
    with trio.fail_after(20):
        shown = await chrono_status(config)
    assert shown.returncode == 1
    assert f"cannot reach Chrono at http://127.0.0.1:{port}" in shown.stderr.decode()


async def test_a_port_in_use_exits_1_at_once_naming_it(tmp_path: Path) -> None:
    busy = trio.socket.socket()
    await busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\nport = {port}\n")
    with busy, trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "chrono", "run", str(config)],
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert f"server: cannot listen on 127.0.0.1:{port}: Address already in use" in (
        result.stderr.decode()
    )
