"""Read routes under load: 100 HTTP clients -> ``chrono run`` (SQLite), against ``GET /health``.

One ``chrono run`` (no collectors, snapshots off, ``[batch] max_interval_ms = 100``) is fed
through ``POST /internal/ingest``: 20 symbols x 5 sources, one feed each every 10 s over the
last 10 minutes, the newest a second old, so that memory holds fresh prices of every source
and the store holds the history. Then ``--clients`` clients (httpx, one keep-alive connection
each, all in this process: the load generator is not the server's process) hammer each route
for ``--duration-s``:

1. floor: ``GET /health`` (no key): what this server answers for a request that does nothing;
2. ``GET /prices/latest?symbols=<5>``: the median of 5 fresh sources per symbol, from memory;
3. ``GET /aggregates/consensus?symbols=<5>``: the live consensus (outliers, stats, digest);
4. ``GET /aggregates/consensus?symbols=<1>&timestamp=<5 min ago>``: recomputed from the store.

Per route: requests/s, p50/p99/max latency, the ratio of its requests/s to the floor's, the
server's and the client's CPU time per request, and errors: any answer but 200 is one, and a
run with any fails. Every answer's shape is checked once before the clock.

Usage: ``python bench/api_reads.py [--clients C] [--duration-s S] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import trio
from _common import ADMIN_KEY, LIMITS_TOML, BenchError, ReadOnlyDb, leaves, open_bench_chrono
from _load import (
    INTERNAL_KEY,
    PUBLIC_KEY,
    SETUP_TIMEOUT_S,
    SOURCES,
    SYMBOLS,
    Load,
    feed_chrono,
    ingest_bodies,
    process_cpu_s,
)

from chrono.model import time_text, utc_now

HISTORY_STEPS: Final = 60  # one feed per symbol and source every 10 s, over 10 minutes
HISTORY_STEP: Final = timedelta(seconds=10)
NEWEST_AGE: Final = timedelta(seconds=1)  # the newest feeds: a second old, so fresh
AS_OF_AGE: Final = timedelta(minutes=5)  # the past time of the recomputed consensus
GROUP: Final = 5  # symbols per multi-symbol request
REQUEST_TIMEOUT_S: Final = 30.0

CONFIG: Final = """\
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "sqlite:///chrono.db"

[batch]
max_interval_ms = 100

[consensus]
snapshot_interval_s = 0  # no snapshots: "as of" answers are recomputed from the feeds

[log]
level = "info"

