"""`chrono run` as a real child process, for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

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

[service]
drain_timeout_s = {drain_timeout_s}

[auth]
public_keys = ["{public}"]
admin_keys = ["{admin}"]

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


async def write_config(folder: Path, exchange_url: str, *, drain_timeout_s: float = 30) -> Path:
    """A config with a fixed free port, so that `chrono status CONFIG` finds the daemon."""
    config = folder / "config.toml"
    config.write_text(
        CONFIG.format(
            port=await free_port(),
            url=exchange_url,
            public=PUBLIC_KEY,
            admin=ADMIN_KEY,
            drain_timeout_s=drain_timeout_s,
        )
    )
    return config


class Daemon:
    """A `chrono run` child process whose JSON log lines are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.port = 0
        self.logs_ended = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages(self) -> list[str]:
        return [str(record["message"]) for record in self.logs]

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
        self.logs_ended.set()

    async def wait_exit(self) -> int:
        """The exit code, once the process has ended and its last log line is read."""
        code = await self.process.wait()
        await self.logs_ended.wait()
        return code


@asynccontextmanager
async def run_chrono(config: Path, nursery: trio.Nursery) -> AsyncIterator[Daemon]:
    """Start `chrono run CONFIG`, wait until it serves; kill it if the test leaves it running."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "chrono", "run", str(config)], stderr=subprocess.PIPE
    )
    daemon = Daemon(process)
    nursery.start_soon(daemon.read_logs)
    try:
        await wait_until(lambda: daemon.port != 0 or process.poll() is not None)
        assert daemon.port, f"chrono run exited {process.returncode}: {daemon.logs}"
        yield daemon
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def chrono_status(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "chrono", "status", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
