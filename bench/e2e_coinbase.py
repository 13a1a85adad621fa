"""Chrono end to end: Coinbase simulator -> ``chrono run`` -> SQLite, against a bare-client floor.

Three numbers from one run (bench/README.md explains how to read them):

1. floor: a bare ``websockets.trio`` client, in its own process, receives and decodes a burst;
2. throughput: ``chrono run`` stores the same burst; feeds/s from the burst's start to the
   last commit, and every feed checked stored exactly once;
3. latency: a steady phase (``--rate`` frames/s) timed from each ticker's ``time`` (stamped when
   the simulator generates and queues it) to its row's ``ingested_at``.

Usage: ``python bench/e2e_coinbase.py [--feeds N] [--rate R] [--steady-s S] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import httpx
import trio
from _common import (
    ADMIN_KEY,
    CHRONO_CONFIG,
    BenchError,
    ReadOnlyDb,
    epoch_s,
    leaves,
    open_bench_chrono,
    percentile,
)
from _floor import PRODUCTS, SUBSCRIBE_TIMEOUT_S, floor_client, measure_floor, phase_timeout_s

from chrono.config import BatchConfig
from chrono.store.sqlite import format_time as stored_time
from chrono.testing.simulators import CoinbaseSimulator, SentTick

PACE_S: Final = 0.01  # the steady phase writes the trades due every 10 ms
SETTLE_S: Final = 15.0  # after the steady phase, beyond the batch interval, for the last rows


# --- chrono run: throughput (the burst), then latency (the steady phase) ---------------


async def measure_chrono(
    feeds: int, rate: float, steady_s: float, profile: Path | None
) -> dict[str, Any]:
    """Burst then steady phase through one ``chrono run``; SIGTERM must exit 0."""
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)  # not even the ticker sent on subscribe: only the burst is stored
    batch = BatchConfig()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text(
                CHRONO_CONFIG.format(
                    url=sim.url,
                    admin_key=ADMIN_KEY,
                    max_feeds=batch.max_feeds,
                    max_interval_ms=batch.max_interval_ms,
                )
            )
            async with open_bench_chrono(config, profile=profile) as chrono:
                with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                    await sim.wait_subscribed(1)
                db = ReadOnlyDb(Path(tmp) / "chrono.db")
                try:
                    result = await _burst(sim, db, feeds)
                    result |= await _steady(sim, db, feeds, rate, steady_s, batch)
                finally:
                    db.close()
                result["batcher"] = await _batcher_status(chrono.port)
                result["exit_code"] = code = await chrono.stop()
                if code != 0:
                    raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
        nursery.cancel_scope.cancel()
    result["batch"] = {"max_feeds": batch.max_feeds, "max_interval_ms": batch.max_interval_ms}
    return result


async def _burst(sim: CoinbaseSimulator, db: ReadOnlyDb, feeds: int) -> dict[str, Any]:
    with trio.fail_after(phase_timeout_s(feeds)):
        await sim.send_burst(feeds)
    rows = await db.wait_count(feeds, phase_timeout_s(feeds))
    sent = sim.ticks[:feeds]
    # send_burst stamps every trade before writing the first: its last stamp is the burst's start.
    start = sent[-1].time.timestamp()
    [(last_commit, first_received)] = await db.query(
        "SELECT max(ingested_at), min(received_at) FROM price_feeds"
    )
    stored = await db.query("SELECT symbol, price, timestamp FROM price_feeds")
    once = sorted(stored) == sorted(_row_key(tick) for tick in sent)
    if not once:
        raise BenchError("the stored rows are not the burst's tickers, each once")
    elapsed = epoch_s(last_commit) - start
    return {
        "feeds": feeds,
        "rows_stored": rows,
        "exactly_once": once,
        "burst_to_last_commit_s": elapsed,
        "feeds_per_s": feeds / elapsed,
        "first_received_to_last_commit_s": epoch_s(last_commit) - epoch_s(first_received),
    }


def _row_key(tick: SentTick) -> tuple[str, str, str]:
    return (tick.native.replace("-", "/"), tick.price, stored_time(tick.time))


async def _steady(
    sim: CoinbaseSimulator,
    db: ReadOnlyDb,
    before: int,
    rate: float,
    steady_s: float,
    batch: BatchConfig,
) -> dict[str, Any]:
    """``rate`` tickers/s; latency = ``ingested_at`` - ``time`` over the first ``steady_s``.

    The stream keeps flowing until every row of the window is stored, so that they are all
    flushed as in a continuous stream (by count), not by the interval once the stream stops.
    """
    first = len(sim.ticks)
    settle_s = batch.max_interval_ms / 1000 + SETTLE_S
    stop = trio.Event()  # not a cancel: a burst cut short would leave its trades unsent
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pace, sim, rate, stop)
        await trio.sleep(steady_s)
        window = sim.ticks[first:]
        if not window:
            raise BenchError("the simulator sent nothing in the steady phase")
        # One pipeline, in order: once this many rows are in, the whole window is.
        await db.wait_count(before + len(window), settle_s, exact=False)
        stop.set()
    await db.wait_count(len(sim.ticks), settle_s)  # the tail: flushed by the interval
    rows = await db.query(
        "SELECT timestamp, ingested_at FROM price_feeds WHERE timestamp BETWEEN ? AND ?",
        (stored_time(window[0].time), stored_time(window[-1].time)),
    )
    if len(rows) != len(window):
        raise BenchError(f"steady phase: {len(rows)} rows for {len(window)} tickers")
    latencies = sorted(epoch_s(ingested) - epoch_s(stamped) for stamped, ingested in rows)
    span_s = (window[-1].time - window[0].time).total_seconds()
    return {
        "steady_target_per_s": rate,
        "steady_sent": len(window),
        "steady_per_s": len(window) / span_s if span_s > 0 else 0.0,
        "steady_s": steady_s,
        "steady_frames_per_write": max(1, round(rate * PACE_S)),
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 50),
            "p99": 1000 * percentile(latencies, 99),
            "max": 1000 * latencies[-1],
            "over_1s": sum(1 for v in latencies if v > 1.0),
        },
    }


async def _pace(sim: CoinbaseSimulator, rate: float, stop: trio.Event) -> None:
    """Send ``rate`` tickers/s until ``stop`` is set, in small bursts every ``PACE_S``.

    The simulator's own ticker loop makes one trade per product per ``trio.sleep``, which
    cannot go below ~1.5 ms here (~1,300 frames/s for two products); small bursts reach any
    rate. Each trade is stamped right before its write, so ``time`` is its send time.
    """
    start, sent = trio.current_time(), 0
    while not stop.is_set():
        with trio.move_on_after(PACE_S):
            await stop.wait()
        due = int((trio.current_time() - start) * rate) - sent
        if due > 0 and not stop.is_set():
            await sim.send_burst(due)
            sent += due


async def _batcher_status(port: int) -> dict[str, Any]:
    """The batcher's flush counts from ``/status`` (which trigger flushed how often)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        response = await http.get("/status", headers=headers)
    response.raise_for_status()
    flushes: dict[str, Any] = response.json()["pipeline"]["batcher"]["flushes"]
    return flushes


