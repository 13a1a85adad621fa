"""Shared by the benchmarks: a ``chrono run`` child process, read-only SQLite queries, stats.

Every wait here is bounded; a child process is killed on any error (``open_chrono``).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import trio

STARTUP_TIMEOUT_S: Final = 20.0  # `chrono run` to "http listening"
STOP_TIMEOUT_S: Final = 40.0  # SIGTERM to exit (Chrono's own drain deadline is 30 s)
POLL_S: Final = 0.1
ADMIN_KEY: Final = "bench_admin_key_0001"  # only for reading /status on loopback

CHRONO_CONFIG: Final = """\
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "sqlite:///chrono.db"

[batch]  # the defaults, spelled out because they shape the latency
max_feeds = {max_feeds}
max_interval_ms = {max_interval_ms}

[log]
level = "info"

[auth]
admin_keys = ["{admin_key}"]

[[collectors]]
exchange = "coinbase"
symbols = ["BTC/USD", "ETH/USD"]
url = "{url}"
silence_timeout_s = 300  # the simulator is silent between the phases
"""


class BenchError(Exception):
    """A benchmark precondition failed (a row count, an exit code, a timeout)."""


class ChronoProcess:
    """A ``chrono run`` child; its JSON log lines (stderr) are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.port = 0
        self._listening = trio.Event()

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._note(line)

    def _note(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:  # a traceback or other raw text: keep it for the error report
            record = {"message": line.decode("utf-8", "replace")}
        self.logs.append(record)
        if record.get("message") == "http listening":
            self.port = record["data"]["port"]
            self._listening.set()

    async def wait_listening(self) -> None:
        with trio.fail_after(STARTUP_TIMEOUT_S):
            await self._listening.wait()

    async def stop(self) -> int:
        """SIGTERM, then wait for the drain; the exit code (0 when drained cleanly)."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT_S):
            return await self.process.wait()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(json.dumps(r) for r in self.logs[-lines:])


def chrono_command(config: Path, profile: Path | None) -> list[str]:
    if profile is None:
        return [sys.executable, "-m", "chrono", "run", str(config)]
    # pyinstrument runs chrono in-process and writes its report when chrono exits (SIGTERM).
    report = ["-r", "html" if profile.suffix == ".html" else "text", "-o", str(profile)]
    return [sys.executable, "-m", "pyinstrument", *report, "-m", "chrono", "run", str(config)]


@asynccontextmanager
async def open_chrono(config: Path, *, profile: Path | None = None) -> AsyncIterator[ChronoProcess]:
    """``chrono run CONFIG``, listening; killed on the way out unless it already exited."""
    command = chrono_command(config, profile)
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    chrono = ChronoProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chrono.read_logs)
            try:
                await chrono.wait_listening()
            except trio.TooSlowError as exc:
                raise BenchError(f"chrono did not start:\n{chrono.tail()}") from exc
            yield chrono
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()


class ReadOnlyDb:
    """A read-only connection to Chrono's SQLite file (WAL lets it read while Chrono writes).

    Queries run in a worker thread, one at a time, so the simulator's loop is never blocked.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        self._limiter = trio.CapacityLimiter(1)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._conn.execute(sql, params).fetchall()

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def count(self) -> int:
        [(rows,)] = await self.query("SELECT count(*) FROM price_feeds")
        return int(rows)

    async def wait_count(self, expected: int, timeout_s: float, *, exact: bool = True) -> int:
        """Poll until ``expected`` rows are stored (or more, unless ``exact``); ``BenchError``
        on a timeout, or on more rows than expected when ``exact``."""
        with trio.move_on_after(timeout_s):
            while True:
                # max(id) is O(log n) and equals the count (Chrono never deletes, and an
                # ignored duplicate takes no id); count(*) scans, so it runs once at the end.
                [(top,)] = await self.query("SELECT coalesce(max(id), 0) FROM price_feeds")
                if top >= expected:
                    break
                await trio.sleep(POLL_S)
        rows = await self.count()
        if rows < expected or (exact and rows != expected):
            raise BenchError(f"{rows} rows stored after {timeout_s:g} s, expected {expected}")
        return rows

    def close(self) -> None:
        self._conn.close()


def epoch_s(text: str) -> float:
    """Chrono's and the simulator's ``2024-12-07T18:00:00.542551Z`` as POSIX seconds."""
    return datetime.fromisoformat(text).timestamp()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence, ``q`` in [0, 100]."""
    if not sorted_values:
        raise BenchError("no values")
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
