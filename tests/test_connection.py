"""The collector's WebSocket, a read at a time, against real servers on loopback.

Two kinds of peer: websockets' own Trio server (a correct peer: fragments, pings, closes, TLS),
and a hand-made server that does the handshake and then writes raw bytes, for what a correct
server never sends (masked or oversized frames, reserved bits) and for a peer that goes dead.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trustme
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.trio.server import ServerConnection, serve
from websockets.utils import accept_key

from chrono.collect.connection import CLOSE_TIMEOUT_S, FeedConnection, open_feed
from chrono.errors import FeedConnectionError

Handler = Callable[[ServerConnection], Awaitable[None]]


async def websockets_server(
    nursery: trio.Nursery, handler: Handler, tls: ssl.SSLContext | None = None
) -> str:
    server = await nursery.start(
        partial(serve, handler, 0, host="127.0.0.1", compression=None, ssl=tls)
    )
    port = server.listeners[0].socket.getsockname()[1]
    return f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/feed"


RawHandler = Callable[[trio.SocketStream], Awaitable[None]]


async def raw_server(nursery: trio.Nursery, after_handshake: RawHandler, *, extra: bytes = b""
                     ) -> str:  # fmt: skip
    """A server that answers the handshake by hand (``extra`` in the same write), then runs
    ``after_handshake`` on the bare socket."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
            + extra
        )
        await after_handshake(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/feed"


async def idle(stream: trio.SocketStream) -> None:
    """A peer that reads nothing and answers nothing."""
    await trio.sleep_forever()


def frame(payload: bytes, first: int = 0x81, *, mask: bool = False, length: int | None = None
          ) -> bytes:  # fmt: skip
    """A frame as a server would write it (RFC 6455 §5.2); ``length`` may lie."""
    n = len(payload) if length is None else length
    if n < 126:
        head = struct.pack("!BB", first, n | (0x80 if mask else 0))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 126 | (0x80 if mask else 0), n)
    else:
        head = struct.pack("!BBQ", first, 127 | (0x80 if mask else 0), n)
    return head + (b"\0\0\0\0" if mask else b"") + payload


async def receive_all(conn: FeedConnection, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        got.extend(await conn.receive())
    return got


async def test_frames_of_every_size_arrive_whole_and_in_order(nursery: trio.Nursery) -> None:
    messages = [f'{{"n":{i}}}'.encode() * (1 + i % 7) for i in range(3000)]
    messages += [b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536, b"v" * 1_000_000]

    sent = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        for i, message in enumerate(messages):
            if i == 3000:
                sent.set()  # the small ones fit in the socket's buffers; the big ones may not
            await ws.send(message.decode() if i % 2 else message)  # text and binary
        await ws.wait_closed()

    url = await websockets_server(nursery, handler)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(10):
            await sent.wait()  # the socket's buffers hold a backlog, as under load
        reads = 0
        got: list[bytes] = []
        with trio.fail_after(10):
            while len(got) < len(messages):
                got.extend(await conn.receive())
                reads += 1
        assert got == messages
        assert reads < len(messages) / 10  # many frames per read: the point of it
        await conn.aclose()


async def test_fragments_are_joined_and_pings_in_between_answered(nursery: trio.Nursery) -> None:
    pinged = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("before")
        await ws.send(["frag", "ment", "ed"])  # one message in three frames
        waiter = await ws.ping(b"are you there")
        with trio.fail_after(5):
            await waiter.wait()  # our pong came back
        pinged.set()
        await ws.send("after")
        await ws.wait_closed()

    url = await websockets_server(nursery, handler)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(5):
            assert await receive_all(conn, 3) == [b"before", b"fragmented", b"after"]
        assert pinged.is_set()
        await conn.aclose()


async def test_a_frame_right_behind_the_handshake_response_is_kept(nursery: trio.Nursery) -> None:
    url = await raw_server(nursery, idle, extra=frame(b"first"))
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(5):
            assert await conn.receive() == [b"first"]


async def test_a_peer_close_ends_it_after_the_frames_before_it(nursery: trio.Nursery) -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(3):
            await ws.send(f"tick {i}")
        await ws.aclose(CloseCode.GOING_AWAY, "maintenance")

    url = await websockets_server(nursery, handler)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(5):
            assert await receive_all(conn, 3) == [b"tick 0", b"tick 1", b"tick 2"]
            with pytest.raises(FeedConnectionError, match=r"closed by peer \(1001 maintenance\)"):
                await conn.receive()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(b"hello", mask=True), 1002),  # a server must not mask
        (frame(b"hello", first=0xC1), 1002),  # RSV1 without an extension
        (frame(b"", length=5 * 2**20), 1009),  # over MAX_FRAME_BYTES: refused from the header
        (frame(b"x", first=0x01) + frame(b"y", first=0x81), 1002),  # a new message mid-fragment
    ],
)
async def test_a_broken_frame_fails_with_the_right_close_code(
    nursery: trio.Nursery, bad: bytes, code: int
) -> None:
    close_frames: list[bytes] = []

    async def after(stream: trio.SocketStream) -> None:
        await stream.send_all(frame(b"good") + bad)
        close_frames.append(await stream.receive_some(4096))

    url = await raw_server(nursery, after)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(5):
            assert await conn.receive() == [b"good"]
            with pytest.raises(FeedConnectionError, match=rf"protocol error \({code}"):
                await conn.receive()
            while not close_frames:
                await trio.sleep(0.01)
    sent = close_frames[0]
    assert sent[0] == 0x88  # a close frame, masked (client to server): its code is unmasked
    mask, body = sent[2:6], sent[6:8]
    assert int.from_bytes(bytes(b ^ mask[i] for i, b in enumerate(body))) == code


