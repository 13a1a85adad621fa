"""What Chrono's API adds to a request: ``/prices/latest`` at 100 keyed clients, beside a bare
hypercorn app answering the same bytes.

Four servers, each a process of its own, each loaded in turn by ``--clients`` closed-loop
clients (one keep-alive connection each, connected before the clock) for ``--duration-s``:

1. floor: a plain ASGI ``app(scope, receive, send)`` answering the exact bytes (and content
   type) of a real ``/prices/latest`` answer captured from Chrono first, served by
   ``hypercorn.trio.serve`` with Chrono's own hypercorn config
   (``chrono.api.server.hypercorn_config``);
2. the same, with Chrono's HTTP/1.1 rules installed (``chrono.api.protocol.install()``, as
   ``serve_http`` does): what Chrono's protocol subclass costs before any app runs;
3. ``chrono run``: ``GET /health`` (no key: the app's hooks, routing, an address bucket);
4. ``chrono run``: ``GET /prices/latest?symbols=<5>`` with a public key (auth, the key's rate
   limit bucket, the metrics counting and the route, answered from memory).

Per row: requests/s, p50/p99/max latency, the ratio of its requests/s to the floor's, and the
server's and the load generator's CPU time per request (``/proc/PID/stat``). Then, in this
process (no HTTP), ns per call of ``Keys.require`` (a valid key of 10), ``Limiter.take_key``
and ``HttpStats.observe``, beside the server CPU a ``/prices/latest`` costs over a ``/health``.

The load generator is a minimal HTTP/1.1 client on trio sockets by default (``--client raw``:
pre-encoded requests, the answer read by its ``Content-Length``), so that it costs the shared
cores little; ``--client httpx`` uses httpx as ``api_reads.py`` does. Any answer but 200 (a 429
above all: the limits are set far above the load) fails the run.

Usage: ``python bench/api_overhead.py [--clients C] [--duration-s S] [--client raw|httpx]
[--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import httpx
import trio
from _common import (
    ADMIN_KEY,
    BENCH_LIMITS,
    LIMITS_TOML,
    BenchError,
    ReadOnlyDb,
    leaves,
    open_bench_chrono,
)
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

from chrono.api.auth import Keys, Role
from chrono.api.limits import Limiter
from chrono.config import AuthConfig, LimitsConfig
from chrono.metrics import HttpStats
from chrono.model import utc_now

ASKED: Final = SYMBOLS[:5]  # the symbols of every /prices/latest request
FEED_AGE: Final = timedelta(seconds=1)
REQUEST_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0
MICRO_CALLS: Final = 100_000  # per repeat, for the in-process timings
MICRO_REPEATS: Final = 5
CONFIGURED_KEYS: Final = 10  # keys in the in-process Keys: the check compares with all of them

CONFIG: Final = """\
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "sqlite:///chrono.db"

[consensus]
snapshot_interval_s = 0

[log]
level = "info"