# --- report -------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    floor, chrono = result["floor"]["frames_per_s"], result["chrono"]
    lat, n = chrono["latency_ms"], chrono["feeds"]
    batch, flushes = chrono["batch"], chrono["batcher"]
    steady = f"steady {chrono['steady_per_s']:,.0f}/s, {chrono['steady_s']:g} s"
    width = 52
    return "\n".join(
        [
            f"chrono e2e (coinbase simulator -> chrono run -> SQLite), N={n}, "
            f"machine: {result['cores']} cores",
            f"{'floor: bare websockets.trio client recv+decode':<{width}}{floor:>9,.0f} frames/s",
            f"{'chrono: frames -> stored rows':<{width}}{chrono['feeds_per_s']:>9,.0f} feeds/s"
            f"   ({chrono['feeds_per_s'] / floor:.2f} of floor)",
            f"{f'latency frame -> stored ({steady})':<{width}}p50 {lat['p50']:.1f} ms"
            f"  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms",
            f"rows stored {chrono['rows_stored']} of {n} "
            f"(exactly once: {'yes' if chrono['exactly_once'] else 'NO'}); "
            f"SIGTERM exit {chrono['exit_code']}",
            f"batch config: max_feeds {batch['max_feeds']}, max_interval_ms "
            f"{batch['max_interval_ms']}; flushes {flushes}; rows over 1 s: {lat['over_1s']}",
        ]
    )


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    log(f"floor: {args.feeds} frames to a bare client ...")
    floor = await measure_floor(args.feeds, [sys.executable, __file__, "--floor-client"])
    log(f"chrono: burst of {args.feeds}, then {args.steady_s:g} s at {args.rate:g}/s ...")
    chrono = await measure_chrono(args.feeds, args.rate, args.steady_s, args.profile)
    return {"cores": os.cpu_count(), "floor": floor, "chrono": chrono}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200_000, help="burst size N")
    parser.add_argument("--rate", type=float, default=2_000.0, help="steady frames/s, total")
    parser.add_argument("--steady-s", type=float, default=10.0, help="steady phase length")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profile", type=Path, help="run chrono under pyinstrument; report to this file"
    )
    parser.add_argument("--floor-client", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.floor_client:
        url, feeds = args.floor_client
        print(json.dumps(trio.run(floor_client, url, int(feeds))))
        return 0
    failures: list[BaseException] = []
    try:
        result = trio.run(run_bench, args)
    except* BenchError as group:  # nurseries wrap it; a return is not allowed in except*
        failures = leaves(group)
    if failures:
        for exc in failures:
            print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
