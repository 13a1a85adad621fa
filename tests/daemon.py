"""Configs and commands for end-to-end tests of `chrono run` (see chrono.testing.process)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from chrono.testing.process import ChronoProcess, open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.conftest import ADMIN_KEY, PUBLIC_KEY

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
graceful_timeout_s = 2
tcp_user_timeout_ms = {tcp_user_timeout_ms}

[storage]
{storage}

[batch]
max_feeds = 100
max_interval_ms = 200

[log]
level = "debug"

[service]
drain_timeout_s = {drain_timeout_s}

[auth]
public_keys = ["{public}"]
admin_keys = ["{admin}"]

{collectors}
"""

SQLITE_STORAGE = 'url = "sqlite:///data/chrono.db"'

COINBASE = """
[[collectors]]
exchange = "coinbase"
symbols = ["BTC/USD", "ETH/USD"]
url = "{url}"
backoff_initial_s = 0.05
"""


async def free_port() -> int:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


async def write_config(
    folder: Path,
    exchange_url: str = "",
    *,
    drain_timeout_s: float = 30,
    tcp_user_timeout_ms: int = 20_000,
    collectors: str = "",
    storage: str = SQLITE_STORAGE,
) -> Path:
    """A config with a fixed free port, so that `chrono status CONFIG` finds the daemon.

    ``collectors`` replaces the one Coinbase collector pointed at ``exchange_url``;
    ``storage`` is the body of ``[storage]``.
    """
    config = folder / "config.toml"
    config.write_text(
        CONFIG.format(
            port=await free_port(),
            collectors=collectors or COINBASE.format(url=exchange_url),
            public=PUBLIC_KEY,
            admin=ADMIN_KEY,
            drain_timeout_s=drain_timeout_s,
            tcp_user_timeout_ms=tcp_user_timeout_ms,
            storage=storage,
        )
    )
    return config


async def get_json(port: int, path: str) -> Any:
    """A GET on a running daemon with the admin key; the decoded body, whatever the status."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    return response.json()


async def chrono_status(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "chrono", "status", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@asynccontextmanager
async def coinbase_chrono(
    folder: Path, nursery: trio.Nursery, *, extra: str = ""
) -> AsyncIterator[tuple[ChronoProcess, Path]]:
    """A ``chrono run`` (its config with ``extra`` appended) collecting from a ticking Coinbase
    simulator, subscribed; after the block, SIGTERM must drain it to exit 0."""
    sim = CoinbaseSimulator(tick_interval_s=0.05)
    await nursery.start(sim.serve)
    config = await write_config(folder, sim.url)
    if extra:
        config.write_text(config.read_text() + extra)
    async with open_chrono(config) as daemon:
        await sim.wait_subscribed()
        yield daemon, config
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0
