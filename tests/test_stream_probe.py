"""What a hostile or unlucky client tries on /stream (the probe behind these rules).

A message over ``[server] stream_max_message_bytes`` is refused with 1009 while it is still
arriving, and costs no memory, compressed or not; every server message is a text frame, and a
binary one from a client is read as UTF-8 JSON; the hub counts exactly the connections open,
however each one ends (refused at auth, closed, dropped, reset, too big, flooding, cut off, shut
down), and a stop afterwards takes none of the grace period. Real peers on loopback: the
``websockets`` client, and raw sockets where a client must misbehave below it (frames by hand, an
abrupt close, not reading). The service runs in this process, so its memory is this process's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import connect

import chrono.api.stream
from chrono.config import StreamConfig
from chrono.feeds import Feeds
from chrono.service import Service
from chrono.stream import StreamHub
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY, service_config
from tests.feeds import make_feed
from tests.waiting import wait_until

MIB = 1024 * 1024
LIMIT = 65_536  # [server] stream_max_message_bytes by default
# The probe service's graceful_timeout_s: long, so that a stop that waits for a leftover client
# (the leak this module guards against) stands out from a prompt one on any machine.
GRACE_S = 20.0
CONTINUATION, TEXT, BINARY, CLOSE = 0x0, 0x1, 0x2, 0x8
SUBSCRIBE = json.dumps({"action": "subscribe", "symbols": ["BTC/USD"]})


@dataclass
class Probe:
    """A whole service on a free loopback port, whose stop the test can time."""

    service: Service
    port: int
    stopped: trio.Event
    raw: list[RawWebSocket]  # closed after the test, whatever it did with them

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def hub(self) -> StreamHub:
        return self.service.hub

    async def open_raw(
        self, query: str = f"?key={PUBLIC_KEY}", *, extensions: str = "", rcvbuf: int = 0
    ) -> RawWebSocket:
        ws = await RawWebSocket.open(self.port, query, extensions=extensions, rcvbuf=rcvbuf)
        self.raw.append(ws)
        return ws

    def clients(self) -> int:
        count: int = self.hub.statistics().clients
        return count

    def stop(self) -> float:
        """Start the stop; ``drained()`` then says how long it took."""
        self._stop_at = time.monotonic()
        self.service.stop()
        return self._stop_at

    async def drained(self) -> float:
        await self.stopped.wait()
        return time.monotonic() - self._stop_at


@pytest.fixture
async def probe(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Probe]:
    service = Service(service_config(tmp_path, server={"port": 0, "graceful_timeout_s": GRACE_S}))
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await service.run(task_status=task_status)
        finally:
            stopped.set()

    port = await nursery.start(run)
    probe = Probe(service, port, stopped, [])
    yield probe
    for ws in probe.raw:
        await ws.stream.aclose()
    service.stop()


async def stops_quickly(probe: Probe) -> None:
    """No handler, and no connection of hypercorn's, is left to wait for: well within the grace."""
    assert probe.clients() == 0
    probe.stop()
    assert await probe.drained() < GRACE_S / 2


