"""The floors: bare clients receiving a burst from the simulator, each in its own process.

Each client runs in a process of its own, as Chrono does, so that it has a core to itself; each
decodes every frame with msgspec into the same small Struct of strings (no Decimal, no
datetime). Three clients, so that Chrono's rate can be set beside each:

- ``trio``: ``websockets.trio``, one ``recv()`` per frame (what Chrono's stack was built on);
- ``asyncio``: ``websockets.asyncio`` on uvloop, the fastest stock Python client (the issue's
  yardstick: Chrono should reach 0.60 of it);
- ``chrono``: Chrono's own ``open_feed``, a list of frames per socket read: Chrono's receive
  path with none of Chrono's work after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

import msgspec
import trio
import uvloop
from websockets.asyncio.client import connect as asyncio_connect
from websockets.trio.client import connect as trio_connect

from chrono.collect.connection import open_feed
from chrono.testing.simulators.coinbase import CoinbaseSimulator

PRODUCTS: Final = ("BTC-USD", "ETH-USD")
SUBSCRIBE_TIMEOUT_S: Final = 20.0
MIN_PHASE_TIMEOUT_S: Final = 60.0
SLOWEST_FEEDS_PER_S: Final = 2_000  # below this a phase counts as hung and fails
SUBSCRIBE: Final = json.dumps(
    {"type": "subscribe", "channels": [{"name": "ticker", "product_ids": PRODUCTS}]}
)
FLOORS: Final = {
    "trio": "bare websockets.trio client",
    "asyncio": "websockets asyncio client on uvloop",
    "chrono": "chrono open_feed read-at-a-time loop",
}


class _Frame(msgspec.Struct):
    """What the floor client decodes of each frame (strings as sent, no Decimal/datetime)."""

    type: str
    product_id: str = ""
    price: str = ""
    time: str = ""
    trade_id: int = 0


@dataclass(frozen=True)
class Tls:
    """``wss://``: the simulator's server context, and the CA file every client trusts."""

    server: ssl.SSLContext
    cafile: Path


def phase_timeout_s(feeds: int) -> float:
    return max(MIN_PHASE_TIMEOUT_S, feeds / SLOWEST_FEEDS_PER_S)


class _Count:
    """Tickers seen, and the time of the first: rate = (seen - 1) / (last - first)."""

    def __init__(self) -> None:
        self.decode = msgspec.json.Decoder(_Frame).decode
        self.seen, self.first = 0, 0.0

    def frame(self, payload: bytes | str) -> None:
        if self.decode(payload).type == "ticker":
            self.seen += 1
            self.first = self.first or time.perf_counter()

    def result(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.first
        return {
            "frames": self.seen,
            "elapsed_s": elapsed,
            "frames_per_s": (self.seen - 1) / elapsed,
        }


def _client_tls(url: str, cafile: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=cafile) if url.startswith("wss:") else None


async def _trio_client(url: str, feeds: int, cafile: str | None) -> dict[str, float]:
    count = _Count()
    with trio.fail_after(phase_timeout_s(feeds)):
        async with trio_connect(url, compression=None, ssl=_client_tls(url, cafile)) as ws:
            await ws.send(SUBSCRIBE)
            while count.seen < feeds:
                count.frame(await ws.recv())
            return count.result()


async def _asyncio_client(url: str, feeds: int, cafile: str | None) -> dict[str, float]:
    count = _Count()
    async with asyncio.timeout(phase_timeout_s(feeds)):
        async with asyncio_connect(url, compression=None, ssl=_client_tls(url, cafile)) as ws:
            await ws.send(SUBSCRIBE)
            while count.seen < feeds:
                count.frame(await ws.recv())
            return count.result()


async def _chrono_client(url: str, feeds: int, cafile: str | None) -> dict[str, float]:
    if cafile:  # open_feed trusts the system store or SSL_CERT_FILE, as chrono run does
        os.environ["SSL_CERT_FILE"] = cafile
    count = _Count()
    with trio.fail_after(phase_timeout_s(feeds)):
        async with open_feed(url, open_timeout_s=SUBSCRIBE_TIMEOUT_S) as conn:
            await conn.send(SUBSCRIBE)
            while count.seen < feeds:
                for payload in await conn.receive():
                    count.frame(payload)
            return count.result()


def floor_client(kind: str, url: str, feeds: int, cafile: str | None) -> dict[str, float]:
    """Run one floor client (in this process): subscribe, receive ``feeds`` tickers as fast as
    they come, time the first to the last."""
    if kind == "asyncio":
        return uvloop.run(_asyncio_client(url, feeds, cafile))
    client = _trio_client if kind == "trio" else _chrono_client
    return trio.run(client, url, feeds, cafile)


async def measure_floor(
    feeds: int, client_command: list[str], tls: Tls | None = None
) -> dict[str, float]:
    """The simulator here; the client a subprocess, ``client_command + [URL, N, CAFILE]``
    running ``floor_client`` and printing its result as JSON (CAFILE ``-`` for none)."""
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)
    out: list[bytes] = []

    async def client() -> None:
        command = [*client_command, sim.url, str(feeds), str(tls.cafile) if tls else "-"]
        out.append((await trio.run_process(command, capture_stdout=True, check=True)).stdout)

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(sim.serve, tls=tls.server if tls else None))
        with trio.fail_after(SUBSCRIBE_TIMEOUT_S + phase_timeout_s(feeds)):
            async with trio.open_nursery() as inner:
                inner.start_soon(client)
                await sim.wait_subscribed(1)
                await sim.send_burst(feeds)
        nursery.cancel_scope.cancel()
    result: dict[str, float] = json.loads(out[0])
    return result