[auth]
public_keys = ["{public_key}"]
internal_keys = ["{internal_key}"]
admin_keys = ["{admin_key}"]
{limits}"""


# --- the data: 20 symbols x 5 sources, a second old, through POST /internal/ingest -----------


def check_latest(body: Any) -> None:
    """The answer did the real work: every symbol, all 5 sources fresh, from memory."""
    if body["missing"] or not body["cached"] or len(body["data"]) != len(ASKED):
        raise BenchError(f"/prices/latest: missing {body['missing']}, cached {body['cached']}")
    for item in body["data"]:
        if item["num_sources"] != len(SOURCES) or item["stale"]:
            raise BenchError(f"/prices/latest: {item['symbol']}: not all 5 sources fresh")


async def capture(url: str, target: str, headers: dict[str, str]) -> httpx.Response:
    with trio.fail_after(SETUP_TIMEOUT_S):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            response = await http.get(target)
    if response.status_code != 200:
        raise BenchError(f"{target}: {response.status_code} {response.text[:300]}")
    return response


# --- the floor server: a bare ASGI app on hypercorn's trio worker, in a child process --------


async def floor_server(body: bytes, content_type: str, chrono_protocol: bool) -> None:
    """Serve ``body`` to every HTTP request until SIGTERM; print ``{"port": N}`` once bound."""
    from hypercorn.trio import serve

    from chrono.api import protocol
    from chrono.api.server import hypercorn_config
    from chrono.config import ServerConfig

    if chrono_protocol:
        protocol.install()
    head = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    start = {"type": "http.response.start", "status": 200, "headers": head}
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "http":
            await send(start)
            await send(answer)

    config = hypercorn_config(ServerConfig(host="127.0.0.1", port=0))
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for _ in signals:
                    stop.set()
                    return

            nursery.start_soon(on_signal)
            binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            print(json.dumps({"port": int(binds[0].rsplit(":", 1)[1])}), flush=True)


@dataclass
class Server:
    process: trio.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def open_floor(
    body: Path, content_type: str, *, chrono_protocol: bool
) -> AsyncIterator[Server]:
    """The floor server's child process, serving; SIGTERM'd on the way out (killed on error)."""
    argv = [sys.executable, __file__, "--floor-server", str(body), content_type]
    if chrono_protocol:
        argv.append("--floor-chrono-protocol")
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(SETUP_TIMEOUT_S):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise BenchError(f"the floor server exited before serving: {line!r}")
                line += chunk
        yield Server(process, int(json.loads(line)["port"]))
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT_S):
            code = await process.wait()
        if code != 0:
            raise BenchError(f"the floor server exited {code} after SIGTERM")
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()


# --- the load --------------------------------------------------------------------------------


class Connection(Protocol):
    async def get(self) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection sending one pre-encoded GET, again and again; the
    answer is read by its ``Content-Length`` (Chrono's and the floor's answers all have one)."""

    def __init__(self, stream: trio.SocketStream, request: bytes) -> None:
        self._stream = stream
        self._request = request
        self._buffer = bytearray()

    @classmethod
    async def open(cls, port: int, target: str, headers: dict[str, str]) -> RawConnection:
        lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return cls(await trio.open_tcp_stream("127.0.0.1", port), request)

    async def _more(self) -> None:
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        self._buffer += chunk

    async def get(self) -> tuple[int, bytes]:
        await self._stream.send_all(self._request)
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise BenchError(f"an answer without Content-Length: {head[:300]!r}")
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : len(head) if stop < 0 else stop])
        total = end + 4 + length
        while len(buffer) < total:
            await self._more()
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        return int(head[9:12]), body

    async def aclose(self) -> None:
        await self._stream.aclose()


class HttpxConnection:
    def __init__(self, client: httpx.AsyncClient, target: str) -> None:
        self._client = client
        self._target = target

    @classmethod
    async def open(cls, port: int, target: str, headers: dict[str, str]) -> HttpxConnection:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=REQUEST_TIMEOUT_S,
            limits=limits,
        )  # fmt: skip
        return cls(client, target)

    async def get(self) -> tuple[int, bytes]:
        response = await self._client.get(self._target)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


CLIENTS: Final = {"raw": RawConnection, "httpx": HttpxConnection}


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    target: str
    keyed: bool