class RawWebSocket:
    """A client below the ``websockets`` package: frames by hand, closing however the test likes.

    Frames are masked with the all-zero key, which leaves the payload as it is.
    """

    def __init__(self, stream: trio.SocketStream, headers: dict[str, str]) -> None:
        self.stream = stream
        self.headers = headers
        self._buffer = bytearray()

    @classmethod
    async def open(
        cls, port: int, query: str = f"?key={PUBLIC_KEY}", *, extensions: str = "", rcvbuf: int = 0
    ) -> RawWebSocket:
        sock = trio.socket.socket()
        if rcvbuf:  # before connecting, so that the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        await stream.send_all(
            f"GET /stream{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{offer}\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(1)  # byte by byte: stop at the headers' end
        status, *lines = answer.decode().split("\r\n")
        assert status.startswith("HTTP/1.1 101"), answer
        headers = dict(line.lower().split(": ", 1) for line in lines if line)
        return cls(stream, headers)

    async def send_header(self, opcode: int, length: int, *, fin: bool = True) -> None:
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = bytes([first, 0x80 | length])
        elif length < 65_536:
            header = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
        else:
            header = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
        await self.stream.send_all(header + b"\0\0\0\0")

    async def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        await self.send_header(opcode, len(payload), fin=fin)
        await self.stream.send_all(payload)

    async def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            data = await self.stream.receive_some(65_536)
            if not data:
                raise EOFError
            self._buffer += data
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    async def receive_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): its opcode and payload."""
        first, second = await self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read(8))
        return first & 0x0F, await self._read(length)

    async def receive_json(self) -> Any:
        opcode, payload = await self.receive_frame()
        assert opcode == TEXT
        return json.loads(payload)

    async def close_code(self) -> int | None:
        """Read up to the server's close frame: its code, or None if the connection just ended."""
        try:
            while True:
                opcode, payload = await self.receive_frame()
                if opcode == CLOSE:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code
        except (EOFError, trio.BrokenResourceError):
            return None

    async def ends(self) -> bool:
        """True once the server has closed the TCP connection (EOF or reset)."""
        try:
            while await self.stream.receive_some(65_536):
                pass
        except trio.BrokenResourceError:
            pass
        return True

    async def reset(self) -> None:
        """Vanish: a TCP reset, no close frame, no FIN."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
async def test_a_16_mib_message_is_refused_with_1009_as_it_arrives_and_costs_no_memory(
    probe: Probe, fragmented: bool
) -> None:
    total, chunk = 16 * MIB, b"a" * 65_536  # the client only ever holds this one chunk
    with trio.fail_after(30):
        ws = await probe.open_raw()
        await wait_until(lambda: probe.clients() == 1)
        before = peak = rss_bytes()
        sent = 0
        refused_after: int | None = None
        code: int | None = None

        async def watch() -> None:
            nonlocal code, refused_after
            code = await ws.close_code()
            refused_after = sent

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            # A client deaf to the close goes on sending, until the server cuts the connection.
            with contextlib.suppress(trio.BrokenResourceError):
                if not fragmented:
                    await ws.send_header(TEXT, total)
                while sent < total:
                    if fragmented:  # 256 frames of 64 KiB: each is under the limit, not the sum
                        last = sent + len(chunk) == total
                        await ws.send_header(
                            TEXT if sent == 0 else CONTINUATION, len(chunk), fin=last
                        )
                    await ws.stream.send_all(chunk)
                    sent += len(chunk)
                    peak = max(peak, rss_bytes())
        await wait_until(lambda: probe.clients() == 0)
    assert code == 1009
    assert refused_after is not None
    assert refused_after < 1 * MIB  # refused while the other 15 MiB were still to come
    assert sent < total  # the server closed the connection instead of reading the rest
    assert peak - before < 4 * MIB  # buffered, it was 16-32 MiB
    await stops_quickly(probe)


async def test_a_compressed_message_cannot_inflate_past_the_limit(probe: Probe) -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflate.compress(b"a" * 16 * MIB) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 20_000  # 16 MiB inflated, which hypercorn did in one piece (48 MB peak)
    with trio.fail_after(10):
        ws = await probe.open_raw(extensions="permessage-deflate")
        assert "sec-websocket-extensions" not in ws.headers  # compression is declined
        await ws.send_header(0x40 | TEXT, len(bomb) - 4)  # RSV1: compressed, as if agreed
        with contextlib.suppress(trio.BrokenResourceError):
            await ws.stream.send_all(bomb[:-4])
        assert await ws.close_code() in (None, 1002)  # a protocol error: the connection ends
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


async def test_a_message_at_the_limit_is_read_and_one_byte_more_is_not(probe: Probe) -> None:
    command = SUBSCRIBE.encode()
    at_limit = command + b" " * (LIMIT - len(command))  # JSON allows the trailing spaces
    with trio.fail_after(10):
        ws = await probe.open_raw()
        await ws.send_frame(TEXT, at_limit)
        assert (await ws.receive_json())["symbols"] == ["BTC/USD"]
        await ws.send_frame(TEXT, at_limit + b" ")
        assert await ws.close_code() == 1009
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


async def test_the_handler_enforces_the_limit_in_utf8_bytes_too(probe: Probe) -> None:
    # hypercorn's own limit is the server's (64 KiB); the handler's is lower here, so that the
    # handler's check is the one met, as it is if the two were ever set apart.
    probe.service.api.stream_max_message_bytes = 1000
    with trio.fail_after(10):
        async with connect(f"{probe.ws_url}?key={PUBLIC_KEY}") as ws:
            await ws.send(SUBSCRIBE)
            await ws.recv()
            await ws.send(
                json.dumps({"action": "subscribe", "symbols": ["é" * 600]}, ensure_ascii=False)
            )  # 600 characters, 1200 bytes
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1009, "message over 1000 bytes")
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


# -- text frames, both ways ----------------------------------------------------------------------


async def test_every_message_from_the_server_is_a_text_frame(probe: Probe) -> None:
    with trio.fail_after(10):
        async with connect(f"{probe.ws_url}?key={PUBLIC_KEY}") as ws:
            await ws.send(SUBSCRIBE)
            subscribed = await ws.recv()
            probe.hub.publish(Feeds.of([make_feed(1)]))
            update = await ws.recv()
            await ws.send('{"action": "dance"}')
            error = await ws.recv()
        for message in (subscribed, update, error):
            assert isinstance(message, str)  # a text frame (a binary one comes as bytes)
        assert json.loads(update)["type"] == "price_update"
        assert json.loads(error)["error"]["code"] == "VALIDATION_ERROR"
        refused = await probe.open_raw("?key=nope")
        assert (await refused.receive_json())["error"]["code"] == "UNAUTHORIZED"  # text too
        assert await refused.close_code() == 1008
    await stops_quickly(probe)


async def test_stream_is_served_beside_quart_and_a_plain_get_is_refused_in_the_envelope(
    probe: Probe,
) -> None:
    # /stream is answered in ASGI directly (chrono.api.stream._Socket), every other WebSocket
    # path and every HTTP request by Quart: a plain GET is a 400 in the one error envelope.
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{probe.port}") as http:
            plain = await http.get("/stream", params={"key": PUBLIC_KEY})
        assert plain.status_code == 400
        assert plain.json()["error"]["code"] == "VALIDATION_ERROR"
        assert "WebSocket" in plain.json()["error"]["message"]
        with pytest.raises(InvalidStatus, match="404"):
            async with connect(f"ws://127.0.0.1:{probe.port}/streams?key={PUBLIC_KEY}"):
                pass
        async with connect(f"{probe.ws_url}?other=1&key={PUBLIC_KEY}") as ws:  # parsed query
            await ws.send(SUBSCRIBE)
            assert json.loads(await ws.recv())["type"] == "subscribed"
    await stops_quickly(probe)


async def test_heartbeats_are_text_too() -> None:
    hub = StreamHub(StreamConfig(heartbeat_s=0.01))
    with trio.fail_after(5), hub.connected() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.run)
            batch = await client.next_batch()
            nursery.cancel_scope.cancel()
    assert batch is not None
    assert isinstance(batch[0], str)
    assert json.loads(batch[0])["type"] == "heartbeat"


async def test_a_binary_frame_is_read_as_utf8_json_and_anything_else_is_a_bad_command(
    probe: Probe,
) -> None:
    with trio.fail_after(10):
        async with connect(f"{probe.ws_url}?key={PUBLIC_KEY}") as ws:
            await ws.send(SUBSCRIBE.encode())  # bytes: a binary frame
            assert json.loads(await ws.recv())["symbols"] == ["BTC/USD"]
            not_utf8 = b'{"action": "subscribe", "symbols": ["\xff"]}'
            for bad in (b"\xff\xfe", not_utf8, b"", b"[1, 2]"):
                await ws.send(bad)
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error"
                assert reply["error"]["code"] == "VALIDATION_ERROR"
            assert probe.clients() == 1  # answered, and the stream stays open
            unsubscribe = {"action": "unsubscribe", "symbols": ["BTC/USD"]}
            await ws.send(json.dumps(unsubscribe).encode())
            assert json.loads(await ws.recv())["symbols"] == []
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


# -- the count: exactly the connections open -----------------------------------------------------

REFUSALS: dict[str, tuple[str, str | bytes | None]] = {
    "an unknown key": ("?key=nope", None),
    "a key of the wrong kind": (f"?key={INTERNAL_KEY}", None),
    "a first message that is not JSON": ("", "hello"),
    "a first message that is not UTF-8": ("", b"\xff\xfe"),
    "a first message with an unknown key": ("", json.dumps({"action": "auth", "key": "nope"})),
    "a first message that is not auth": ("", SUBSCRIBE),
    "no first message in time": ("", None),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_client_refused_at_auth_is_never_counted(
    probe: Probe, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(chrono.api.stream, "AUTH_TIMEOUT_S", 0.2)
    query, first = REFUSALS[case]
    with trio.fail_after(10):
        async with connect(f"{probe.ws_url}?key={PUBLIC_KEY}"):  # stays: counted throughout
            await wait_until(lambda: probe.clients() == 1)
            async with connect(probe.ws_url + query) as ws:
                if first is not None:
                    await ws.send(first)
                error = json.loads(await ws.recv())
                assert probe.clients() == 1  # refused: it was never counted
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
            assert error["error"]["code"] in ("UNAUTHORIZED", "FORBIDDEN")
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1008
            assert probe.clients() == 1
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


async def close_frame(ws: RawWebSocket) -> None:
    await ws.send_frame(CLOSE, struct.pack("!H", 1000))
    assert await ws.close_code() == 1000  # hypercorn answers, then closes the connection


async def abrupt_close(ws: RawWebSocket) -> None:
    await ws.stream.aclose()  # a FIN, no close frame


async def too_big(ws: RawWebSocket) -> None:
    await ws.send_frame(TEXT, b" " * (LIMIT + 1))
    assert await ws.close_code() == 1009


ENDINGS: dict[str, Callable[[RawWebSocket], Awaitable[None]]] = {
    "a close frame": close_frame,
    "an abrupt close": abrupt_close,
    "a reset": RawWebSocket.reset,
    "a message over the limit": too_big,
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_client_is_counted_until_its_connection_ends_however_it_ends(
    probe: Probe, ending: str
) -> None:
    with trio.fail_after(10):
        staying = await probe.open_raw()
        leaving = await probe.open_raw("")  # auth by first message
        await leaving.send_frame(TEXT, json.dumps({"action": "auth", "key": PUBLIC_KEY}).encode())
        # Bad input is answered, and leaves the client connected and counted.
        for bad in (b'{"action": "subscribe", "symbols": "BTC/USD"}', b"not json", b"{"):
            await leaving.send_frame(TEXT, bad)
            assert (await leaving.receive_json())["error"]["code"] == "VALIDATION_ERROR"
        await leaving.send_frame(BINARY, SUBSCRIBE.encode())
        assert (await leaving.receive_json())["symbols"] == ["BTC/USD"]
        assert probe.clients() == 2
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{probe.port}") as http:
            status = await http.get("/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert status.json()["pipeline"]["stream"]["clients"] == 2
        await ENDINGS[ending](leaving)
        await wait_until(lambda: probe.clients() == 1)
        await close_frame(staying)
        await wait_until(lambda: probe.clients() == 0)
    await stops_quickly(probe)


async def receive_all(ws: Any, into: list[Any]) -> None:
    while True:
        into.append(json.loads(await ws.recv()))


async def flood(ws: RawWebSocket, batch: bytes) -> str:
    """Send until the server stops reading ("blocked") or closes the connection ("closed")."""
    try:
        while True:
            with trio.move_on_after(0.5) as waiting:
                await ws.stream.send_all(batch)
            if waiting.cancelled_caught:
                return "blocked"
    except trio.BrokenResourceError:
        return "closed"


@pytest.mark.parametrize("query", [f"?key={PUBLIC_KEY}", ""], ids=["counted", "refused"])
async def test_a_client_that_floods_without_reading_then_vanishes_leaves_nothing_behind(
    probe: Probe, query: str
) -> None:
    # Bad commands, each answered with an error ten times its size, on a small window and never
    # read: the answers fill it, the handler waits on its send, its outbox reaches
    # queue_messages so it reads no more commands (StreamClient.room), and hypercorn's queue to
    # the handler fills behind it: the server stops reading, so the flood fills the client's
    # own TCP window, not the server's memory. Then the client resets. The disconnect used to
    # wait for room in that full queue, forever; refused (its first message is no auth), the
    # handler returned and hypercorn's reader waited there, holding the connection open.
    frame = bytes([0x80 | TEXT, 0x80 | 10]) + b"\0\0\0\0" + b"x" * 10
    with trio.fail_after(20):
        ws = await probe.open_raw(query, rcvbuf=4096)
        outcome = await flood(ws, frame * 100)
        if query:
            assert outcome == "blocked"  # the server stopped reading: the pipe is full
            assert probe.clients() == 1
        else:
            assert outcome == "closed"  # refused, and the connection closed under it
        await ws.reset()
        await wait_until(lambda: probe.clients() == 0, timeout_s=5)
    await stops_quickly(probe)


async def test_a_slow_client_cut_off_by_the_hub_is_no_longer_counted(probe: Probe) -> None:
    # Subscribed, then never reads, on a small window: the hub fills it, the handler's write
    # blocks, and after send_timeout_s the hub cuts it off (the write is given up at once).
    probe.hub.config = StreamConfig(send_timeout_s=0.5, queue_messages=10)
    with trio.fail_after(20):
        ws = await probe.open_raw(rcvbuf=4096)
        await ws.send_frame(TEXT, SUBSCRIBE.encode())
        await wait_until(lambda: bool(probe.hub.watched("prices")))
        for i in range(0, 20_000, 100):
            probe.hub.publish(Feeds.of([make_feed(j) for j in range(i, i + 100)]))
            await trio.lowlevel.checkpoint()
        await wait_until(lambda: probe.clients() == 0, timeout_s=10)
        stats = probe.hub.statistics()
        assert stats.cut_off == 1
        assert stats.dropped >= 10  # its queue, when cut
        assert stats.published < 1000  # once behind, it was parked: nothing encoded for it
    await stops_quickly(probe)


async def test_a_stop_closes_every_client_with_1001_at_once_even_mid_auth(probe: Probe) -> None:
    with trio.fail_after(10):
        async with connect(f"{probe.ws_url}?key={PUBLIC_KEY}") as subscribed:
            await subscribed.send(SUBSCRIBE)
            await subscribed.recv()
            silent = await probe.open_raw()  # connected, never says a word
            mid_auth = await probe.open_raw("")  # still to send its key
            await wait_until(lambda: probe.clients() == 2)
            probe.stop()
            with pytest.raises(ConnectionClosed) as info:
                await subscribed.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001
            assert await silent.close_code() == 1001
            assert await mid_auth.close_code() == 1001
            assert probe.clients() == 0
            assert await probe.drained() < GRACE_S / 2


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_a_plain_text_frame_is_the_one_wsproto_writes(size: int) -> None:
    # A client that negotiated no compression gets Chrono's own frames (chrono.send_texts).
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    from chrono.api.protocol import text_frame

    text = ("é" * size)[: max(0, size - size // 3)] + "x" * (size // 3)  # multi-byte UTF-8 too
    assert text_frame(text) == Connection(ConnectionType.SERVER).send(TextMessage(data=text))
