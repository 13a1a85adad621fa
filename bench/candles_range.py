"""``GET /prices/range`` over a big table: 1m candles of a 24 h window of 1,000,000 rows, per store.

For each store (a SQLite file; a throwaway PostgreSQL cluster), in one run:

1. write: ``--rows`` feeds of BTC/USD from 3 sources (coinbase, kraken, bitstamp in turn),
   evenly spread over the 7 days before now (1M rows: one every 0.6 s), straight through the
   store's ``write()`` in batches of 10,000; the writes are timed (building the feeds is not).
   PostgreSQL then gets ``VACUUM (ANALYZE)``, as autovacuum would do soon after such a load;
2. ``chrono run`` on that store (no collectors, a public key), and through its HTTP API:
   ``GET /prices/range?symbol=BTC/USD&interval=1m&from=&to=&limit=1440`` over a 24 h window
   (1/7 of the rows: ~143k feeds, ~99 per candle), ``--requests`` times from one client, then
   from ``--concurrency`` clients at once; and a raw page (no interval, ``limit=10000``);
3. floors from the same run: ``GET /health`` on the same server (one client, then the same
   concurrency), the store's own SQL statement run with the plain driver in this process, and
   the store's ``candles()`` / ``feeds_page()`` called in this process (SQL plus the store's
   Python, no HTTP), so the cost of each layer shows.

Checked once: the candles' ``num_feeds`` add up to the rows in the window (counted with SQL),
there are 1440 of them and no next page; the raw page has 10,000 feeds and a next cursor.
The seed's target, p95 < 500 ms for the candle request, is printed beside the numbers.

Usage: ``python bench/candles_range.py [--rows N] [--store sqlite|postgresql|both] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlencode

import httpx
import psycopg
import trio
from _common import ADMIN_KEY, LIMITS_TOML, BenchError, leaves, open_bench_chrono, percentile

from chrono.errors import StoreError
from chrono.model import PriceFeed, time_text, utc_now
from chrono.store import PostgresStore, SQLiteStore, pg_sql
from chrono.store import sqlite as chrono_sqlite
from chrono.store.base import FIRST_ID, INTERVALS
from chrono.testing.postgres import PostgresMissing, start_cluster

PUBLIC_KEY: Final = "bench_public_key_0001"
SYMBOL: Final = "BTC/USD"
SOURCES: Final = ("coinbase", "kraken", "bitstamp")
SPAN: Final = timedelta(days=7)
WINDOW: Final = timedelta(hours=24)
WINDOW_GAP: Final = timedelta(hours=1)  # the window ends an hour before the newest row
INTERVAL: Final = "1m"
CANDLE_LIMIT: Final = 1440  # 24 h of 1m candles: one page
RAW_LIMIT: Final = 10_000
WRITE_BATCH: Final = 10_000
TARGET_P95_MS: Final = 500.0
OPEN_TIMEOUT_S: Final = 60.0
REQUEST_TIMEOUT_S: Final = 120.0
PHASE_TIMEOUT_S: Final = 600.0

CONFIG: Final = """\
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "{url}"

[consensus]
snapshot_interval_s = 0

[log]
level = "info"