async def hammer(server: Server, row: Row, args: argparse.Namespace) -> dict[str, Any]:
    """``--clients`` closed loops on ``row.target`` for ``--duration-s``; every connection is
    made, and has had one answer, before the clock. A client stops at its first non-200 (Chrono
    closes the connection after an error) or exception."""
    load = Load()
    ready = trio.Event()
    deadline = 0.0
    headers = {"Authorization": f"Bearer {PUBLIC_KEY}"} if row.keyed else {}
    opener = CLIENTS[args.client]

    async def client(connected: trio.MemorySendChannel[None]) -> None:
        conn: Connection = await opener.open(server.port, row.target, headers)
        try:
            status, body = await conn.get()  # outside the clock
            if status != 200:
                raise BenchError(f"{row.label}: {status} {body[:300]!r} before the clock")
            async with connected:
                pass
            await ready.wait()
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    status, body = await conn.get()
                except (OSError, httpx.HTTPError, BenchError) as exc:
                    load.failures[type(exc).__name__] += 1
                    load.note_error(repr(exc))
                    return
                load.latencies.append(time.perf_counter() - sent)
                load.statuses[status] += 1
                if status != 200:
                    load.note_error(f"{status} {body[:300]!r}")
                    return
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await conn.aclose()

    pid = server.process.pid
    with trio.fail_after(args.duration_s + SETUP_TIMEOUT_S + REQUEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            connected, all_connected = trio.open_memory_channel[None](0)
            async with connected:
                for _ in range(args.clients):
                    nursery.start_soon(client, connected.clone())
            async for _ in all_connected:
                pass  # ends once every client closed its clone: all are connected
            server_cpu, client_cpu = process_cpu_s(pid), time.process_time()
            started = time.perf_counter()
            deadline = started + args.duration_s
            ready.set()
        elapsed = time.perf_counter() - started
        server_cpu, client_cpu = process_cpu_s(pid) - server_cpu, time.process_time() - client_cpu
    return {**load.summary(row.label, elapsed, server_cpu, client_cpu), "target": row.target}


# --- in process: auth, rate limit, metrics, ns per call ---------------------------------------


def ns_per_call(fn: Callable[[], object]) -> float:
    """Best of ``MICRO_REPEATS`` runs of ``MICRO_CALLS`` calls, in ns per call (the loop and
    the call itself included: see the empty call's line)."""
    best = float("inf")
    for _ in range(MICRO_REPEATS):
        started = time.perf_counter_ns()
        for _ in range(MICRO_CALLS):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / MICRO_CALLS)
    return best


