"""The one place Chrono touches the exchange-facing WebSocket: a socket read at a time.

``receive`` returns the data frames of one socket read as one list, so a busy feed costs the
event loop one wake-up per read (hundreds of frames), not one per frame. websockets' sans-I/O
``ClientProtocol`` keeps everything that needs the protocol: the opening handshake, control
frames (a ping gets its pong, a close its echo), fragmented messages, and every frame that is
wrong (masked, reserved bits, too big: it fails the connection with the right close code). Only
the common frame, whole, unmasked, final, text or binary, is sliced out of the read here; the
protocol is always handed whole frames, so it is always at a frame boundary when we slice.

Keepalive is ours (``keepalive``): a ping every ``PING_INTERVAL_S``, and the connection fails if
no pong comes within ``PING_TIMEOUT_S`` while Chrono is reading (a pipeline that holds the reader
back is not a dead peer). ``aclose`` is a polite close bounded by ``CLOSE_TIMEOUT_S``. TLS
(``wss://``) is ``trio.SSLStream`` over TCP with the system's trust store, or the file named by
``SSL_CERT_FILE``. Every failure becomes ``FeedConnectionError``, so the collector handles one
kind of failure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, State
from websockets.uri import WebSocketURI, parse_uri

from chrono.errors import FeedConnectionError

CLOSE_TIMEOUT_S = 2.0  # a polite close that the peer doesn't answer must not delay a reconnect
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
MAX_FRAME_BYTES = 4 * 2**20
READ_BYTES = 256 * 2**10  # one receive_some: a busy feed's hundreds of frames per wake-up
MAX_HEADER_BYTES = 64 * 2**10  # the handshake response's head

_PLAIN_FIRST_BYTES = frozenset({0x81, 0x82})  # FIN, no reserved bits, text or binary
_DATA_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class FeedConnection:
    """An open exchange connection: ``send`` text, ``receive`` the frames of a read."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol, buffered: bytes) -> None:
        self._stream = stream
        self._protocol = protocol
        self._buffer = buffered  # received, not yet a whole frame
        self._fragments: list[bytes] = []  # a fragmented message being assembled
        self._send_lock = trio.Lock()
        self._pongs: dict[bytes, trio.Event] = {}
        self._ended: FeedConnectionError | None = None  # the protocol closed or failed
        self._reading = False  # inside a socket read: everything received so far is handled

    async def send(self, text: str) -> None:
        self._check_open()
        self._protocol.send_text(text.encode())
        await self._flush()

    async def receive(self) -> list[bytes]:
        """The payloads of the data frames of the next read (at least one); raises
        ``FeedConnectionError`` once the connection is gone, after every frame before that."""
        while True:
            frames = self._take_frames()
            if self._protocol.writes:
                await self._flush()  # pongs and a close's echo
            if frames:
                return frames
            if self._ended is not None:
                raise self._ended
            await self._read()

    async def keepalive(
        self, interval_s: float = PING_INTERVAL_S, timeout_s: float = PING_TIMEOUT_S
    ) -> None:
        """Ping every ``interval_s``; fail if a pong is not back within ``timeout_s`` of reading.

        Runs beside the reader until cancelled. A pong can only be seen when the reader reads,
        so after the timeout it waits until the reader is idle on the socket (all received data
        handled) before it calls the peer dead.
        """
        while True:
            await trio.sleep(interval_s)
            payload = os.urandom(4)
            answered = self._pongs[payload] = trio.Event()
            try:
                self._check_open()
                self._protocol.send_ping(payload)
                await self._flush()
                with trio.move_on_after(timeout_s):
                    await answered.wait()
                while not answered.is_set():
                    if self._reading:
                        raise FeedConnectionError(f"keepalive: no pong within {timeout_s:g} s")
                    with trio.move_on_after(0.05):
                        await answered.wait()
            finally:
                del self._pongs[payload]

    async def aclose(self) -> None:
        """A polite close (bounded by ``CLOSE_TIMEOUT_S``); errors mean it is closed anyway."""
        protocol = self._protocol
        with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(FeedConnectionError):
            if protocol.state is OPEN:
                protocol.send_close(1000)
                await self._flush()
            if self._buffer:
                protocol.receive_data(self._buffer)
                self._buffer = b""
            while protocol.state is not State.CLOSED:
                data = await self._receive_some()
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                await self._flush()
                protocol.events_received()  # what comes after our close is not read
                if not data:
                    break
        await trio.aclose_forcefully(self._stream)

    # --- reading ------------------------------------------------------------------------------

    async def _read(self) -> None:
        self._reading = True
        try:
            data = await self._receive_some()
        finally:
            self._reading = False
        if not data:
            self._protocol.receive_eof()
            self._protocol.events_received()
            self._ended = FeedConnectionError(f"connection lost: {_describe_close(self._protocol)}")
            return
        self._buffer = self._buffer + data if self._buffer else data

    def _take_frames(self) -> list[bytes]:
        """Slice every whole frame out of the buffer: plain ones here, the rest via the protocol.

        RFC 6455 §5.2: byte 0 holds FIN, RSV1-3 and the opcode; byte 1 the MASK bit and a
        7-bit length, 126 or 127 meaning a 16- or 64-bit length follows.
        """
        buf, frames = self._buffer, list[bytes]()
        pos, end = 0, len(buf)
        plain_ok = self._ended is None and not self._fragments
        while end - pos >= 2 and self._ended is None:
            first, second = buf[pos], buf[pos + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            if second & 0x80:
                head += 4  # a masked frame from a server: the protocol fails it (1002)
            if length > MAX_FRAME_BYTES:  # the protocol closes with 1009 from the header alone
                self._by_protocol(buf[pos : pos + head], frames)
                break
            stop = pos + head + length
            if stop > end:
                break
            if plain_ok and first in _PLAIN_FIRST_BYTES and not second & 0x80:
                frames.append(buf[pos + head : stop])
            else:
                self._by_protocol(buf[pos:stop], frames)
                plain_ok = self._ended is None and not self._fragments
            pos = stop
        if self._ended is None:
            self._buffer = buf[pos:] if pos else buf
        return frames

    def _by_protocol(self, data: bytes, frames: list[bytes]) -> None:
        """One whole frame (or a too-big frame's header) through websockets' protocol."""
        protocol = self._protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._on_frame(event, frames)
        if protocol.state is not OPEN:
            self._buffer, self._fragments = b"", []
            self._ended = FeedConnectionError(f"connection lost: {_describe_close(protocol)}")

    def _on_frame(self, frame: Frame, frames: list[bytes]) -> None:
        opcode = frame.opcode
        if opcode in _DATA_OPCODES:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                frames.append(b"".join(self._fragments))
                self._fragments = []
        elif opcode is Opcode.PONG and (waiter := self._pongs.get(bytes(frame.data))) is not None:
            waiter.set()

    # --- writing ------------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Send what the protocol wrote (frames, or b"" for our half of a TCP close)."""
        writes = self._protocol.data_to_send()
        async with self._send_lock:
            for data in writes:
                try:
                    if data:
                        await self._stream.send_all(data)
                    elif isinstance(self._stream, trio.SocketStream):
                        await self._stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise FeedConnectionError(f"send failed: {_describe(exc)}") from exc

    def _check_open(self) -> None:
        if self._ended is not None:
            raise self._ended
        if self._protocol.state is not OPEN:
            raise FeedConnectionError("send failed: the connection is closing")

    async def _receive_some(self) -> bytes:
        try:
            data = await self._stream.receive_some(READ_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise FeedConnectionError(f"connection lost: {_describe(exc)}") from exc
        return data if type(data) is bytes else bytes(data)  # SSLStream gives a bytearray


@asynccontextmanager
async def open_feed(url: str, *, open_timeout_s: float) -> AsyncIterator[FeedConnection]:
    """Connect to ``url``; raise ``FeedConnectionError`` if that fails or times out."""
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise FeedConnectionError(f"cannot connect to {url}: {exc}") from exc
    try:
        with trio.fail_after(open_timeout_s):
            stream = await _open_stream(uri)
            try:
                protocol, buffered = await _handshake(stream, uri)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except (WebSocketException, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        raise FeedConnectionError(
            f"cannot connect to {url}: {_describe(exc)}",
            status=status,
            retry_after_s=_retry_after_s(exc),
        ) from exc
    conn = FeedConnection(stream, protocol, buffered)
    try:
        yield conn
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def _open_stream(uri: WebSocketURI) -> trio.abc.Stream:
    tcp = await trio.open_tcp_stream(uri.host, uri.port)
    if not uri.secure:
        return tcp
    tls = trio.SSLStream(tcp, _tls_context(), server_hostname=uri.host, https_compatible=True)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


def _tls_context() -> ssl.SSLContext:
    """The system's trust store, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (read now, so a test or
    an operator can point them elsewhere); built once per setting, since loading is slow."""
    return _context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile, capath=capath)


async def _handshake(stream: trio.abc.Stream, uri: WebSocketURI) -> tuple[ClientProtocol, bytes]:
    """The opening handshake; the protocol and the bytes that followed the response's head.

    Only the response's head goes to the protocol (a 101 has no body): what follows is frames,
    which ``FeedConnection`` slices itself.
    """
    protocol = ClientProtocol(uri, max_size=MAX_FRAME_BYTES)
    protocol.send_request(protocol.connect())
    for data in protocol.data_to_send():
        await stream.send_all(data)
    buffered, head_done = b"", False
    while protocol.state is not OPEN and protocol.handshake_exc is None:
        data = bytes(await stream.receive_some(READ_BYTES))
        if not data:
            protocol.receive_eof()
        elif head_done:  # not a 101: the protocol reads the rest of the response
            protocol.receive_data(data)
        elif (end := (buffered := buffered + data).find(b"\r\n\r\n")) >= 0:
            head_done = True
            protocol.receive_data(buffered[: end + 4])
            buffered = buffered[end + 4 :]
            if protocol.state is not OPEN and protocol.handshake_exc is None:
                protocol.receive_data(buffered)  # a body follows (an error response)
                buffered = b""
        elif len(buffered) > MAX_HEADER_BYTES:
            raise FeedConnectionError("the handshake response's head is too long")
    protocol.events_received()
    if protocol.handshake_exc is not None:
        raise protocol.handshake_exc
    return protocol, buffered


def _retry_after_s(exc: BaseException) -> float | None:
    """``Retry-After`` of a refused handshake, in seconds (the delta form; dates are ignored)."""
    if not isinstance(exc, InvalidStatus):
        return None
    value = exc.response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None


def _describe_close(protocol: ClientProtocol) -> str:
    """Why the protocol ended: the peer's close frame, our failure of it, or neither."""
    if (rcvd := protocol.close_rcvd) is not None:
        return f"closed by peer ({rcvd.code} {rcvd.reason})".strip()
    if (sent := protocol.close_sent) is not None and sent.code != 1000:
        return f"protocol error ({sent.code} {sent.reason})".strip()
    return "closed without a close frame (1006)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out during the opening handshake"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # e.g. the TLS error under it
    return f"{type(exc).__name__}: {exc}"