async def test_a_dead_peer_fails_the_keepalive_only_while_we_read(nursery: trio.Nursery) -> None:
    url = await raw_server(nursery, idle)  # never answers a ping
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(10):
            failed = pytest.RaisesGroup(pytest.RaisesExc(FeedConnectionError, match="no pong"))
            with failed:
                async with trio.open_nursery() as inner:
                    inner.start_soon(partial(conn.keepalive, interval_s=0.05, timeout_s=0.2))
                    await trio.sleep(0.8)  # nobody reads: a held-back reader is no dead peer
                    await conn.receive()  # now we read, and no pong comes: the keepalive fails


async def test_keepalive_pongs_keep_a_live_peer(nursery: trio.Nursery) -> None:
    async def handler(ws: ServerConnection) -> None:
        await trio.sleep(1.0)
        await ws.send("still here")
        await ws.wait_closed()

    url = await websockets_server(nursery, handler)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(10):
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(conn.keepalive, interval_s=0.05, timeout_s=0.2))
                assert await conn.receive() == [b"still here"]  # 20 pings answered meanwhile
                inner.cancel_scope.cancel()
            await conn.aclose()


async def test_a_polite_close_is_answered_or_bounded(nursery: trio.Nursery) -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            codes.append(exc.rcvd.code if exc.rcvd else None)

    url = await websockets_server(nursery, handler)
    async with open_feed(url, open_timeout_s=5) as conn:
        with trio.fail_after(5):
            await conn.aclose()
    with trio.fail_after(5):
        while not codes:
            await trio.sleep(0.01)
    assert codes == [1000]

    silent = await raw_server(nursery, idle)  # no close echo
    async with open_feed(silent, open_timeout_s=5) as conn:
        started = trio.current_time()
        await conn.aclose()
        assert CLOSE_TIMEOUT_S <= trio.current_time() - started < CLOSE_TIMEOUT_S + 1


async def test_a_handshake_that_never_answers_times_out(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, idle, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    with trio.fail_after(5), pytest.raises(FeedConnectionError, match="timed out"):
        async with open_feed(url, open_timeout_s=0.3):
            pass


async def test_wss_with_a_trusted_certificate(
    nursery: trio.Nursery, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)

    async def handler(ws: ServerConnection) -> None:
        for i in range(500):
            await ws.send(f"secure {i}")
        await ws.wait_closed()

    url = await websockets_server(nursery, handler, tls=server_tls)
    with trio.fail_after(5), pytest.raises(FeedConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        async with open_feed(url, open_timeout_s=5):
            pass  # the system's trust store does not know this CA
    with ca.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        async with open_feed(url, open_timeout_s=5) as conn:
            with trio.fail_after(5):
                got = await receive_all(conn, 500)
            assert got == [f"secure {i}".encode() for i in range(500)]
            await conn.aclose()
