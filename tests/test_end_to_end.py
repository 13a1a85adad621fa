"""`chrono run` as a real process against the Coinbase simulator: REST while it runs, `chrono
status`, garbage and a dropped connection survived, SIGTERM, and every ticker stored once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.conftest import ADMIN_KEY, PUBLIC_KEY
from tests.waiting import wait_until

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
url = "sqlite:///data/chrono.db"

[batch]
max_feeds = 100
max_interval_ms = 200

[log]
level = "debug"

[auth]
public_keys = ["{public}"]
admin_keys = ["{admin}"]

[[collectors]]
exchange = "coinbase"
symbols = ["BTC/USD", "ETH/USD"]
url = "{url}"
backoff_initial_s = 0.05
"""


class Daemon:
    """A `chrono run` child process whose JSON log lines are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.port = 0

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                record = json.loads(line)
                self.logs.append(record)
                if record["message"] == "http listening":
                    self.port = record["data"]["port"]


def newest_sent(sim: CoinbaseSimulator) -> dict[str, str]:
    newest: dict[str, str] = {}
    for tick in sim.ticks:
        newest[tick.product_id.replace("-", "/")] = tick.price
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


async def free_port() -> int:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


async def chrono_status(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "chrono", "status", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def text(output: bytes) -> str:
    return output.decode()


async def test_run_collect_serve_drain_and_store_each_ticker_once(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    config = tmp_path / "config.toml"
    port = await free_port()  # a fixed port, so that `chrono status CONFIG` finds the daemon
    config.write_text(CONFIG.format(port=port, url=sim.url, public=PUBLIC_KEY, admin=ADMIN_KEY))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "chrono", "run", str(config)], stderr=subprocess.PIPE
    )
    daemon = Daemon(process)
    nursery.start_soon(daemon.read_logs)
    try:
        with trio.fail_after(30):
            await wait_until(lambda: daemon.port != 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as http:
                await exercise(sim, http, config, tmp_path)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert_stored_once(sim, tmp_path / "data" / "chrono.db")
    messages = [r["message"] for r in daemon.logs]
    assert "SIGTERM: draining" in messages
    assert "drained" in messages
    assert all(ADMIN_KEY not in json.dumps(r) for r in daemon.logs)


async def exercise(
    sim: CoinbaseSimulator, http: httpx.AsyncClient, config: Path, tmp_path: Path
) -> None:
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
    sim.set_silent(False)
    await wait_until(lambda: len(sim.ticks) >= 150)
    sim.set_silent(True)
    await wait_caught_up(sim, http)

    response = await http.get("/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    [collector] = response.json()["collectors"]
    assert collector["invalid_frames"] == {"malformed": 1, "schema": 1}
    assert collector["reconnects"] == 1
    assert collector["state"] == "streaming"

    shown = await chrono_status(config)
    assert shown.returncode == 0, shown.stderr
    table = text(shown.stdout)
    assert "coinbase" in table
    assert "streaming" in table
    assert "BTC/USD,ETH/USD" in table


def assert_stored_once(sim: CoinbaseSimulator, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT symbol, price, timestamp, source FROM price_feeds").fetchall()
    sent = [(t.product_id.replace("-", "/"), t.price, t.time, "coinbase") for t in sim.ticks]
    assert len(set(sent)) == len(sent)
    assert sorted(rows) == sorted(sent)  # every ticker, digit for digit, exactly once


async def test_status_says_so_when_the_daemon_is_unreachable(tmp_path: Path) -> None:
    port = await free_port()  # nothing listens there
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\nport = {port}\n[auth]\nadmin_keys = ['{ADMIN_KEY}']\n")
    with trio.fail_after(20):
        shown = await chrono_status(config)
    assert shown.returncode == 1
    assert f"cannot reach Chrono at http://127.0.0.1:{port}" in text(shown.stderr)
