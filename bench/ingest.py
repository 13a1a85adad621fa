"""``POST /internal/ingest`` under load: 10 HTTP workers -> ``chrono run`` -> SQLite, against a
``GET /health`` floor on the same server.

Two phases on one ``chrono run`` (bench/README.md explains how to read them):

1. floor: the same workers, each with its own keep-alive connection, ``GET /health`` as fast as
   answers come: what one Chrono process answers for a request that does nothing;
2. ingest: each worker posts ``--batches`` batches of 100 distinct feeds (bodies built before the
   clock starts); per batch latency is the POST's round trip, feeds/s is counted from the first
   POST to the last row's ``ingested_at``, once every row is stored (read-only SQLite).

Usage: ``python bench/ingest.py [--workers W] [--batches B] [--health-requests R] [--json]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio
from _common import (
    ADMIN_KEY,
    LIMITS_TOML,
    BenchError,
    ReadOnlyDb,
    epoch_s,
    open_bench_chrono,
    percentile,
    run_main,
)

from chrono.config import BatchConfig
from chrono.model import time_text, utc_now

INTERNAL_KEY: Final = "bench_internal_key_0001"
FEEDS_PER_BATCH: Final = 100  # the route's maximum
TARGET_FEEDS_PER_S: Final = 1_000  # the seed's targets
TARGET_P95_MS: Final = 50.0
PHASE_TIMEOUT_S: Final = 120.0
SYMBOLS: Final = ("BTC/USD", "ETH/USD", "SOL/USD")
BURST_SOURCE: Final = "bench_burst"
PACED_SOURCE: Final = "bench_paced"

INGEST_CONFIG: Final = """\
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

