"""Shared by the benchmarks: the ``chrono run`` child, read-only SQLite queries, stats.

Every wait here is bounded; a child process is killed on any error (``open_chrono``).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import trio

from chrono.testing.process import ChronoProcess, open_chrono

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


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in ``group``, however deeply nested (nurseries wrap a bench's error)."""
    return [
        leaf
        for exc in group.exceptions
        for leaf in (leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


# A benchmark measures speed, not the rate limits: every bucket it takes from is far above any
# load here; the limiter still takes its token on every request, as in production.
UNLIMITED_PER_MIN: Final = 10_000_000
LIMITED: Final = ("internal_per_min", "public_per_min", "unkeyed_per_min")
BENCH_LIMITS: Final = dict.fromkeys(LIMITED, UNLIMITED_PER_MIN)
LIMITS_TOML: Final = "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in BENCH_LIMITS.items())


class BenchError(Exception):
    """A benchmark precondition failed (a row count, an exit code, a timeout)."""


def run_main(
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
    args: argparse.Namespace,
    render: Callable[[dict[str, Any]], str],
) -> int:
    """A benchmark's ``main``: its table (JSON with ``--json``) on stdout and 0, or each
    ``BenchError`` as ``bench failed: ...`` on stderr and 1."""
    failures: list[BaseException] = []
    try:
        result = trio.run(run, args)
    except* BenchError as group:  # nurseries wrap it; a return is not allowed in except*
        failures = leaves(group)
    if failures:
        for exc in failures:
            print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else render(result))
    return 0


def chrono_command(
    config: Path, profile: Path | None, env: Mapping[str, str] | None = None
) -> list[str] | None:
    """``None`` for a plain ``chrono run``; pyinstrument around it when profiling; ``env``
    (say ``SSL_CERT_FILE``) set through ``env(1)``, which execs: the pid is still chrono's."""
    if profile is None and not env:
        return None
    command = [sys.executable, "-m", "chrono", "run", str(config)]
    if profile is not None:
        # pyinstrument runs chrono in-process and writes its report when chrono exits (SIGTERM).
        report = ["-r", "html" if profile.suffix == ".html" else "text", "-o", str(profile)]
        command[1:3] = ["-m", "pyinstrument", *report, "-m", "chrono"]
    return ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *command] if env else command


@asynccontextmanager
async def open_bench_chrono(
    config: Path, *, profile: Path | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[ChronoProcess]:
    """``chrono run CONFIG`` (with ``env`` added to its environment), serving; a failure to
    start becomes ``BenchError``."""
    try:
        async with open_chrono(config, command=chrono_command(config, profile, env)) as chrono:
            yield chrono
    except RuntimeError as exc:
        raise BenchError(str(exc)) from exc


class ReadOnlyDb:
    """A read-only connection to Chrono's SQLite file (WAL lets it read while Chrono writes).

    Queries run in a worker thread, one at a time, so the simulator's loop is never blocked.
    """

    # max(id) is O(log n) and equals the count (Chrono never deletes, and an ignored duplicate
    # takes no id); count(*) scans, so ``wait_count`` runs it once at the end.
    TOP_SQL = "SELECT coalesce(max(id), 0) FROM price_feeds"

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

    async def top(self) -> int:
        """The rows stored, cheaply (``TOP_SQL``)."""
        [(top,)] = await self.query(self.TOP_SQL)
        return int(top)

    async def wait_count(self, expected: int, timeout_s: float, *, exact: bool = True) -> int:
        """Poll until ``expected`` rows are stored (or more, unless ``exact``); ``BenchError``
        on a timeout, or on more rows than expected when ``exact``."""
        with trio.move_on_after(timeout_s):
            while True:
                if await self.top() >= expected:
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
