"""``/stream``: latency, memory and the pipeline with stalled clients, beside a bare relay.

The numbers of one run (bench/README.md explains how to read them):

1. latency, exchange frame -> client, at each ``--sizes`` entry (subscribed clients): the
   Coinbase simulator ticks at a steady rate into ``chrono run``; every client subscribes to
   BTC/USD and ETH/USD and receives one ``price_update`` per ticker; latency = the client's
   ``time.time()`` when the socket read returned - the ticker's ``time`` (stamped when the
   simulator made the trade, right before it queues the frame), which the update carries as
   ``data.timestamp``. The floor, in the same run: a bare relay process (``--relay``) that
   reads the same simulator's frames with Chrono's own ``open_feed`` and writes each ticker,
   framed once, to every client's socket: the same job (one upstream, N clients, encode once,
   a queue per client) with none of Chrono's parse, validation, fan-out or store. The same
   client code measures both, so the floor is what the machine, the sockets and the clients
   cost; the ratio is what Chrono adds.
2. RSS of ``chrono run`` (with its writer process) before and after ``--idle`` clients open
   and subscribe (each reply read), idle;
3. ingest: feeds/s of a burst of ``--feeds`` into SQLite (as ``e2e_coinbase.py`` measures it)
   with no ``/stream`` client, then, in a fresh ``chrono run``, with ``--stalled`` clients
   subscribed that never read again (raw sockets, SO_RCVBUF 4096); ``/status`` cut_off and
   dropped after. ``--rounds`` of the two, alternated; the best of each is compared.

The clients are light: handshake and subscribe by hand in trio (``--concurrency``, 50, at a
time), then one ``select.epoll`` loop per process over all its sockets, frames parsed by
``parse_frames``, pings answered; in ``--client-procs`` processes beyond 100 clients. Every
client counts every update; ``--sample`` of them (spread over the processes) also decode each
one and time it. The stalled clients (``open_stalled``) are the same handshake on a small
window, never read after the reply.

Usage: ``python bench/stream.py [--phases latency,rss,ingest] [--sizes 1,100,1000]
[--rate R] [--max-deliveries D] [--seconds S] [--idle N] [--feeds N] [--rounds N]
[--stalled N] [--json]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio
from _common import (
    ADMIN_KEY,
    CHRONO_CONFIG,
    LIMITS_TOML,
    POLL_S,
    BenchError,
    epoch_s,
    leaves,
    open_bench_chrono,
    percentile,
    run_main,
)
from _floor import PRODUCTS, SUBSCRIBE, SUBSCRIBE_TIMEOUT_S
from e2e_coinbase import SqliteDb, _burst, rss_mib
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from chrono.collect.connection import open_feed
from chrono.config import BatchConfig
from chrono.testing.process import ChronoProcess
from chrono.testing.simulators.client import text_frame
from chrono.testing.simulators.coinbase import CoinbaseSimulator

PUBLIC_KEY: Final = "bench_public_key_0001"
SYMBOLS: Final = ["BTC/USD", "ETH/USD"]
SUBSCRIBE_STREAM: Final = json.dumps(
    {"action": "subscribe", "id": 1, "symbols": SYMBOLS}, separators=(",", ":")
)
RELAY_REPLY: Final = json.dumps(
    {"type": "subscribed", "id": 1, "channel": "prices", "symbols": SYMBOLS}
    | {"accepted": SYMBOLS, "unknown": [], "invalid": [], "seq": 0},
    separators=(",", ":"),
).encode()
STREAM_TOML: Final = LIMITS_TOML + "stream_per_key = 20000\nstream_total = 20000\n"
RECV_BYTES: Final = 65_536
STALLED_RCVBUF: Final = 4096  # as tests/test_stream_slow_client.py
OPEN_PER_S: Final = 50  # opening clients slower than this counts as hung
DRAIN_TIMEOUT_S: Final = 20.0  # after the ticks stop, for every update to reach every client
CUT_WAIT_S: Final = 20.0  # after a burst, for the stalled clients to be cut (send_timeout_s 10)
GOALS: Final = {"p99_ms": {100: 10.0, 1000: 50.0}, "idle_rss_mib": 512.0, "ingest_ratio": 0.95}
UPDATE: Final = (b'{"type":"price_update"', b'{"type":"ticker"')


class _Data(msgspec.Struct):
    timestamp: str = ""


class _Message(msgspec.Struct):
    """A Chrono ``price_update`` (``data.timestamp``) or a relayed Coinbase ticker (``time``)."""

    type: str
    time: str = ""
    data: _Data | None = None
    snapshot: bool = False


async def poll(check: Callable[[], Awaitable[bool] | bool], timeout_s: float) -> bool:
    """Whether ``check()`` came true within ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while True:
            done = check()
            if done if isinstance(done, bool) else await done:
                return True
            await trio.sleep(POLL_S)
    return False


