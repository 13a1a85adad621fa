"""Chrono end to end: Coinbase simulator -> ``chrono run`` -> SQLite or PostgreSQL, beside floors.

The numbers of one run (bench/README.md explains how to read them):

1. floors: three bare clients, each in its own process, receive and decode the same burst:
   ``websockets.trio``, ``websockets`` asyncio on uvloop, and Chrono's own ``open_feed``;
2. throughput: ``chrono run`` stores the same burst; feeds/s from the burst's start to the
   last commit, as a ratio to each floor, and every feed checked stored exactly once;
3. latency: one steady phase per ``--rates`` entry (frames/s), timed from each ticker's
   ``time`` (stamped when the simulator generates and queues it) to its row's ``ingested_at``;
4. with ``--overload N``: a burst of N, chrono's RSS sampled while the store catches up.

``--tls`` runs everything over ``wss://`` (a throwaway CA); ``--store postgresql`` stores into a
throwaway PostgreSQL cluster instead of SQLite.

Usage: ``python bench/e2e_coinbase.py [--feeds N] [--rates R,R] [--steady-s S] [--tls]
[--store sqlite|postgresql] [--overload N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
import trio
import trustme
from _common import (
    ADMIN_KEY,
    CHRONO_CONFIG,
    BenchError,
    ReadOnlyDb,
    epoch_s,
    open_bench_chrono,
    percentile,
    run_main,
)
from _floor import (
    FLOORS,
    PRODUCTS,
    SUBSCRIBE_TIMEOUT_S,
    Tls,
    floor_client,
    measure_floor,
    phase_timeout_s,
)

from chrono.config import BatchConfig
from chrono.store.sqlite import format_time as stored_time
from chrono.testing.postgres import start_cluster
from chrono.testing.simulators import CoinbaseSimulator, SentTick

PACE_S: Final = 0.01  # the steady phase writes the trades due every 10 ms
SETTLE_S: Final = 15.0  # after the steady phase, beyond the batch interval, for the last rows
RSS_EVERY_S: Final = 0.25
MAX_CATCH_UP: Final = 10  # a steady phase's most frames per write: 10 writes' worth (100 ms)
OVERLOAD_CHUNK: Final = 50_000  # the overload's bursts: each holds the socket for ~1 s, no more
GOAL: Final = ("asyncio", 0.60)  # the issue: chrono >= 0.60 of the asyncio+uvloop client
SQLITE_URL: Final = "sqlite:///chrono.db"  # CHRONO_CONFIG's storage; PostgreSQL replaces it


# --- the stores, read back the same way ---------------------------------------------------


class SqliteDb(ReadOnlyDb):
    """Chrono's SQLite file; ``TIME``/``PRICE`` are the SQL giving a time/price as stored text."""

    TIME = "{}"
    PRICE = "price"


class PgDb(ReadOnlyDb):
    """Chrono's PostgreSQL database, read as ``SqliteDb`` reads SQLite: ``?`` placeholders, and
    times and prices as the same text, so the checks below don't know which store it is."""

    TOP_SQL = "SELECT count(*) FROM price_feeds"  # a rolled-back COPY leaves a gap in the ids
    TIME = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    PRICE = "price::text"

    def __init__(self, url: str) -> None:  # not ReadOnlyDb's: no SQLite file to open
        self._pg = psycopg.connect(url, autocommit=True)
        self._limiter = trio.CapacityLimiter(1)

    async def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._pg.execute(sql.replace("?", "%s"), params).fetchall()

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    def close(self) -> None:
        self._pg.close()


@asynccontextmanager
async def open_store(kind: str, folder: Path) -> AsyncIterator[tuple[str, Any]]:
    """The storage URL for chrono's config, and how to open the store for reading."""
    if kind == "sqlite":
        yield SQLITE_URL, partial(SqliteDb, folder / "chrono.db")
        return
    cluster = await trio.to_thread.run_sync(start_cluster)
    try:
        url = await trio.to_thread.run_sync(cluster.create_database, "chrono")
        yield url, partial(PgDb, url)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.destroy)


