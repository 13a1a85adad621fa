"""A /stream client that stops reading neither slows the pipeline nor hangs the shutdown.

hypercorn sends in a shielded scope, so a peer that stops reading could pin a handler forever
(docs/stack.md, trap 1); TCP_USER_TIMEOUT on the listening socket ends that send. The stuck
client here is a raw socket that does the WebSocket handshake, subscribes, and never reads again.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import trio

from chrono.testing.process import open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.conftest import PUBLIC_KEY
from tests.daemon import get_json, write_config
from tests.test_end_to_end import assert_stored_once, stored_rows
from tests.waiting import wait_until


async def open_websocket(port: int, *, wait_for_101: bool = True) -> trio.SocketStream:
    """A hand-made WebSocket handshake, so that the test decides when the client reads."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        f"GET /stream?key={PUBLIC_KEY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    if wait_for_101:
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(1)  # byte by byte: stop at the headers' end
        assert answer.startswith(b"HTTP/1.1 101")
    return stream


async def send_subscribe(stream: trio.SocketStream) -> None:
    payload = json.dumps({"action": "subscribe", "symbols": ["BTC/USD", "ETH/USD"]}).encode()
    assert len(payload) < 126
    # A masked text frame (clients must mask); the all-zero mask leaves the payload as it is.
    await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)


async def stream_stats(port: int) -> dict[str, Any]:
    stats: dict[str, Any] = (await get_json(port, "/status"))["pipeline"]["stream"]
    return stats


async def test_a_client_that_stops_reading_is_dropped_not_waited_for(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator()
    await nursery.start(sim.serve)
    sim.set_silent(True)
    db = tmp_path / "data" / "chrono.db"
    config = await write_config(tmp_path, sim.url, tcp_user_timeout_ms=1000)
    with trio.fail_after(60):
        async with open_chrono(config) as daemon:
            stuck = await open_websocket(daemon.port)
            await send_subscribe(stuck)
            while (await stream_stats(daemon.port))["clients"] != 1:
                await trio.sleep(0.05)
            await sim.wait_subscribed()
            await sim.send_burst(60_000)  # ~20 MB of updates: far more than the socket holds
            await wait_until(lambda: db.exists() and len(stored_rows(db)) == 60_000)
            stats = await stream_stats(daemon.port)
            assert stats["parked"] >= 1  # it fell behind and was parked, not the feeds ...
            # ... and it is gone: its blocked write ended by TCP_USER_TIMEOUT (1 s here), or
            # cut off by the hub once behind for [stream] send_timeout_s (10 s), which may come
            # after the last feed is stored
            while (await stream_stats(daemon.port))["clients"]:
                await trio.sleep(0.05)
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
            await stuck.aclose()
    assert_stored_once(sim, db)


async def test_a_client_breaking_the_handshake_loses_only_its_own_connection(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator()
    await nursery.start(sim.serve)
    with trio.fail_after(30):
        async with open_chrono(await write_config(tmp_path, sim.url)) as daemon:
            rude = await open_websocket(daemon.port, wait_for_101=False)
            await send_subscribe(rude)  # frames before the 101: h11 refuses them
            assert await rude.receive_some(65536) is not None
            await rude.aclose()
            assert (await stream_stats(daemon.port))["clients"] == 0
            supervisor = (await get_json(daemon.port, "/status"))["supervisor"]
            [http_child] = [c for c in supervisor if c["name"] == "http"]
            assert http_child["restarts"] == 0
            assert "dropped a connection on a protocol error" in " ".join(daemon.messages())
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