def in_process(limits: dict[str, int]) -> dict[str, Any]:
    """The per-request calls of the keyed path, timed alone. Needs a trio run (the limiter's
    clock is ``trio.current_time()``)."""
    public = [f"bench_public_key_{i:04d}" for i in range(CONFIGURED_KEYS - 3)]
    auth = AuthConfig(
        public_keys=public,
        internal_keys=["bench_internal_key_0001", "bench_internal_key_0002"],
        admin_keys=["bench_admin_key_0001"],
    )
    keys = Keys(auth)
    key = public[len(public) // 2]
    roles = frozenset({Role.PUBLIC})
    api_key = keys.require(key, roles)
    stats = HttpStats()
    timed: dict[str, float] = {
        "empty_call": ns_per_call(lambda: None),
        "keys_role_of": ns_per_call(lambda: keys.role_of(key)),
        "keys_require": ns_per_call(lambda: keys.require(key, roles)),
        "http_stats_observe": ns_per_call(
            lambda: stats.observe("/prices/latest", "GET", 200, 0.0012)
        ),
    }
    limiter = Limiter(LimitsConfig(**limits))
    state = limiter.take_key(api_key)
    timed["limiter_take_key"] = ns_per_call(lambda: limiter.take_key(api_key))
    if not limiter.take_key(api_key).allowed:
        raise BenchError("the in-process limiter refused a take: raise UNLIMITED_PER_MIN")
    timed["limiter_take_address"] = ns_per_call(lambda: limiter.take_address("127.0.0.1"))
    timed["rate_headers"] = ns_per_call(state.headers)
    return {
        "configured_keys": CONFIGURED_KEYS,
        "calls": MICRO_CALLS,
        "repeats": MICRO_REPEATS,
        "ns_per_call": timed,
        "keyed_sum_ns": timed["keys_require"]
        + timed["limiter_take_key"]
        + timed["http_stats_observe"],
    }


# --- the run ---------------------------------------------------------------------------------


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    load_before = os.getloadavg()
    limits = dict(BENCH_LIMITS)
    log("in process: auth, rate limit, metrics ...")
    micro = in_process(limits)
    target = "/prices/latest?" + urlencode({"symbols": ",".join(ASKED)})
    rows = [
        Row("floor", "floor: bare ASGI app, hypercorn trio", target, keyed=True),
        Row("floor_protocol", "floor + chrono.api.protocol (h11 rules)", target, keyed=True),
        Row("health", "chrono GET /health (no key)", "/health", keyed=False),
        Row("latest", "chrono GET /prices/latest (5, public key)", target, keyed=True),
    ]
    results: dict[str, dict[str, Any]] = {}

    async def measure(server: Server, row: Row) -> None:
        log(f"{row.label}: {args.clients} clients for {args.duration_s:g} s ...")
        results[row.name] = await hammer(server, row, args)
        await trio.sleep(0.5)  # let the connections close before the next row

    with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            CONFIG.format(public_key=PUBLIC_KEY, internal_key=INTERNAL_KEY, admin_key=ADMIN_KEY,
                          limits=LIMITS_TOML)
        )  # fmt: skip
        async with open_bench_chrono(config) as chrono:
            bodies = ingest_bodies(utc_now(), newest_age=FEED_AGE)
            expected = len(SYMBOLS) * len(SOURCES)
            log(f"ingest: {expected} feeds in {len(bodies)} POST(s) ...")
            db = ReadOnlyDb(Path(tmp) / "chrono.db")
            try:
                await feed_chrono(chrono.url, db, bodies, expected)
            finally:
                db.close()
            keyed = {"Authorization": f"Bearer {PUBLIC_KEY}"}
            answer = await capture(chrono.url, target, keyed)
            check_latest(answer.json())
            body_path = Path(tmp) / "latest.body"
            body_path.write_bytes(answer.content)
            content_type = answer.headers["content-type"]
            for row, chrono_protocol in ((rows[0], False), (rows[1], True)):
                async with open_floor(body_path, content_type,
                                      chrono_protocol=chrono_protocol) as floor:  # fmt: skip
                    floored = await capture(floor.url, target, keyed)
                    if floored.content != answer.content:
                        raise BenchError("the floor answered other bytes than Chrono's")
                    await measure(floor, row)
            server = Server(chrono.process, chrono.port)
            await capture(chrono.url, "/health", {})
            await measure(server, rows[2])
            check_latest((await capture(chrono.url, target, keyed)).json())
            await measure(server, rows[3])
            check_latest((await capture(chrono.url, target, keyed)).json())  # still fresh
            code = await chrono.stop()
            if code != 0:
                raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
    floor = results["floor"]["requests_per_s"]
    for r in results.values():
        r["ratio_to_floor"] = r["requests_per_s"] / floor
    diff_us = (results["latest"]["server_cpu_us_per_request"]
               - results["health"]["server_cpu_us_per_request"])  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "clients": args.clients,
        "client": args.client,
        "duration_s": args.duration_s,
        "symbols_asked": list(ASKED),
        "feeds": expected,
        "answer_bytes": len(answer.content),
        "content_type": content_type,
        "limits": limits,
        "rows": results,
        "in_process": micro,
        "latest_minus_health_server_cpu_us": diff_us,
        "exit_code": code,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"chrono API overhead ({result['clients']} keep-alive clients ({result['client']}),"
        f" {result['duration_s']:g} s per row; /prices/latest of {len(result['symbols_asked'])}"
        f" symbols, 20 x 5 sources in memory, {result['answer_bytes']:,} B answer),"
        f" machine: {result['cores']} cores",
        f"{'server':<44}{'req/s':>7}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'srv us/req':>11}{'cli us/req':>11}{'non-200':>8}",
    ]
    for r in result["rows"].values():
        lines.append(
            f"{r['label']:<44}{r['requests_per_s']:>7,.0f}{r['ratio_to_floor']:>7.2f}"
            f"{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}"
            f"{r['server_cpu_us_per_request']:>11,.0f}{r['client_cpu_us_per_request']:>11,.0f}"
            f"{r['errors']:>8}"
        )
    micro = result["in_process"]
    ns = micro["ns_per_call"]

    def cell(value: float) -> str:
        return f"{value:,.0f} ns"

    lines.append(
        f"in process, ns per call (best of {micro['repeats']} x {micro['calls']:,};"
        f" {micro['configured_keys']} keys configured):"
    )
    entries = [
        ("empty call (the loop's own cost, in every line)", ns["empty_call"]),
        ("Keys.role_of (valid key)", ns["keys_role_of"]),
        ("Keys.require (valid key, public route)", ns["keys_require"]),
        ("Limiter.take_key", ns["limiter_take_key"]),
        ("HttpStats.observe", ns["http_stats_observe"]),
    ]
    lines += [f"  {name:<58}{cell(value):>12}" for name, value in entries]
    total_us = micro["keyed_sum_ns"] / 1000
    diff_us = result["latest_minus_health_server_cpu_us"]
    latest_us = result["rows"]["latest"]["server_cpu_us_per_request"]
    share = f"{100 * total_us / diff_us:.0f} % of it" if diff_us > 0 else "n/a"
    lines.append(
        f"  {'sum: require + take_key + observe':<58}{cell(micro['keyed_sum_ns']):>12}"
        f"  = {total_us:.1f} us"
    )
    lines.append(
        f"  server CPU /prices/latest - /health: {diff_us:,.0f} us per request ({share});"
        f" the sum is {100 * total_us / latest_us:.1f} % of a /prices/latest's {latest_us:,.0f} us"
    )
    lines.append(
        f"  also: Limiter.take_address {cell(ns['limiter_take_address'])} (/health pays it too),"
        f" RateState.headers {cell(ns['rate_headers'])} (keyed answers' X-RateLimit-*)"
    )
    limits = ", ".join(f"{k} = {v:,}" for k, v in result["limits"].items()) or "no [limits]"
    lines.append(
        f"ratio = req/s / floor req/s; srv/cli us/req = CPU of the server / of this load generator"
        f" per request; {limits}; chrono SIGTERM exit {result['exit_code']}"
    )
    before, after = (", ".join(f"{v:.2f}" for v in result[f"load_average_{when}"])
                     for when in ("before", "after"))  # fmt: skip
    lines.append(f"load average before the run {before}; after {after}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent HTTP clients")
    parser.add_argument("--duration-s", type=float, default=8.0, help="load per row")
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw",
        help="load generator: minimal HTTP/1.1 on trio sockets, or httpx",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--floor-server", nargs=2, metavar=("BODY", "TYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-chrono-protocol", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.floor_server:
        body, content_type = args.floor_server
        trio.run(floor_server, Path(body).read_bytes(), content_type, args.floor_chrono_protocol)
        return 0
    if args.clients < 1 or args.duration_s <= 0:
        raise SystemExit("--clients and --duration-s must be positive")
    failures: list[BaseException] = []
    try:
        result = trio.run(run_bench, args)
    except* (BenchError, trio.TooSlowError, OSError) as group:  # a return is not allowed here
        failures = leaves(group)
    if failures:
        for exc in failures:
            print(f"bench failed: {exc!r}" if isinstance(exc, trio.TooSlowError | OSError)
                  else f"bench failed: {exc}", file=sys.stderr)  # fmt: skip
        return 1
    print(json.dumps(result) if args.json else render(result))
    errors = {name: r for name, r in result["rows"].items() if r["errors"]}
    for name, r in errors.items():
        print(f"bench failed: {name}: {r['errors']} non-200 answers or errors"
              f" ({r['statuses']}, {r['exceptions']}), first: {r['first_error']}",
              file=sys.stderr)  # fmt: skip
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