def make_tls(folder: Path) -> Tls:
    """A throwaway CA: the simulator's certificate for 127.0.0.1, and the CA's file to trust."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    cafile = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return Tls(server, cafile)


# --- chrono run: throughput (the burst), latency (steady phases), RSS (overload) ----------


async def measure_chrono(args: argparse.Namespace, tls: Tls | None) -> dict[str, Any]:
    """Burst, steady phases, overload through one ``chrono run``; SIGTERM must exit 0."""
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)  # not even the ticker sent on subscribe: only the bursts are stored
    batch = BatchConfig()
    env = {"SSL_CERT_FILE": str(tls.cafile)} if tls else None
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(sim.serve, tls=tls.server if tls else None))
        with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
            async with open_store(args.store, Path(tmp)) as (storage_url, open_db):
                config = Path(tmp) / "config.toml"
                text = CHRONO_CONFIG.format(
                    url=sim.url,
                    admin_key=ADMIN_KEY,
                    max_feeds=batch.max_feeds,
                    max_interval_ms=batch.max_interval_ms,
                )
                config.write_text(text.replace(SQLITE_URL, storage_url))
                async with open_bench_chrono(config, profile=args.profile, env=env) as chrono:
                    print(f"chrono run is pid {chrono.process.pid}", file=sys.stderr)
                    with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                        await sim.wait_subscribed(1)
                    db = open_db()
                    try:
                        result = await _burst(sim, db, args.feeds)
                        result["steady"] = [
                            await _steady(sim, db, rate, args.steady_s, batch)
                            for rate in args.rates
                        ]
                        if args.overload:
                            pid = chrono.process.pid
                            result["overload"] = await _overload(sim, db, pid, args.overload)
                    except BenchError as exc:
                        raise BenchError(
                            f"{exc}\nchrono's last log lines:\n{chrono.tail()}"
                        ) from exc
                    finally:
                        db.close()
                    result["batcher"] = await _batcher_status(chrono.port)
                    result["exit_code"] = code = await chrono.stop()
                    if code != 0:
                        raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
        nursery.cancel_scope.cancel()
    result["batch"] = {"max_feeds": batch.max_feeds, "max_interval_ms": batch.max_interval_ms}
    return result


async def _burst(sim: CoinbaseSimulator, db: Any, feeds: int) -> dict[str, Any]:
    with trio.fail_after(phase_timeout_s(feeds)):
        await sim.send_burst(feeds)
    rows = await db.wait_count(feeds, phase_timeout_s(feeds))
    sent = sim.ticks[:feeds]
    # The burst's clock starts at the simulator's first write, as a floor's starts at its first
    # frame: framing the burst's frames (after the last trade's stamp) is no receiver's time.
    assert sim.burst_written_at is not None
    start = sim.burst_written_at.timestamp()
    stamped = _stamp(sent[-1]).timestamp()
    [(last_commit, first_received)] = await db.query(
        f"SELECT {db.TIME.format('max(ingested_at)')}, {db.TIME.format('min(received_at)')}"
        " FROM price_feeds"
    )
    stored = await db.query(
        f"SELECT symbol, {db.PRICE}, {db.TIME.format('timestamp')} FROM price_feeds"
    )
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
        "framing_s": start - stamped,  # the simulator's, between the last stamp and the write
        "first_received_to_last_commit_s": epoch_s(last_commit) - epoch_s(first_received),
    }


def _stamp(tick: SentTick) -> datetime:
    """The ticker's ``time``: Coinbase's always carries one (``None`` only where an exchange
    sends none)."""
    if tick.time is None:
        raise BenchError(f"a Coinbase ticker without a time: {tick}")
    return tick.time


def _row_key(tick: SentTick) -> tuple[str, str, str]:
    return (tick.native.replace("-", "/"), tick.price, stored_time(_stamp(tick)))


async def _steady(
    sim: CoinbaseSimulator, db: Any, rate: float, steady_s: float, batch: BatchConfig
) -> dict[str, Any]:
    """``rate`` tickers/s; latency = ``ingested_at`` - ``time`` over the first ``steady_s``.

    The stream keeps flowing until every row of the window is stored, so that they are all
    flushed as in a continuous stream (by count), not by the interval once the stream stops.
    A rate beyond chrono's is held back by TCP, one beyond the simulator's by its CPU: the
    achieved rate and the simulator's CPU are reported beside the target.
    """
    before = first = len(sim.ticks)  # every earlier ticker is stored by now
    stop = trio.Event()  # not a cancel: a burst cut short would leave its trades unsent
    cpu_s = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pace, sim, rate, stop)
        await trio.sleep(steady_s)
        window = sim.ticks[first:]
        cpu_s = time.process_time() - cpu_s
        if not window:
            raise BenchError("the simulator sent nothing in the steady phase")
        settle_s = batch.max_interval_ms / 1000 + SETTLE_S + phase_timeout_s(len(window))
        # One pipeline, in order: once this many rows are in, the whole window is.
        await db.wait_count(before + len(window), settle_s, exact=False)
        stop.set()
    await db.wait_count(len(sim.ticks), settle_s)  # the tail: flushed by the interval
    rows = await db.query(
        f"SELECT {db.TIME.format('timestamp')}, {db.TIME.format('ingested_at')} FROM price_feeds"
        " WHERE timestamp BETWEEN ? AND ?",
        (stored_time(_stamp(window[0])), stored_time(_stamp(window[-1]))),
    )
    if len(rows) != len(window):
        raise BenchError(f"steady phase: {len(rows)} rows for {len(window)} tickers")
    latencies = sorted(epoch_s(ingested) - epoch_s(stamped) for stamped, ingested in rows)
    span_s = (_stamp(window[-1]) - _stamp(window[0])).total_seconds()
    return {
        "target_per_s": rate,
        "sent": len(window),
        "achieved_per_s": len(window) / span_s if span_s > 0 else 0.0,
        "seconds": steady_s,
        "frames_per_write": max(1, round(rate * PACE_S)),
        # The simulator's process CPU over the window, per second: ~1.0 means the simulator
        # had a core to itself and was the limit, not chrono.
        "simulator_cpu": cpu_s / steady_s,
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

    Held back (by TCP, or its own CPU), it skips what it could not send beyond
    ``MAX_CATCH_UP`` writes' worth rather than catching up in ever larger bursts: a burst holds
    the socket, and one held for 20 s keeps the pong to chrono's keepalive ping out, so chrono
    drops the connection (and the frames in flight).
    """
    start, sent = trio.current_time(), 0
    most = MAX_CATCH_UP * max(1, round(rate * PACE_S))
    while not stop.is_set():
        with trio.move_on_after(PACE_S):
            await stop.wait()
        expected = int((trio.current_time() - start) * rate)
        sent = max(sent, expected - most)  # what it could not send in time is skipped
        due = expected - sent
        if due > 0 and not stop.is_set():
            await sim.send_burst(due)
            sent += due


