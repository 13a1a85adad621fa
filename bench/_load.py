"""Shared by the HTTP load benchmarks (``api_reads.py``, ``api_overhead.py``): the market they
ingest, its ingest into a running ``chrono run``, the per-route load tally, CPU per process,
and the summary of one route's run.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio
from _common import BenchError, ReadOnlyDb, percentile

from chrono.model import time_text

INTERNAL_KEY: Final = "bench_internal_key_0001"
PUBLIC_KEY: Final = "bench_public_key_0001"
SYMBOLS: Final = (
    "BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD", "AVAX/USD", "DOT/USD",
    "LINK/USD", "LTC/USD", "BCH/USD", "UNI/USD", "ATOM/USD", "XLM/USD", "ETC/USD", "FIL/USD",
    "AAVE/USD", "ALGO/USD", "NEAR/USD", "APT/USD",
)  # fmt: skip
BASES: Final = (
    "67234.56", "3512.12", "187.43", "0.6123", "0.4521", "0.1634", "35.12", "7.215", "14.87",
    "84.31", "452.7", "9.874", "8.912", "0.1187", "26.43", "5.412", "152.3", "0.1923", "5.87",
    "9.12",
)  # fmt: skip
SOURCES: Final = ("coinbase", "kraken", "bitstamp", "gemini", "okx")
FEEDS_PER_POST: Final = 100
SETUP_TIMEOUT_S: Final = 60.0


def ingest_bodies(
    now: datetime, *, newest_age: timedelta, steps: int = 1, step: timedelta = timedelta(0)
) -> list[bytes]:
    """Every feed of ``steps`` rounds ``step`` apart (the newest ``newest_age`` old), oldest
    first, in bodies of 100: each source a few bps off the others (so no outlier), the price
    drifting a little per round (so the newest feed is not the oldest's)."""
    encoder = msgspec.json.Encoder()
    newest = now - newest_age
    feeds = []
    for round_ in range(steps):
        at = newest - (steps - 1 - round_) * step
        for symbol, base in zip(SYMBOLS, BASES, strict=True):
            places = len(base.split(".")[1])
            for s, source in enumerate(SOURCES):
                factor = 1 + Decimal(s - 2).scaleb(-4) + Decimal(round_ % 7 - 3).scaleb(-5)
                price = (Decimal(base) * factor).quantize(Decimal(1).scaleb(-places - 1))
                feeds.append({"symbol": symbol, "price": str(price),
                              "volume": str(1000 + 10 * s + round_), "source": source,
                              "timestamp": time_text(at + timedelta(microseconds=s))})  # fmt: skip
    return [
        encoder.encode(
            {
                "worker_id": "bench-edge",
                "timestamp": time_text(now),
                "feeds": feeds[i : i + FEEDS_PER_POST],
            }
        )
        for i in range(0, len(feeds), FEEDS_PER_POST)
    ]


async def feed_chrono(url: str, db: ReadOnlyDb, bodies: list[bytes], expected: int) -> None:
    """POST every body to ``/internal/ingest``; then wait until the store has ``expected`` rows."""
    headers = {"Authorization": f"Bearer {INTERNAL_KEY}", "Content-Type": "application/json"}
    with trio.fail_after(SETUP_TIMEOUT_S):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            for body in bodies:
                response = await http.post("/internal/ingest", content=body)
                if response.status_code != 200 or response.json()["failed"]:
                    raise BenchError(f"ingest answered {response.status_code}: {response.text}")
    await db.wait_count(expected, SETUP_TIMEOUT_S)


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # exceptions, by type
    first_error: str = ""

    def note_error(self, what: str) -> None:
        if not self.first_error:
            self.first_error = what

    def summary(self, label: str, elapsed: float, server_cpu: float, client_cpu: float
                ) -> dict[str, Any]:  # fmt: skip
        """One route's run: rate, latency, CPU per request of the server and of the load."""
        done = len(self.latencies)
        if not done:
            raise BenchError(f"{label}: no request answered ({self.first_error})")
        ordered = sorted(self.latencies)
        errors = sum(n for status, n in self.statuses.items() if status != 200)
        return {
            "label": label,
            "requests": done,
            "elapsed_s": elapsed,
            "requests_per_s": done / elapsed,
            "p50_ms": 1000 * percentile(ordered, 50),
            "p99_ms": 1000 * percentile(ordered, 99),
            "max_ms": 1000 * ordered[-1],
            "server_cpu_us_per_request": 1e6 * server_cpu / done,
            "client_cpu_us_per_request": 1e6 * client_cpu / done,
            "server_cpu_share": server_cpu / elapsed,  # of one core
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "exceptions": dict(self.failures),
            "errors": errors + sum(self.failures.values()),
            "first_error": self.first_error,
        }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