def open_timeout_s(clients: int) -> float:
    return max(SUBSCRIBE_TIMEOUT_S, clients / OPEN_PER_S)


class Tally:
    """Updates per client; the latencies (s) of the sampled clients' updates."""

    def __init__(self, clients: int) -> None:
        self.counts = [0] * clients
        self.latencies: list[float] = []
        self.decode = msgspec.json.Decoder(_Message).decode

    def frame(self, client: int, payload: bytes, now: float, sampled: bool) -> None:
        if not payload.startswith(UPDATE):
            return  # replies, heartbeats
        if not sampled:
            if b'"snapshot":true' not in payload[:100]:
                self.counts[client] += 1
            return
        message = self.decode(payload)
        if message.snapshot:
            return
        stamp = message.data.timestamp if message.data else message.time
        self.latencies.append(now - epoch_s(stamp))
        self.counts[client] += 1


def parse_frames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole server frames (unmasked, RFC 6455) at the head of ``buffer``, as (opcode,
    payload), and the bytes of a frame not yet whole."""
    frames, pos, size = [], 0, len(buffer)
    while size - pos >= 2:
        first, length, head = buffer[pos], buffer[pos + 1] & 0x7F, 2
        if length == 126:
            if size - pos < 4:
                break
            length, head = int.from_bytes(buffer[pos + 2 : pos + 4]), 4
        elif length == 127:
            if size - pos < 10:
                break
            length, head = int.from_bytes(buffer[pos + 2 : pos + 10]), 10
        if size - pos < head + length:
            break
        if not first & 0x80:
            raise BenchError("a fragmented frame (the light client reads whole ones only)")
        frames.append((first & 0x0F, buffer[pos + head : pos + head + length]))
        pos += head + length
    return frames, buffer[pos:]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (the all-zero mask leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class LightClient:
    """One subscribed connection after its handshake: a blocking socket read when epoll says
    so, frames parsed by ``parse_frames``, pings answered."""

    __slots__ = ("buffer", "index", "sampled", "sock")

    def __init__(self, sock: socket.socket, index: int, sampled: bool, buffer: bytes) -> None:
        self.sock, self.index, self.sampled, self.buffer = sock, index, sampled, buffer

    def frames(self, data: bytes) -> list[tuple[int, bytes]]:
        frames, self.buffer = parse_frames(self.buffer + data if self.buffer else data)
        for opcode, payload in frames:
            if opcode == 0x9:
                self.sock.sendall(client_frame(0xA, payload))
            elif opcode == 0x8:
                raise BenchError(f"client {self.index}: /stream closed it: {payload[2:]!r}")
        return frames


async def open_light(
    url: str, *, rcvbuf: int | None = None
) -> tuple[trio.socket.SocketType, list[bytes], bytes]:
    """Handshake and subscribe to ``SYMBOLS`` by hand: the socket, the text frames after the
    reply, and the bytes of a frame not yet whole (``rcvbuf``: SO_RCVBUF set before
    connecting, so the window is small from the start)."""
    parts = urllib.parse.urlsplit(url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    stream = trio.SocketStream(sock)  # for send_all; the socket is detached from it after
    await stream.send_all(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if not (data := await stream.receive_some(RECV_BYTES)):
            raise BenchError("a /stream connection closed before the 101")
        buffer += data
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"/stream handshake refused: {head.splitlines()[0].decode()}")
    await stream.send_all(client_frame(0x1, SUBSCRIBE_STREAM.encode()))
    texts: list[bytes] = []
    while True:
        frames, buffer = parse_frames(buffer)
        for opcode, payload in frames:
            if opcode == 0x9:
                await stream.send_all(client_frame(0xA, payload))
            elif opcode == 0x8:
                raise BenchError(f"/stream closed before the reply: {payload[2:]!r}")
            elif opcode == 0x1:
                if payload.startswith(b'{"type":"error"'):
                    raise BenchError(f"/stream refused the subscribe: {payload.decode()}")
                texts.append(payload)
        replies = [i for i, t in enumerate(texts) if b'"type":"subscribed"' in t]
        if replies:
            if json.loads(texts[replies[0]])["accepted"] != SYMBOLS:
                raise BenchError(f"subscribe not accepted: {texts[replies[0]].decode()}")
            return sock, texts[replies[0] + 1 :], buffer
        if not (data := await stream.receive_some(RECV_BYTES)):
            raise BenchError("a /stream connection closed after the 101, before the reply")
        buffer += data


async def open_stalled(url: str) -> trio.SocketStream:
    """A subscribed client on a small window that is never read again."""
    sock, _texts, _rest = await open_light(url, rcvbuf=STALLED_RCVBUF)
    return trio.SocketStream(sock)


async def _open_client(
    url: str,
    index: int,
    sampled: bool,
    tally: Tally,
    gate: trio.Semaphore,
    opened: list[LightClient],
) -> None:
    async with gate:
        start = time.perf_counter()
        try:
            sock, texts, buffer = await open_light(url)
        except (BenchError, OSError) as exc:
            elapsed = time.perf_counter() - start
            raise BenchError(
                f"client {index} ({len(opened)} open): {exc} after {elapsed:.1f} s"
            ) from exc
    now = time.time()
    for payload in texts:
        tally.frame(index, payload, now, sampled)
    plain = socket.socket(fileno=sock.detach())
    plain.setblocking(True)
    opened.append(LightClient(plain, index, sampled, buffer))


async def open_all(
    url: str, clients: int, sample: int, concurrency: int, tally: Tally
) -> list[LightClient]:
    """``clients`` handshakes, ``concurrency`` at a time, in trio; then trio is left."""
    gate, opened = trio.Semaphore(concurrency), list[LightClient]()
    with trio.move_on_after(open_timeout_s(clients)):
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(_open_client, url, index, index < sample, tally, gate, opened)
    if len(opened) < clients:
        raise BenchError(f"{len(opened)} of {clients} clients subscribed in time")
    return opened


def serve_clients(clients: list[LightClient], tally: Tally, sample: int) -> None:
    """One epoll loop over every client's socket and stdin (``count``: the updates received
    so far; ``stop``: the JSON result); nothing else runs in this process meanwhile."""
    poller, stdin = select.epoll(), sys.stdin.fileno()
    by_fd = {client.sock.fileno(): client for client in clients}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    poller.register(stdin, select.EPOLLIN)
    print("ready", flush=True)
    commands = b""
    while True:
        for fd, _mask in poller.poll():
            if fd == stdin:
                if not (data := os.read(stdin, 4096)):
                    return
                commands += data
                while b"\n" in commands:
                    line, _, commands = commands.partition(b"\n")
                    if line.strip() == b"count":
                        print(sum(tally.counts), flush=True)
                        continue
                    result = {"counts": tally.counts, "latencies": tally.latencies}
                    print(json.dumps(result | {"sampled": sample}), flush=True)
                    return
                continue
            client = by_fd[fd]
            data = client.sock.recv(RECV_BYTES)
            now = time.time()
            if not data:
                raise BenchError(f"client {client.index}: a /stream connection closed")
            for opcode, payload in client.frames(data):
                if opcode == 0x1:
                    tally.frame(client.index, payload, now, client.sampled)


def client_worker(url: str, clients: int, sample: int, concurrency: int) -> None:
    """``clients`` clients in this process; stdout ``ready`` once all are subscribed."""
    tally = Tally(clients)
    serve_clients(trio.run(open_all, url, clients, sample, concurrency, tally), tally, sample)


class _Lines:
    """Lines from a child's stdout, each read bounded by the caller's timeout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buffer = stream, b""

    async def line(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(RECV_BYTES)
            if not data:
                raise BenchError("a child process exited early (its stderr is above)")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


class Clients:
    """``clients`` light clients of ``url`` in ``procs`` child processes."""

    def __init__(self, url: str, clients: int, sample: int, procs: int, concurrency: int) -> None:
        share = [clients // procs + (i < clients % procs) for i in range(procs)]
        self.commands = [
            [
                sys.executable,
                __file__,
                "--client-worker",
                url,
                str(n),
                str(math.ceil(sample * n / clients)),
                str(max(1, concurrency // procs)),
            ]
            for n in share
            if n
        ]
        self.clients = clients
        self.procs: list[trio.Process] = []
        self.lines: list[_Lines] = []

    async def start(self) -> None:
        for command in self.commands:
            proc = await trio.lowlevel.open_process(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            self.lines.append(_Lines(proc.stdout))
        with trio.fail_after(open_timeout_s(self.clients) + 10):
            for lines in self.lines:
                if (ready := await lines.line()) != "ready":
                    raise BenchError(f"a client worker said {ready!r}")

    async def _ask(self, command: str) -> list[str]:
        answers = []
        with trio.fail_after(30):
            for proc, lines in zip(self.procs, self.lines, strict=True):
                assert proc.stdin is not None
                await proc.stdin.send_all(f"{command}\n".encode())
                answers.append(await lines.line())
        return answers

    async def received(self) -> int:
        return sum(int(answer) for answer in await self._ask("count"))

    async def stop(self) -> dict[str, Any]:
        results = [json.loads(answer) for answer in await self._ask("stop")]
        with trio.fail_after(30):
            for proc in self.procs:
                await proc.wait()
        return {
            "counts": [c for r in results for c in r["counts"]],
            "latencies": sorted(v for r in results for v in r["latencies"]),
            "sampled": sum(r["sampled"] for r in results),
        }

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()


@asynccontextmanager
async def open_clients(
    url: str, clients: int, args: argparse.Namespace, sample: int = 0
) -> AsyncIterator[Clients]:
    procs = 1 if clients <= 100 else args.client_procs
    handle = Clients(url, clients, sample, procs, args.concurrency)
    try:
        await handle.start()
        yield handle
    finally:
        handle.kill()


# --- the floor: a bare relay ----------------------------------------------------------------


class _RelayClient:
    """A client's queue and writer; with nothing queued or being written, a frame goes straight
    into the socket's buffer (as Chrono's ``_write_now`` does), the writer only for the rest."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.pending: list[bytes] = []
        self.wake = trio.Event()
        self.writing = False

    def push(self, data: bytes) -> None:
        if not self.pending and not self.writing:
            try:
                sent = os.write(self.stream.socket.fileno(), data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.pending.append(data)
        self.wake.set()

    async def write(self) -> None:
        while True:
            if not self.pending:
                self.wake = trio.Event()
                await self.wake.wait()
            batch, self.pending = self.pending, []
            self.writing = True
            try:
                await self.stream.send_all(b"".join(batch))
            finally:
                self.writing = False


async def _relay_client(clients: set[_RelayClient], stream: trio.SocketStream) -> None:
    """Handshake (``ServerProtocol``), answer the subscribe as Chrono does, then the writer."""
    proto = ServerProtocol(max_size=2**20)
    client = _RelayClient(stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.write)
            while data := await stream.receive_some(RECV_BYTES):
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Request):
                        proto.send_response(proto.accept(event))
                    elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        proto.send_text(RELAY_REPLY)
                        client.push(b"".join(proto.data_to_send()))
                        clients.add(client)
                if out := proto.data_to_send():
                    client.push(b"".join(out))
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        clients.discard(client)


async def relay(sim_url: str) -> None:
    """The floor: prints its port; every ticker from ``sim_url``, framed once, to every client."""
    clients: set[_RelayClient] = set()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, partial(_relay_client, clients), listeners)
        async with open_feed(sim_url, open_timeout_s=SUBSCRIBE_TIMEOUT_S) as feed:
            await feed.send(SUBSCRIBE)
            print(listeners[0].socket.getsockname()[1], flush=True)
            while True:
                for payload in await feed.receive():
                    if payload.startswith(b'{"type":"ticker"'):
                        frame = text_frame(payload)
                        for client in clients:
                            client.push(frame)


# --- chrono run ------------------------------------------------------------------------------


def write_config(folder: Path, sim_url: str, stream_toml: str = "") -> Path:
    batch = BatchConfig()
    text = CHRONO_CONFIG.format(
        url=sim_url,
        admin_key=ADMIN_KEY,
        max_feeds=batch.max_feeds,
        max_interval_ms=batch.max_interval_ms,
    ).replace("[auth]\n", f'[auth]\npublic_keys = ["{PUBLIC_KEY}"]\n')
    config = folder / "config.toml"
    config.write_text(f"{text}\n{STREAM_TOML}\n{stream_toml}")
    return config


async def stream_status(port: int) -> dict[str, Any]:
    """``/status`` ``pipeline.stream``."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        response = await http.get("/status", headers=headers)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()["pipeline"]["stream"]
    return stats


async def wait_stream_clients(port: int, clients: int, timeout_s: float = 30) -> None:
    async def check() -> bool:
        return bool((await stream_status(port))["clients"] == clients)

    if not await poll(check, timeout_s):
        raise BenchError(f"/status never showed {clients} stream clients")


@asynccontextmanager
async def open_chrono(
    sim: CoinbaseSimulator, label: str, stream_toml: str = ""
) -> AsyncIterator[tuple[ChronoProcess, SqliteDb]]:
    """A fresh ``chrono run`` on a fresh ``sim`` (silent), its collector subscribed, and its
    SQLite file; SIGTERM must exit 0. ``stream_toml``: a ``[stream]`` table to add."""
    with tempfile.TemporaryDirectory(prefix="chrono-bench-stream-") as tmp:
        async with open_bench_chrono(write_config(Path(tmp), sim.url, stream_toml)) as chrono:
            print(f"{label}: chrono run is pid {chrono.process.pid}", file=sys.stderr)
            db = SqliteDb(Path(tmp) / "chrono.db")
            try:
                with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                    await sim.wait_subscribed(1)
                yield chrono, db
            except BenchError as exc:
                raise BenchError(f"{exc}\nchrono's last log lines:\n{chrono.tail()}") from exc
            finally:
                db.close()
            if (code := await chrono.stop()) != 0:
                raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")


# --- 1. latency ------------------------------------------------------------------------------


def _latency(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": 1000 * percentile(values, 50),
        "p99": 1000 * percentile(values, 99),
        "max": 1000 * values[-1],
        "samples": len(values),
    }


async def _steady(
    sim: CoinbaseSimulator,
    url: str,
    clients: int,
    rate: float,
    args: argparse.Namespace,
    port: int | None,
    stalled: int = 0,
    seconds: float | None = None,
) -> dict[str, Any]:
    """``clients`` subscribed to ``url``; ``rate`` tickers/s for ``seconds`` (``args.seconds``);
    every update counted at every client, the sampled ones timed. ``port``: chrono's, for
    ``dropped``. ``stalled``: clients more, subscribed and never read again (then every one of
    the ``clients`` must get every update, and every stalled one must be cut)."""
    async with open_clients(url, clients, args, sample=min(args.sample, clients)) as handle:
        before_stats = await stream_status(port) if port else {}
        stuck = [await open_stalled(url) for _ in range(stalled)]
        before = len(sim.ticks)
        sim.set_rate(rate)
        sim.set_silent(False)
        await trio.sleep(seconds or args.seconds)
        sim.set_silent(True)
        sent = len(sim.ticks) - before

        async def drained() -> bool:
            return await handle.received() >= sent * clients

        await poll(drained, DRAIN_TIMEOUT_S)
        result = await handle.stop()
        if stalled and port:

            async def all_cut() -> bool:
                cut = (await stream_status(port))["cut_off"] - before_stats["cut_off"]
                return bool(cut >= stalled)

            await poll(all_cut, CUT_WAIT_S)
        after = await stream_status(port) if port else {}
        for stream in stuck:
            await trio.aclose_forcefully(stream)
    counts = result["counts"]
    dropped = after["dropped"] - before_stats["dropped"] if port else 0
    if max(counts) > sent or (min(counts) < sent and (stalled or not dropped)):
        raise BenchError(
            f"{clients} clients of {url.split('?')[0]}: {min(counts)}..{max(counts)} updates "
            f"each for {sent} tickers sent, {dropped} dropped"
        )
    extra = {}
    if stalled:
        extra = {
            "stalled": stalled,
            "stalled_parked": after["parked"] - before_stats["parked"],
            "stalled_cut_off": after["cut_off"] - before_stats["cut_off"],
        }
        if extra["stalled_cut_off"] < stalled:
            raise BenchError(f"{extra['stalled_cut_off']} of {stalled} stalled clients cut off")
    return extra | {
        "clients": clients,
        "rate_per_s": rate,
        "sent": sent,
        "deliveries_per_s": sent * clients / args.seconds,
        "complete_clients": sum(1 for c in counts if c == sent),
        "dropped": dropped,
        "sampled_clients": result["sampled"],
        "latency_ms": _latency(result["latencies"]),
    }


async def measure_latency(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    """Per size: the relay, then chrono, each on its own (silent between) simulator."""
    sim_relay, sim_chrono = CoinbaseSimulator(symbols=PRODUCTS), CoinbaseSimulator(symbols=PRODUCTS)
    out = []
    async with trio.open_nursery() as nursery:
        for sim in (sim_relay, sim_chrono):
            sim.set_silent(True)
            await nursery.start(sim.serve)
        relay_proc = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--relay", sim_relay.url], stdout=subprocess.PIPE
        )
        try:
            assert relay_proc.stdout is not None
            with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                relay_url = f"ws://127.0.0.1:{await _Lines(relay_proc.stdout).line()}/stream"
                await sim_relay.wait_subscribed(1)
            async with open_chrono(sim_chrono, "latency") as (chrono, _db):
                chrono_url = f"ws://127.0.0.1:{chrono.port}/stream?key={PUBLIC_KEY}"
                for clients in args.sizes:
                    rate = min(args.rate, args.max_deliveries / clients)
                    log(f"latency: {clients} clients at {rate:g} tickers/s, relay then chrono")
                    relay_r = await _steady(sim_relay, relay_url, clients, rate, args, None)
                    chrono_r = await _steady(
                        sim_chrono, chrono_url, clients, rate, args, chrono.port
                    )
                    out.append({"clients": clients, "relay": relay_r, "chrono": chrono_r})
        finally:
            relay_proc.kill()
        nursery.cancel_scope.cancel()
    return out


MIXED_TOML: Final = "[stream]\nqueue_messages = 100\n"  # conflated within the step


async def measure_mixed(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """``--mixed`` clients (the last ``--sizes`` entry) that read, and ``--stalled-mixed`` that
    stop reading, on the same symbols of one ``chrono run`` whose clients are conflated past
    100 queued updates; ``--mixed-seconds`` long, so that the stalled ones are conflated and
    cut (a write blocked for send_timeout_s, 10 s) during the step."""
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)
    clients = args.sizes[-1]
    rate = min(args.rate, args.max_deliveries / clients)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        async with open_chrono(sim, "mixed", MIXED_TOML) as (chrono, _db):
            url = f"ws://127.0.0.1:{chrono.port}/stream?key={PUBLIC_KEY}"
            log(f"mixed: {clients} clients and {args.stalled_mixed} stalled at {rate:g} tickers/s")
            row = await _steady(
                sim, url, clients, rate, args, chrono.port, args.stalled_mixed, args.mixed_seconds
            )
        nursery.cancel_scope.cancel()
    return row


# --- 2. RSS with idle clients ----------------------------------------------------------------


async def measure_rss(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        async with open_chrono(sim, "rss") as (chrono, db):
            await sim.send_burst(len(PRODUCTS))  # a price each: every subscribe gets snapshots
            await db.wait_count(len(PRODUCTS), SUBSCRIBE_TIMEOUT_S)
            pid = chrono.process.pid
            await trio.sleep(1)
            before = rss_mib(pid)
            log(f"rss: {args.idle} idle clients, {args.concurrency} opening at a time ...")
            url = f"ws://127.0.0.1:{chrono.port}/stream?key={PUBLIC_KEY}"
            start = time.perf_counter()
            async with open_clients(url, args.idle, args) as handle:
                open_s = time.perf_counter() - start
                await wait_stream_clients(chrono.port, args.idle)
                await trio.sleep(2)
                after = rss_mib(pid)
                await handle.stop()
        nursery.cancel_scope.cancel()
    return {
        "clients": args.idle,
        "open_s": open_s,
        "rss_mib_before": before,
        "rss_mib_after": after,
        "per_client_kib": (after - before) * 1024 / args.idle,
    }


# --- 3. ingest with stalled clients ------------------------------------------------------------


async def _ingest_case(stalled: int, feeds: int, log: Any) -> dict[str, Any]:
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        async with open_chrono(sim, f"ingest, {stalled} stalled") as (chrono, db):
            url = f"ws://127.0.0.1:{chrono.port}/stream?key={PUBLIC_KEY}"
            sockets = []
            try:
                with trio.fail_after(open_timeout_s(stalled)):
                    for _ in range(stalled):
                        sockets.append(await open_stalled(url))
                await wait_stream_clients(chrono.port, stalled)
                log(f"ingest: burst of {feeds} with {stalled} stalled clients ...")
                burst = await _burst(sim, db, feeds)

                async def all_cut() -> bool:
                    return not (await stream_status(chrono.port))["clients"]

                if stalled:
                    await poll(all_cut, CUT_WAIT_S)
                stats = await stream_status(chrono.port)
            finally:
                for stream in sockets:
                    await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()
    return {
        "stalled": stalled,
        "feeds": feeds,
        "feeds_per_s": burst["feeds_per_s"],
        "cut_off": stats["cut_off"],
        "dropped": stats["dropped"],
        "clients_left": stats["clients"],
    }


async def measure_ingest(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """``--rounds`` of (none, stalled), alternated so that the machine's drift hits both; the
    best run of each is compared (a noisy machine only ever slows a run down)."""
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "stalled": []}
    for _ in range(args.rounds):
        for case, stalled in (("none", 0), ("stalled", args.stalled)):
            runs[case].append(await _ingest_case(stalled, args.feeds, log))
    best = {case: max(rows, key=lambda row: row["feeds_per_s"]) for case, rows in runs.items()}
    return {**best, "runs": {case: [r["feeds_per_s"] for r in rows] for case, rows in runs.items()}}


# --- report ------------------------------------------------------------------------------------


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def render(result: dict[str, Any]) -> str:
    lines = [f"chrono /stream (coinbase simulator -> chrono run), {result['cores']} cores"]
    for row in result.get("latency", []):
        relay, chrono = row["relay"], row["chrono"]
        r, c = relay["latency_ms"], chrono["latency_ms"]
        goal = GOALS["p99_ms"].get(row["clients"])
        verdict = f"   goal p99 <= {goal:g} ms: {_goal(c['p99'] <= goal)}" if goal else ""
        lines += [
            f"latency, {row['clients']:>5} clients at {chrono['rate_per_s']:g} tickers/s "
            f"({chrono['deliveries_per_s']:,.0f} updates/s out; {chrono['sampled_clients']} "
            f"clients timed, {c['samples']:,} updates)",
            f"  floor bare relay:  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
            f"max {r['max']:7.1f} ms",
            f"  chrono /stream:    p50 {c['p50']:7.2f} ms  p99 {c['p99']:7.2f} ms  "
            f"max {c['max']:7.1f} ms   p99 = {c['p99'] / r['p99']:.1f}x the floor's{verdict}",
            f"  complete clients: relay {relay['complete_clients']}/{row['clients']}, chrono "
            f"{chrono['complete_clients']}/{row['clients']} (dropped {chrono['dropped']})",
        ]
    if mixed := result.get("mixed"):
        c = mixed["latency_ms"]
        goal = GOALS["p99_ms"].get(mixed["clients"])
        verdict = f"   goal p99 <= {goal:g} ms: {_goal(c['p99'] <= goal)}" if goal else ""
        lines += [
            f"mixed, {mixed['clients']:>5} clients reading and {mixed['stalled']} stalled at "
            f"{mixed['rate_per_s']:g} tickers/s ({c['samples']:,} updates timed)",
            f"  chrono /stream:    p50 {c['p50']:7.2f} ms  p99 {c['p99']:7.2f} ms  "
            f"max {c['max']:7.1f} ms{verdict}",
            f"  complete clients {mixed['complete_clients']}/{mixed['clients']}; stalled: parked "
            f"{mixed['stalled_parked']}, cut off {mixed['stalled_cut_off']}/{mixed['stalled']}",
        ]
    if rss := result.get("rss"):
        total = rss["rss_mib_after"]
        lines.append(
            f"RSS, {rss['clients']:,} idle subscribed clients (opened in {rss['open_s']:.1f} s): "
            f"{rss['rss_mib_before']:.0f} -> {total:.0f} MiB, {rss['per_client_kib']:.1f} KiB "
            f"per client   goal < {GOALS['idle_rss_mib']:g} MiB: "
            f"{_goal(total < GOALS['idle_rss_mib'])}"
        )
    if ingest := result.get("ingest"):
        none, stalled = ingest["none"], ingest["stalled"]
        ratio = stalled["feeds_per_s"] / none["feeds_per_s"]
        runs: dict[str, list[float]] = ingest.get("runs", {})
        each = "; ".join(
            f"{case} " + ", ".join(f"{rate:,.0f}" for rate in rates) for case, rates in runs.items()
        )
        lines += [
            f"ingest, burst of {none['feeds']:,} (best of {len(runs.get('none', [1]))}): no "
            f"clients "
            f"{none['feeds_per_s']:,.0f} feeds/s; {stalled['stalled']} stalled "
            f"{stalled['feeds_per_s']:,.0f} feeds/s; ratio {ratio:.2f}   goal >= "
            f"{GOALS['ingest_ratio']}: {_goal(ratio >= GOALS['ingest_ratio'])}",
            f"  every run, feeds/s: {each}",
            f"  after: cut_off {stalled['cut_off']}, dropped {stalled['dropped']:,}, "
            f"stream clients left {stalled['clients_left']}",
        ]
    return "\n".join(lines)


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        print(message, file=sys.stderr)

    result: dict[str, Any] = {"cores": os.cpu_count()}
    if "latency" in args.phases:
        result["latency"] = await measure_latency(args, log)
    if "mixed" in args.phases:
        result["mixed"] = await measure_mixed(args, log)
    if "rss" in args.phases:
        result["rss"] = await measure_rss(args, log)
    if "ingest" in args.phases:
        result["ingest"] = await measure_ingest(args, log)
    return result


def _ints(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=lambda s: s.split(","), default="latency,mixed,rss,ingest")
    parser.add_argument("--sizes", type=_ints, default=[1, 100, 1000], help="clients per step")
    parser.add_argument("--rate", type=float, default=200.0, help="tickers/s (both products)")
    parser.add_argument(
        "--max-deliveries",
        type=float,
        default=20_000.0,
        help="updates/s out at most: at N clients the rate is min(rate, this / N)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="each latency step's length")
    parser.add_argument("--sample", type=int, default=100, help="clients timed per step")
    parser.add_argument("--idle", type=int, default=10_000, help="idle clients for the RSS")
    parser.add_argument("--feeds", type=int, default=1_000_000, help="the ingest burst")
    parser.add_argument("--rounds", type=int, default=2, help="ingest runs of each case")
    parser.add_argument("--stalled", type=int, default=100, help="stalled clients (ingest)")
    parser.add_argument("--stalled-mixed", type=int, default=10, help="stalled clients (mixed)")
    parser.add_argument("--mixed-seconds", type=float, default=20.0, help="the mixed step")
    parser.add_argument("--client-procs", type=int, default=2, help="beyond 100 clients")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="clients opening at once (README: 200)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--client-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raise_nofile()
    if isinstance(args.phases, str):
        args.phases = args.phases.split(",")
    if args.client_worker:
        url, clients, sample, concurrency = args.client_worker
        failed: list[BaseException] = []
        try:
            client_worker(url, int(clients), int(sample), int(concurrency))
        except* BenchError as group:
            failed = leaves(group)
        for exc in failed:
            print(f"client worker: {exc}", file=sys.stderr)
        return 1 if failed else 0
    if args.relay:
        trio.run(relay, args.relay)
        return 0
    return run_main(run_bench, args, render)


if __name__ == "__main__":
    sys.exit(main())