{limits}
[auth]
public_keys = ["{public_key}"]
admin_keys = ["{admin_key}"]
"""

AnyStore: TypeAlias = SQLiteStore | PostgresStore


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the rows ------------------------------------------------------------------------------


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def feed_batches(rows: int, end: datetime) -> Iterator[list[PriceFeed]]:
    """``rows`` feeds evenly over ``SPAN`` before ``end``, oldest first, in write batches.

    Prices wander around 67,000 with cents (deterministic), volume a rolling figure."""
    start = end - SPAN
    step_us = SPAN // timedelta(microseconds=1) // rows
    batch: list[PriceFeed] = []
    for i in range(rows):
        at = start + timedelta(microseconds=i * step_us)
        cents = 6_700_000 + (i * 7_919) % 150_000 - (i // 997) % 50_000
        source = SOURCES[i % len(SOURCES)]
        batch.append(
            PriceFeed(
                symbol=SYMBOL, price=Decimal(cents).scaleb(-2), timestamp=at,
                received_at=at + timedelta(milliseconds=3), source=source,
                worker_id=source, volume=Decimal(9_000 + i % 1_000).scaleb(-1),
                metadata={"native_symbol": "BTC-USD"},
            )
        )  # fmt: skip
        if len(batch) == WRITE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def write_rows(store: AnyStore, rows: int, end: datetime) -> dict[str, Any]:
    """Every batch through ``store.write()``; only the writes are timed."""
    written, write_s, next_report = 0, 0.0, 100_000
    wall = time.perf_counter()
    for batch in feed_batches(rows, end):
        started = time.perf_counter()
        added = await store.write(batch)
        write_s += time.perf_counter() - started
        if added != len(batch):
            raise BenchError(f"{store.kind}: write() added {added} of {len(batch)} rows")
        written += added
        if written >= next_report or written == rows:
            log(f"{store.kind}: {written:,} rows written ({written / write_s:,.0f} rows/s)")
            next_report += 100_000
    return {
        "rows": written,
        "batch": WRITE_BATCH,
        "write_s": write_s,
        "rows_per_s": written / write_s,
        "wall_s": time.perf_counter() - wall,  # with building the feeds
    }


# --- the stores: where the data lives, the same SQL run with the plain driver -------------


class SQLiteTarget:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...

    def store(self) -> AnyStore:
        return SQLiteStore(str(self.path))

    def prepare(self) -> dict[str, Any]:
        return {}

    @contextmanager
    def raw(self) -> Iterator[Callable[[str, tuple[Any, ...] | dict[str, Any]], list[Any]]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            yield lambda sql, args: conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def count_sql(self, start: datetime, end: datetime) -> tuple[str, tuple[Any, ...]]:
        return (
            "SELECT count(*) FROM price_feeds WHERE symbol = ? AND timestamp >= ?"
            " AND timestamp < ?",
            (SYMBOL, chrono_sqlite.format_time(start), chrono_sqlite.format_time(end)),
        )

    def candle_sql(self, start: datetime, end: datetime) -> tuple[str, tuple[Any, ...]]:
        # What SQLiteStore.candles runs; it buckets the rows in Python (chrono.store.candles).
        fmt = chrono_sqlite.format_time
        return chrono_sqlite.CANDLE_ROWS, (SYMBOL, fmt(start), fmt(end), None, None)

    def page_sql(self, start: datetime, end: datetime) -> tuple[str, tuple[Any, ...]]:
        fmt = chrono_sqlite.format_time
        return chrono_sqlite.PAGE, (SYMBOL, fmt(start), fmt(end), None, None, fmt(start),
                                 FIRST_ID, RAW_LIMIT + 1)  # fmt: skip

    def plan(self, sql: str, args: Any) -> str:
        with self.raw() as run:
            return "; ".join(str(r[-1]) for r in run(f"EXPLAIN QUERY PLAN {sql}", args))


class PostgresTarget:
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url

    def store(self) -> AnyStore:
        return PostgresStore(self.url)

    def prepare(self) -> dict[str, Any]:
        started = time.perf_counter()
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("VACUUM (ANALYZE) price_feeds")
        return {"vacuum_analyze_s": time.perf_counter() - started}

    @contextmanager
    def raw(self) -> Iterator[Callable[[str, tuple[Any, ...] | dict[str, Any]], list[Any]]]:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        try:
            conn.execute("SET statement_timeout = '60s'")
            yield lambda sql, args: conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def count_sql(self, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
        return (
            "SELECT count(*) FROM price_feeds WHERE symbol = %(symbol)s"
            " AND timestamp >= %(start)s AND timestamp < %(end)s",
            {"symbol": SYMBOL, "start": start, "end": end},
        )

    def candle_sql(self, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
        # What PostgresStore.candles runs without TimescaleDB (date_bin, array_agg).
        width = timedelta(seconds=INTERVALS[INTERVAL])
        return pg_sql.CANDLES, {"symbol": SYMBOL, "start": start, "end": end, "source": None,
                                "width": width, "limit": CANDLE_LIMIT + 1}  # fmt: skip

    def page_sql(self, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
        return pg_sql.PAGE, {"symbol": SYMBOL, "from": start, "end": end, "source": None,
                             "after_at": start, "after_id": FIRST_ID,
                             "limit": RAW_LIMIT + 1}  # fmt: skip

    def plan(self, sql: str, args: Any) -> str:
        with self.raw() as run:
            return " / ".join(str(r[0]).strip() for r in run(f"EXPLAIN {sql}", args)[:4])


Target: TypeAlias = SQLiteTarget | PostgresTarget


@contextmanager
def open_target(kind: str, folder: Path) -> Iterator[Target]:
    if kind == "sqlite":
        yield SQLiteTarget(folder / "candles.db")
        return
    log("starting a throwaway PostgreSQL cluster")
    cluster = start_cluster()
    try:
        yield PostgresTarget(cluster.create_database("candles"))
    finally:
        cluster.destroy()


# --- timing helpers ---------------------------------------------------------------------------


def summary(seconds: list[float], elapsed_s: float | None = None) -> dict[str, Any]:
    ordered = sorted(seconds)
    out = {
        "n": len(ordered),
        "p50_ms": 1000 * percentile(ordered, 50),
        "p95_ms": 1000 * percentile(ordered, 95),
        "p99_ms": 1000 * percentile(ordered, 99),
        "max_ms": 1000 * ordered[-1],
    }
    if elapsed_s is not None:
        out["requests_per_s"] = len(ordered) / elapsed_s
    return out


async def timed_calls(call: Callable[[], Awaitable[Any]], n: int) -> dict[str, Any]:
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return summary(seconds)


async def timed_sql(target: Target, sql: str, args: Any, n: int) -> dict[str, Any]:
    """The statement with the plain driver, ``n`` times, every row fetched (in a thread)."""
    with target.raw() as run:
        await trio.to_thread.run_sync(run, sql, args)  # warm: the first read pages the file in
        rows = 0

        async def once() -> None:
            nonlocal rows
            rows = len(await trio.to_thread.run_sync(run, sql, args))

        result = await timed_calls(once, n)
    result["rows"] = rows
    return result


async def http_load(
    url: str, target: str, *, clients: int, per_client: int, keyed: bool = True
) -> dict[str, Any]:
    """``clients`` clients, each its own connection (made before the clock), ``per_client``
    requests back to back; any answer but 200 fails the run. Also the route's own
    ``latency_ms`` (from parsing the query to the body built, before encoding)."""
    headers = {"Authorization": f"Bearer {PUBLIC_KEY}"} if keyed else {}
    seconds: list[float] = []
    route_ms: list[float] = []
    ready = trio.Event()

    async def client(connected: trio.MemorySendChannel[None]) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as http:
            await http.get("/health")  # connect outside the clock
            async with connected:
                pass
            await ready.wait()
            for _ in range(per_client):
                started = time.perf_counter()
                response = await http.get(target)
                seconds.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise BenchError(f"{target}: {response.status_code} {response.text[:300]}")
                if keyed:
                    route_ms.append(response.json()["latency_ms"])

    with trio.fail_after(PHASE_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            connected, all_connected = trio.open_memory_channel[None](0)
            async with connected:
                for _ in range(clients):
                    nursery.start_soon(client, connected.clone())
            async for _ in all_connected:
                pass  # every client is connected
            started = time.perf_counter()
            ready.set()
        elapsed = time.perf_counter() - started
    result = summary(seconds, elapsed)
    result["clients"] = clients
    if route_ms:
        result["route_p50_ms"] = percentile(sorted(route_ms), 50)
    return result


async def get_json(url: str, target: str, *, key: str = PUBLIC_KEY) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        response = await http.get(target, headers={"Authorization": f"Bearer {key}"})
    if response.status_code != 200:
        raise BenchError(f"{target}: {response.status_code} {response.text[:300]}")
    return response.json()


# --- one store -----------------------------------------------------------------------------


async def measure(target: Target, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    end = floor_minute(utc_now())
    window_end = end - WINDOW_GAP
    window_start = window_end - WINDOW
    result: dict[str, Any] = {"window": [time_text(window_start), time_text(window_end)]}

    store = target.store()
    try:
        with trio.fail_after(OPEN_TIMEOUT_S):
            await store.open()
        log(f"{target.kind}: writing {args.rows:,} rows in batches of {WRITE_BATCH:,} ...")
        result["write"] = await write_rows(store, args.rows, end)
    finally:
        await store.aclose()
    result["write"] |= await trio.to_thread.run_sync(target.prepare)

    with target.raw() as run:
        sql, sql_args = target.count_sql(window_start, window_end)
        [(window_rows,)] = await trio.to_thread.run_sync(run, sql, sql_args)
    result["window_rows"] = window_rows
    candle_sql, candle_args = target.candle_sql(window_start, window_end)
    page_sql, page_args = target.page_sql(window_start, window_end)
    result["plans"] = {
        "candles": await trio.to_thread.run_sync(target.plan, candle_sql, candle_args),
        "page": await trio.to_thread.run_sync(target.plan, page_sql, page_args),
    }

    window = {"symbol": SYMBOL, "from": time_text(window_start), "to": time_text(window_end)}
    candles_target = "/prices/range?" + urlencode(
        {**window, "interval": INTERVAL, "limit": CANDLE_LIMIT}
    )
    page_target = "/prices/range?" + urlencode({**window, "limit": RAW_LIMIT})
    n, clients = args.requests, args.concurrency
    per_client = max(1, round(n / clients))

    config = folder / f"{target.kind}.toml"
    config.write_text(CONFIG.format(url=target.url, public_key=PUBLIC_KEY, admin_key=ADMIN_KEY,
                                    limits=LIMITS_TOML))  # fmt: skip
    async with open_bench_chrono(config) as chrono:
        url = chrono.url
        status = await get_json(url, "/status", key=ADMIN_KEY)
        result["store_status"] = {k: v for k, v in status["store"].items() if k != "url"}

        body = await get_json(url, candles_target)  # checked once; also the first, cold read
        fed = sum(c["num_feeds"] for c in body["data"])
        result["check"] = {
            "candles": body["count"],
            "num_feeds_sum": fed,
            "window_rows": window_rows,
            "next": body["next"],
            "ok": fed == window_rows and body["count"] == CANDLE_LIMIT and body["next"] is None,
        }
        if not result["check"]["ok"]:
            raise BenchError(f"{target.kind}: candles do not add up: {result['check']}")
        page = await get_json(url, page_target)
        if page["count"] != RAW_LIMIT or page["next"] is None:
            raise BenchError(f"{target.kind}: raw page of {page['count']}, next {page['next']}")

        log(f"{target.kind}: floors (GET /health, the SQL, the store in process) ...")
        http: dict[str, Any] = {}
        http["health_1"] = await http_load(
            url, "/health", clients=1, per_client=args.health_requests, keyed=False
        )
        http["health_c"] = await http_load(
            url, "/health", clients=clients, per_client=args.health_requests // clients,
            keyed=False,
        )  # fmt: skip
        floors: dict[str, Any] = {}
        floors["candle_sql"] = await timed_sql(target, candle_sql, candle_args, args.sql_repeat)
        floors["page_sql"] = await timed_sql(target, page_sql, page_args, args.sql_repeat)
        local = target.store()
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                await local.open()

            async def store_candles() -> None:
                await local.candles(SYMBOL, window_start, window_end, INTERVAL,
                                    limit=CANDLE_LIMIT + 1)  # fmt: skip

            async def store_page() -> None:
                await local.feeds_page(SYMBOL, window_start, window_end, limit=RAW_LIMIT)

            floors["candle_store"] = await timed_calls(store_candles, args.sql_repeat)
            floors["page_store"] = await timed_calls(store_page, args.sql_repeat)
        finally:
            await local.aclose()

        log(f"{target.kind}: GET /prices/range 1m x{CANDLE_LIMIT}: {n} from one client ...")
        http["candles_1"] = await http_load(url, candles_target, clients=1, per_client=n)
        log(f"{target.kind}: ... {clients} clients x {per_client} ...")
        http["candles_c"] = await http_load(
            url, candles_target, clients=clients, per_client=per_client
        )
        log(f"{target.kind}: GET /prices/range raw limit={RAW_LIMIT}: {n} from one client ...")
        http["page_1"] = await http_load(url, page_target, clients=1, per_client=n)
        code = await chrono.stop()
        if code != 0:
            raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
    result |= {"http": http, "floors": floors, "exit_code": code}
    result["target_met"] = http["candles_1"]["p95_ms"] < TARGET_P95_MS
    return result


# --- report ----------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        f"candles range: {rows:,} rows of {SYMBOL} ({len(SOURCES)} sources, 7 days), a 24 h"
        f" window -> {CANDLE_LIMIT} 1m candles; machine: {result['cores']} cores",
        f"{'store':<11}{'what':<46}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'route p50':>10}{'req/s':>7}",
    ]

    def line(kind: str, what: str, s: dict[str, Any]) -> str:
        route = f"{s['route_p50_ms']:>10.1f}" if "route_p50_ms" in s else f"{'':>10}"
        rate = f"{s['requests_per_s']:>7.1f}" if "requests_per_s" in s else ""
        return (
            f"{kind:<11}{what:<46}{s['n']:>5}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}"
            f"{s['p99_ms']:>9.1f}{route}{rate}"
        )

    for kind, r in result["stores"].items():
        w, h, f = r["write"], r["http"], r["floors"]
        c = h["candles_c"]["clients"]
        extra = (
            f", then VACUUM (ANALYZE) {w['vacuum_analyze_s']:.1f} s"
            if "vacuum_analyze_s" in w
            else ""
        )
        lines.append(
            f"{kind:<11}write: {w['rows'] // w['batch']} x store.write({w['batch']:,})"
            f"   {w['rows_per_s']:,.0f} rows/s ({w['write_s']:.1f} s; {w['wall_s']:.1f} s with"
            f" building the feeds{extra})"
        )  # fmt: skip
        lines += [
            line(kind, "floor: GET /health, 1 client", h["health_1"]),
            line(kind, f"floor: GET /health, {c} clients", h["health_c"]),
            line(kind, f"floor: SQL of candles, driver ({f['candle_sql']['rows']:,} rows)",
                 f["candle_sql"]),
            line(kind, "floor: store.candles() in process", f["candle_store"]),
            line(kind, "GET /prices/range 1m limit=1440, 1 client", h["candles_1"]),
            line(kind, f"GET /prices/range 1m limit=1440, {c} clients", h["candles_c"]),
            line(kind, "floor: SQL of a raw page, driver", f["page_sql"]),
            line(kind, "floor: store.feeds_page() in process", f["page_store"]),
            line(kind, f"GET /prices/range raw limit={RAW_LIMIT:,}, 1 client", h["page_1"]),
        ]  # fmt: skip
        ck = r["check"]
        verdict = "met" if r["target_met"] else "NOT MET"
        lines.append(
            f"{kind:<11}target p95 < {TARGET_P95_MS:g} ms (1m, 1 client): {verdict}"
            f" ({h['candles_1']['p95_ms']:.1f} ms; {c} clients: {h['candles_c']['p95_ms']:.1f}"
            f" ms); check: sum(num_feeds) {ck['num_feeds_sum']:,} = rows in window"
            f" {ck['window_rows']:,}: {'yes' if ck['ok'] else 'NO'}; SIGTERM exit {r['exit_code']}"
        )
    lines.append(
        "route p50: the route's own latency_ms (query parsed -> body built, before encoding)"
    )
    before, after = (", ".join(f"{v:.2f}" for v in result[f"load_average_{when}"])
                     for when in ("before", "after"))  # fmt: skip
    lines.append(f"load average before the run {before}; after {after}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows written per store")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--requests", type=int, default=20, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent clients")
    parser.add_argument("--health-requests", type=int, default=200, help="GET /health floor")
    parser.add_argument("--sql-repeat", type=int, default=10, help="runs of each floor query")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.rows, args.requests, args.concurrency, args.sql_repeat) < 1:
        raise SystemExit("--rows, --requests, --concurrency and --sql-repeat must be positive")
    if args.rows < 7 * 1440:
        raise SystemExit(f"--rows must be at least {7 * 1440:,}: a feed in every minute")
    if args.health_requests < args.concurrency:
        raise SystemExit("--health-requests must be at least --concurrency")
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    result: dict[str, Any] = {"rows": args.rows, "cores": os.cpu_count(), "stores": {},
                              "load_average_before": os.getloadavg()}  # fmt: skip
    failures: list[BaseException] = []
    try:
        with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
            for kind in kinds:
                with open_target(kind, Path(tmp)) as target:
                    result["stores"][kind] = trio.run(measure, target, args, Path(tmp))
    except* (BenchError, StoreError, PostgresMissing) as group:
        failures = leaves(group)
    except* trio.TooSlowError as group:
        failures = [BenchError(f"a timeout: {exc!r}") for exc in leaves(group)]
    if failures:
        for exc in failures:
            print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
