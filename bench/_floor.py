"""The floor: a bare ``websockets.trio`` client receiving a burst from the simulator.

The client runs in its own process, as Chrono does, so that it has a core to itself; it
decodes each frame with msgspec into a small Struct of strings (no Decimal, no datetime).
"""

from __future__ import annotations

import json
import time
from typing import Final

import msgspec
import trio
from websockets.trio.client import connect

from chrono.testing.simulators.coinbase import CoinbaseSimulator

PRODUCTS: Final = ("BTC-USD", "ETH-USD")
SUBSCRIBE_TIMEOUT_S: Final = 20.0
MIN_PHASE_TIMEOUT_S: Final = 60.0
SLOWEST_FEEDS_PER_S: Final = 2_000  # below this a phase counts as hung and fails


class _Frame(msgspec.Struct):
    """What the floor client decodes of each frame (strings as sent, no Decimal/datetime)."""

    type: str
    product_id: str = ""
    price: str = ""
    time: str = ""
    trade_id: int = 0


def phase_timeout_s(feeds: int) -> float:
    return max(MIN_PHASE_TIMEOUT_S, feeds / SLOWEST_FEEDS_PER_S)


async def floor_client(url: str, feeds: int) -> dict[str, float]:
    """Subscribe, receive ``feeds`` tickers as fast as they come; time first to last frame."""
    decoder = msgspec.json.Decoder(_Frame)
    subscribe = {"type": "subscribe", "channels": [{"name": "ticker", "product_ids": PRODUCTS}]}
    with trio.fail_after(phase_timeout_s(feeds)):
        async with connect(url, compression=None) as ws:
            await ws.send(json.dumps(subscribe))
            seen, first = 0, 0.0
            while seen < feeds:
                if decoder.decode(await ws.recv()).type == "ticker":
                    seen += 1
                    first = first or time.perf_counter()
            elapsed = time.perf_counter() - first
    return {"frames": seen, "elapsed_s": elapsed, "frames_per_s": (seen - 1) / elapsed}


async def measure_floor(feeds: int, client_command: list[str]) -> dict[str, float]:
    """The simulator here; the client a subprocess, ``client_command + [URL, N]`` running
    ``floor_client`` and printing its result as JSON."""
    sim = CoinbaseSimulator(symbols=PRODUCTS)
    sim.set_silent(True)
    out: list[bytes] = []

    async def client() -> None:
        command = [*client_command, sim.url, str(feeds)]
        out.append((await trio.run_process(command, capture_stdout=True, check=True)).stdout)

    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        with trio.fail_after(SUBSCRIBE_TIMEOUT_S + phase_timeout_s(feeds)):
            async with trio.open_nursery() as inner:
                inner.start_soon(client)
                await sim.wait_subscribed(1)
                await sim.send_burst(feeds)
        nursery.cancel_scope.cancel()
    result: dict[str, float] = json.loads(out[0])
    return result