def rss_mib(pid: int) -> float:
    """``VmRSS`` in MiB of ``pid`` and its children (the SQLite writer process); ``/proc``
    gives kB."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total_kb = 0
    for each in (pid, *map(int, children)):
        rss = [line for line in Path(f"/proc/{each}/status").read_text().splitlines()
               if line.startswith("VmRSS:")]  # fmt: skip
        if not rss:
            raise BenchError(f"no VmRSS for pid {each}")
        total_kb += int(rss[0].split()[1])
    return total_kb / 1024


async def _overload(sim: CoinbaseSimulator, db: Any, pid: int, feeds: int) -> dict[str, Any]:
    """A burst of ``feeds`` far beyond what the pipeline holds, chrono's RSS (with its
    writer process) every 0.25 s.

    The burst waits in the simulator and in TCP's buffers, not in chrono, if its backpressure
    works: RSS at 25/50/75/100 % of the rows stored should be about its start.
    """
    before = len(sim.ticks)
    samples = [(0, rss_mib(pid))]  # (rows of this burst stored, RSS MiB)
    done = trio.Event()

    async def sample() -> None:
        while not done.is_set():
            with trio.move_on_after(RSS_EVERY_S):
                await done.wait()
            samples.append((await db.top() - before, rss_mib(pid)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        with trio.fail_after(phase_timeout_s(feeds)):
            for offset in range(0, feeds, OVERLOAD_CHUNK):  # back to back, the pongs between
                await sim.send_burst(min(OVERLOAD_CHUNK, feeds - offset))
        await db.wait_count(before + feeds, phase_timeout_s(feeds))
        done.set()
    samples.append((feeds, rss_mib(pid)))
    start = _stamp(sim.ticks[before + min(OVERLOAD_CHUNK, feeds) - 1]).timestamp()
    [(last_commit,)] = await db.query(
        f"SELECT {db.TIME.format('max(ingested_at)')} FROM price_feeds"
    )
    at = {
        q: next(rss for rows, rss in samples if rows >= q / 100 * feeds) for q in (25, 50, 75, 100)
    }
    return {
        "feeds": feeds,
        "feeds_per_s": feeds / (epoch_s(last_commit) - start),
        "rss_mib": {"start": samples[0][1], "max": max(rss for _, rss in samples)}
        | {f"at_{q}pct": rss for q, rss in at.items()},
        "samples": len(samples),
    }


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
    chrono, floors, width = result["chrono"], result["floors"], 50
    rate, n = chrono["feeds_per_s"], chrono["feeds"]
    batch, flushes = chrono["batch"], chrono["batcher"]
    lines = [
        f"chrono e2e (coinbase simulator -> chrono run -> {result['store']}, "
        f"{result['scheme']}://), N={n}, machine: {result['cores']} cores"
    ]
    for kind, floor in floors.items():
        label = f"floor {kind}: {FLOORS[kind]}"
        lines.append(
            f"{label:<{width}}{floor['frames_per_s']:>9,.0f} frames/s"
            f"   chrono = {rate / floor['frames_per_s']:.2f} of it"
        )
    lines.append(
        f"{'chrono: frames -> stored rows':<{width}}{rate:>9,.0f} feeds/s"
        f"   (from the first write; framing before it {chrono['framing_s']:.2f} s)"
    )
    for steady in chrono["steady"]:
        lat = steady["latency_ms"]
        label = (
            f"latency at {steady['achieved_per_s']:,.0f}/s "
            f"(target {steady['target_per_s']:,.0f}, {steady['seconds']:g} s)"
        )
        lines.append(
            f"{label:<{width}}p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  "
            f"max {lat['max']:.1f} ms  over 1 s: {lat['over_1s']}  "
            f"sim CPU {steady['simulator_cpu']:.2f}"
        )
    if over := chrono.get("overload"):
        rss = over["rss_mib"]
        lines.append(
            f"overload N={over['feeds']}: {over['feeds_per_s']:,.0f} feeds/s; RSS MiB start "
            f"{rss['start']:.0f}, max {rss['max']:.0f}, at 25/50/75/100% stored "
            + "/".join(f"{rss[f'at_{q}pct']:.0f}" for q in (25, 50, 75, 100))
        )
    kind, goal = GOAL
    ratio = rate / floors[kind]["frames_per_s"]
    lines += [
        f"goal chrono >= {goal:.2f} of floor {kind}: {ratio:.2f} "
        f"({'met' if ratio >= goal else 'NOT met'})",
        f"rows stored {chrono['rows_stored']} of {n} "
        f"(exactly once: {'yes' if chrono['exactly_once'] else 'NO'}); "
        f"SIGTERM exit {chrono['exit_code']}",
        f"batch config: max_feeds {batch['max_feeds']}, max_interval_ms "
        f"{batch['max_interval_ms']}; flushes {flushes}",
    ]
    return "\n".join(lines)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="chrono-bench-ca-") as tmp:
        tls = make_tls(Path(tmp)) if args.tls else None
        floors = {}
        for kind in FLOORS:
            log(f"floor {kind}: {args.feeds} frames to a bare client ...")
            command = [sys.executable, __file__, "--floor-client", kind]
            floors[kind] = await measure_floor(args.feeds, command, tls)
        rates = ", ".join(f"{r:g}/s" for r in args.rates)
        log(f"chrono ({args.store}): burst of {args.feeds}, then {args.steady_s:g} s at {rates}")
        chrono = await measure_chrono(args, tls)
    return {
        "cores": os.cpu_count(),
        "store": "PostgreSQL" if args.store == "postgresql" else "SQLite",
        "scheme": "wss" if tls else "ws",
        "floors": floors,
        "chrono": chrono,
    }


def _rates(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",") if rate]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200_000, help="burst size N")
    parser.add_argument(
        "--rates", type=_rates, default=[2_000.0, 50_000.0], help="steady frames/s, one phase each"
    )
    parser.add_argument("--rate", type=_rates, dest="rates", help="the same as --rates")
    parser.add_argument("--steady-s", type=float, default=10.0, help="each steady phase's length")
    parser.add_argument("--tls", action="store_true", help="everything over wss://")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--overload", type=int, default=0, metavar="N", help="RSS under a burst of N"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profile", type=Path, help="run chrono under pyinstrument; report to this file"
    )
    parser.add_argument(
        "--floor-client", nargs=4, metavar=("KIND", "URL", "N", "CAFILE"), help=argparse.SUPPRESS
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.floor_client:
        kind, url, feeds, cafile = args.floor_client
        print(json.dumps(floor_client(kind, url, int(feeds), None if cafile == "-" else cafile)))
        return 0
    return run_main(run_bench, args, render)


if __name__ == "__main__":
    sys.exit(main())