{limits}
[auth]
internal_keys = ["{internal_key}"]
admin_keys = ["{admin_key}"]
"""


def build_bodies(workers: int, batches: int, source: str, first: int) -> list[list[bytes]]:
    """Per worker, its batches as request bodies: distinct feeds (one microsecond apart from
    feed number ``first`` on), prices with 2 to 8 places as decimal strings, an hour old so that
    none is in the future."""
    start = utc_now() - timedelta(hours=1)
    encoder = msgspec.json.Encoder()
    bodies: list[list[bytes]] = []
    n = first
    for w in range(workers):
        own: list[bytes] = []
        for _ in range(batches):
            feeds = []
            for _ in range(FEEDS_PER_BATCH):
                places = 2 + n % 7
                price = Decimal(60_000 + n % 1000) + Decimal(n % 97).scaleb(-places)
                feeds.append(
                    {
                        "symbol": SYMBOLS[n % len(SYMBOLS)],
                        "price": str(price),
                        "volume": "12.50000000",
                        "source": source,
                        "timestamp": time_text(start + timedelta(microseconds=n)),
                        "metadata": {"trade_id": n},
                    }
                )
                n += 1
            envelope = {"worker_id": f"edge-{w}", "timestamp": time_text(utc_now()), "feeds": feeds}
            own.append(encoder.encode(envelope))
        bodies.append(own)
    return bodies


def latency_summary(seconds: list[float], elapsed_s: float) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "requests": len(ordered),
        "elapsed_s": elapsed_s,
        "requests_per_s": len(ordered) / elapsed_s,
        "p50_ms": 1000 * percentile(ordered, 50),
        "p95_ms": 1000 * percentile(ordered, 95),
        "p99_ms": 1000 * percentile(ordered, 99),
        "max_ms": 1000 * ordered[-1],
    }


def _client(url: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {INTERNAL_KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1)  # one keep-alive connection per worker
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits)


async def measure_floor(url: str, workers: int, requests: int) -> dict[str, float]:
    """``workers`` clients, ``requests`` sequential ``GET /health`` each."""
    latencies: list[float] = []

    async def worker() -> None:
        async with _client(url) as http:
            await http.get("/health")  # connect outside the clock
            for _ in range(requests):
                sent = time.perf_counter()
                response = await http.get("/health")
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    raise BenchError(f"GET /health answered {response.status_code}")

    with trio.fail_after(PHASE_TIMEOUT_S):
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
    return latency_summary(latencies, elapsed)


async def post_all(url: str, bodies: list[list[bytes]], interval_s: float = 0.0) -> dict[str, Any]:
    """Every worker posts its batches, back to back (``interval_s`` 0: as fast as answers come)
    or one per ``interval_s`` on a fixed schedule, the workers' schedules evenly staggered."""
    latencies: list[float] = []
    acknowledged = 0
    ready = trio.Event()
    workers = len(bodies)

    async def worker(w: int, own: list[bytes], connected: trio.MemorySendChannel[None]) -> None:
        nonlocal acknowledged
        async with _client(url) as http:
            await http.get("/health")  # connect outside the clock
            async with connected:
                pass
            await ready.wait()
            due = trio.current_time() + interval_s * w / workers
            for body in own:
                if interval_s:
                    await trio.sleep_until(due)
                    due += interval_s
                sent = time.perf_counter()
                response = await http.post("/internal/ingest", content=body)
                latencies.append(time.perf_counter() - sent)
                reply = response.json()
                if response.status_code != 200 or reply["ingested"] != FEEDS_PER_BATCH:
                    raise BenchError(f"ingest answered {response.status_code}: {response.text}")
                acknowledged += reply["ingested"]

    total = sum(len(own) for own in bodies) * FEEDS_PER_BATCH
    with trio.fail_after(PHASE_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            connected, all_connected = trio.open_memory_channel[None](0)
            async with connected:
                for w, own in enumerate(bodies):
                    nursery.start_soon(worker, w, own, connected.clone())
            async for _ in all_connected:
                pass  # ends once every worker closed its clone: all are connected
            started_wall, started = time.time(), time.perf_counter()
            ready.set()
        posted_s = time.perf_counter() - started
    if acknowledged != total:
        raise BenchError(f"{acknowledged} feeds acknowledged of {total}")
    return {
        "feeds": total,
        "started_wall": started_wall,
        "posted_s": posted_s,
        "acknowledged_feeds_per_s": total / posted_s,
        "latency": latency_summary(latencies, posted_s),
    }


async def measure_burst(url: str, db: ReadOnlyDb, bodies: list[list[bytes]]) -> dict[str, Any]:
    """As fast as the workers get answers; feeds/s until the last row is committed."""
    result = await post_all(url, bodies)
    total = result["feeds"]
    rows = await db.wait_count(total, PHASE_TIMEOUT_S)
    [(last_commit, distinct)] = await db.query(
        "SELECT max(ingested_at), count(DISTINCT source || symbol || timestamp || price)"
        " FROM price_feeds"
    )
    if distinct != total:
        raise BenchError(f"{distinct} distinct rows of {total}")
    result["rows_stored"] = rows
    result["exactly_once"] = distinct == rows == total
    result["stored_s"] = epoch_s(last_commit) - result["started_wall"]
    result["feeds_per_s"] = total / result["stored_s"]
    return result


async def measure_paced(
    url: str, db: ReadOnlyDb, bodies: list[list[bytes]], rate: float, before: int
) -> dict[str, Any]:
    """``rate`` feeds/s in all: per batch latency at the target rate, not at saturation; and
    per feed, its ``received_at`` (set by the route) to its row's ``ingested_at``."""
    interval_s = len(bodies) * FEEDS_PER_BATCH / rate
    result = await post_all(url, bodies, interval_s)
    total = result["feeds"]
    # The tail may wait for the batch interval (a partial batch); allow for it.
    await db.wait_count(before + total, PHASE_TIMEOUT_S)
    rows = await db.query(
        "SELECT received_at, ingested_at FROM price_feeds WHERE source = ?", (PACED_SOURCE,)
    )
    if len(rows) != total:
        raise BenchError(f"paced phase: {len(rows)} rows stored of {total}")
    to_store = sorted(epoch_s(ingested) - epoch_s(received) for received, ingested in rows)
    result["target_feeds_per_s"] = rate
    result["to_store_ms"] = {
        "p50": 1000 * percentile(to_store, 50),
        "p95": 1000 * percentile(to_store, 95),
        "max": 1000 * to_store[-1],
    }
    return result


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    batch = BatchConfig()
    burst_bodies = build_bodies(args.workers, args.batches, BURST_SOURCE, 0)
    per_worker = max(1, round(args.paced_s * args.rate / FEEDS_PER_BATCH / args.workers))
    burst_feeds = args.workers * args.batches * FEEDS_PER_BATCH
    paced_bodies = build_bodies(args.workers, per_worker, PACED_SOURCE, burst_feeds)
    with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            INGEST_CONFIG.format(
                internal_key=INTERNAL_KEY,
                admin_key=ADMIN_KEY,
                max_feeds=batch.max_feeds,
                max_interval_ms=batch.max_interval_ms,
                limits=LIMITS_TOML,
            )
        )
        async with open_bench_chrono(config) as chrono:
            log(f"floor: {args.workers} workers x {args.health_requests} GET /health ...")
            floor = await measure_floor(chrono.url, args.workers, args.health_requests)
            db = ReadOnlyDb(Path(tmp) / "chrono.db")
            try:
                log(f"burst: {args.workers} workers x {args.batches} batches x 100 feeds ...")
                burst = await measure_burst(chrono.url, db, burst_bodies)
                log(f"paced: {args.rate:g} feeds/s for {per_worker} batches per worker ...")
                paced = await measure_paced(chrono.url, db, paced_bodies, args.rate, burst_feeds)
            finally:
                db.close()
            code = await chrono.stop()
            if code != 0:
                raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
    return {
        "cores": os.cpu_count(),
        "workers": args.workers,
        "floor": floor,
        "burst": burst,
        "paced": paced,
        "ratio_requests_per_s": burst["latency"]["requests_per_s"] / floor["requests_per_s"],
        "targets": {"feeds_per_s": TARGET_FEEDS_PER_S, "p95_ms": TARGET_P95_MS},
        "targets_met": {
            "feeds_per_s": burst["feeds_per_s"] >= TARGET_FEEDS_PER_S,
            "p95_ms": paced["latency"]["p95_ms"] < TARGET_P95_MS,
        },
        "exit_code": code,
        "batch": {"max_feeds": batch.max_feeds, "max_interval_ms": batch.max_interval_ms},
    }