{limits}
[auth]
public_keys = ["{public_key}"]
internal_keys = ["{internal_key}"]
admin_keys = ["{admin_key}"]
"""


# --- the data: through POST /internal/ingest ------------------------------------------------


# --- the routes and the checks of their answers -------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    label: str
    targets: tuple[str, ...]  # request targets, used in turn by each client
    keyed: bool = True


def routes(as_of: datetime) -> list[Route]:
    groups = [",".join(SYMBOLS[i : i + GROUP]) for i in range(0, len(SYMBOLS), GROUP)]
    at = time_text(as_of)

    def targets(path: str, params: list[dict[str, str]]) -> tuple[str, ...]:
        return tuple(f"{path}?{urlencode(p)}" for p in params)

    return [
        Route("health", "floor: GET /health", ("/health",), keyed=False),
        Route("latest", "GET /prices/latest (5 symbols)",
              targets("/prices/latest", [{"symbols": g} for g in groups])),
        Route("consensus", "GET /aggregates/consensus (5 symbols)",
              targets("/aggregates/consensus", [{"symbols": g} for g in groups])),
        Route("consensus_at", "GET /aggregates/consensus (1, as of -5 min)",
              targets("/aggregates/consensus", [{"symbols": s, "timestamp": at}
                                                for s in SYMBOLS])),
    ]  # fmt: skip


def check_answers(route: Route, bodies: list[Any], as_of: datetime) -> None:
    """Every symbol answered with all 5 sources: the routes did their real work."""
    if route.name == "health":
        return
    for body in bodies:
        for item in body["data"]:
            problem = None
            if route.name == "latest":
                if item["num_sources"] != len(SOURCES) or item["stale"]:
                    problem = "not all 5 sources fresh"
                elif not body["cached"]:
                    problem = "not answered from memory"
            elif item["status"] != "ok" or item["num_sources"] != len(SOURCES):
                problem = f"status {item['status']} with {item['num_sources']} sources"
            elif item["snapshot"]:
                problem = "answered from a snapshot"
            elif route.name == "consensus_at" and item["timestamp"] != time_text(as_of):
                problem = f"as of {item['timestamp']}"
            if problem:
                raise BenchError(f"{route.label}: {item['symbol']}: {problem}")
        if route.name == "latest" and body["missing"]:
            raise BenchError(f"{route.label}: missing {body['missing']}")


# --- the load ------------------------------------------------------------------------------


async def hammer(
    url: str, route: Route, clients: int, duration_s: float, pid: int
) -> dict[str, Any]:
    """``clients`` closed loops on ``route`` for ``duration_s``, every connection made first."""
    load = Load()
    ready = trio.Event()
    deadline = 0.0
    headers = {"Authorization": f"Bearer {PUBLIC_KEY}"} if route.keyed else {}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client(c: int, connected: trio.MemorySendChannel[None]) -> None:
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as http:
            await http.get("/health")  # connect outside the clock
            async with connected:
                pass
            await ready.wait()
            n = c  # each client starts at its own target, so all of them are asked alike
            while time.perf_counter() < deadline:
                target = route.targets[n % len(route.targets)]
                n += 1
                sent = time.perf_counter()
                try:
                    response = await http.get(target)
                except httpx.HTTPError as exc:
                    load.failures[type(exc).__name__] += 1
                    load.note_error(f"{target}: {exc!r}")
                    continue
                load.latencies.append(time.perf_counter() - sent)
                load.statuses[response.status_code] += 1
                if response.status_code != 200:
                    load.note_error(f"{target}: {response.status_code} {response.text[:300]}")

    with trio.fail_after(duration_s + SETUP_TIMEOUT_S + REQUEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            connected, all_connected = trio.open_memory_channel[None](0)
            async with connected:
                for c in range(clients):
                    nursery.start_soon(client, c, connected.clone())
            async for _ in all_connected:
                pass  # ends once every client closed its clone: all are connected
            server_cpu, client_cpu = process_cpu_s(pid), time.process_time()
            started = time.perf_counter()
            deadline = started + duration_s
            ready.set()
        elapsed = time.perf_counter() - started
        server_cpu, client_cpu = process_cpu_s(pid) - server_cpu, time.process_time() - client_cpu
    return load.summary(route.label, elapsed, server_cpu, client_cpu)


async def probe(url: str, route: Route) -> list[Any]:
    """Every target of ``route`` once: 200 and its body."""
    headers = {"Authorization": f"Bearer {PUBLIC_KEY}"} if route.keyed else {}
    bodies = []
    with trio.fail_after(SETUP_TIMEOUT_S):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            for target in route.targets:
                response = await http.get(target)
                if response.status_code != 200:
                    raise BenchError(f"{target}: {response.status_code} {response.text[:300]}")
                bodies.append(response.json())
    return bodies


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            CONFIG.format(
                public_key=PUBLIC_KEY,
                internal_key=INTERNAL_KEY,
                admin_key=ADMIN_KEY,
                limits=LIMITS_TOML,
            )
        )
        async with open_bench_chrono(config) as chrono:
            now = utc_now()
            bodies = ingest_bodies(
                now, newest_age=NEWEST_AGE, steps=HISTORY_STEPS, step=HISTORY_STEP
            )
            expected = HISTORY_STEPS * len(SYMBOLS) * len(SOURCES)
            log(f"ingest: {expected} feeds in {len(bodies)} POSTs ...")
            db = ReadOnlyDb(Path(tmp) / "chrono.db")
            try:
                await feed_chrono(chrono.url, db, bodies, expected)
            finally:
                db.close()
            as_of = now - AS_OF_AGE
            results = {}
            for route in routes(as_of):
                check_answers(route, await probe(chrono.url, route), as_of)
                log(f"{route.label}: {args.clients} clients for {args.duration_s:g} s ...")
                results[route.name] = await hammer(
                    chrono.url, route, args.clients, args.duration_s, chrono.process.pid
                )
                await trio.sleep(0.5)  # let the last connections close before the next route
            code = await chrono.stop()
            if code != 0:
                raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
    floor = results["health"]["requests_per_s"]
    for r in results.values():
        r["ratio_to_floor"] = r["requests_per_s"] / floor
    return {
        "cores": os.cpu_count(),
        "clients": args.clients,
        "duration_s": args.duration_s,
        "feeds": expected,
        "symbols": len(SYMBOLS),
        "sources": len(SOURCES),
        "routes": results,
        "exit_code": code,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"chrono API reads ({result['clients']} HTTP clients, {result['duration_s']:g} s per route"
        f" -> chrono run -> SQLite; {result['symbols']} symbols x {result['sources']} sources),"
        f" machine: {result['cores']} cores",
        f"{'route':<42}{'req/s':>7}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'srv us/req':>11}{'cli us/req':>11}{'errors':>7}",
    ]
    for r in result["routes"].values():
        lines.append(
            f"{r['label']:<42}{r['requests_per_s']:>7,.0f}{r['ratio_to_floor']:>7.2f}"
            f"{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}"
            f"{r['server_cpu_us_per_request']:>11,.0f}{r['client_cpu_us_per_request']:>11,.0f}"
            f"{r['errors']:>7}"
        )
    before, after = (", ".join(f"{v:.2f}" for v in result[f"load_average_{when}"])
                     for when in ("before", "after"))  # fmt: skip
    lines.append(
        "ratio = req/s / floor req/s; srv/cli us/req = CPU time of chrono / of this load"
        f" generator per request; SIGTERM exit {result['exit_code']}"
    )
    lines.append(f"load average before the run {before}; after {after}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent HTTP clients")
    parser.add_argument("--duration-s", type=float, default=8.0, help="load per route")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.duration_s <= 0:
        raise SystemExit("--clients and --duration-s must be positive")
    failures: list[BaseException] = []
    try:
        result = trio.run(run_bench, args)
    except* (BenchError, trio.TooSlowError) as group:  # a return is not allowed in except*
        failures = leaves(group)
    if failures:
        for exc in failures:
            print(f"bench failed: {exc!r}" if isinstance(exc, trio.TooSlowError)
                  else f"bench failed: {exc}", file=sys.stderr)  # fmt: skip
        return 1
    print(json.dumps(result) if args.json else render(result))
    errors = {name: r["first_error"] for name, r in result["routes"].items() if r["errors"]}
    if errors:
        for name, first in errors.items():
            print(f"bench failed: {name}: {result['routes'][name]['errors']} errors, first:"
                  f" {first}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