def render(result: dict[str, Any]) -> str:
    floor, burst, paced = result["floor"], result["burst"], result["paced"]
    workers, met = result["workers"], result["targets_met"]

    def line(label: str, stats: dict[str, float]) -> str:
        return (
            f"{label:<44}{stats['requests_per_s']:>7,.0f} req/s  p50 {stats['p50_ms']:5.1f} ms"
            f"  p95 {stats['p95_ms']:5.1f} ms  p99 {stats['p99_ms']:5.1f} ms"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    lat, store = paced["latency"], paced["to_store_ms"]
    return "\n".join(
        [
            f"chrono ingest ({workers} HTTP workers, 100-feed batches -> chrono run -> SQLite),"
            f" machine: {result['cores']} cores",
            line(f"floor: GET /health, {workers} workers, no pause", floor),
            line(
                f"burst: POST /internal/ingest x {burst['latency']['requests']:,}", burst["latency"]
            )
            + f"  ({result['ratio_requests_per_s']:.2f} of floor req/s)",
            f"{'burst stored: first POST -> last commit':<44}{burst['feeds_per_s']:>7,.0f} feeds/s"
            f" ({burst['feeds']:,} feeds in {burst['stored_s']:.2f} s, each once:"
            f" {'yes' if burst['exactly_once'] else 'NO'})",
            line(f"paced: {paced['target_feeds_per_s']:,.0f} feeds/s, {lat['requests']} POSTs", lat)
            + f"  (achieved {paced['acknowledged_feeds_per_s']:,.0f} feeds/s)",
            f"{'paced: feed received -> row committed':<44}"
            f"p50 {store['p50']:.1f} ms  p95 {store['p95']:.1f} ms  max {store['max']:.1f} ms",
            f"targets: stored >= {TARGET_FEEDS_PER_S:,} feeds/s: {verdict(met['feeds_per_s'])}"
            f" ({burst['feeds_per_s']:,.0f}); p95 per batch < {TARGET_P95_MS:g} ms at"
            f" {paced['target_feeds_per_s']:,.0f} feeds/s: {verdict(met['p95_ms'])}"
            f" ({lat['p95_ms']:.1f} ms; at saturation {burst['latency']['p95_ms']:.1f} ms)",
            f"SIGTERM exit {result['exit_code']}; batch config {result['batch']}",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10, help="concurrent HTTP workers")
    parser.add_argument(
        "--batches", type=int, default=50, help="100-feed batches per worker in the burst"
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_FEEDS_PER_S, help="paced phase: feeds/s in all"
    )
    parser.add_argument("--paced-s", type=float, default=15.0, help="paced phase length")
    parser.add_argument(
        "--health-requests", type=int, default=500, help="GET /health per worker (the floor)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_main(run_bench, args, render)


if __name__ == "__main__":
    sys.exit(main())
