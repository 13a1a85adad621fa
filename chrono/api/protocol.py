"""hypercorn with Chrono's HTTP/1.1 rules: every error in the envelope, strict request framing.

hypercorn and h11 answer some requests themselves, before (or without) the app: an unparseable
request line or header is a 400, an oversized head a 431, a bad WebSocket handshake a 400, each
with an empty body and no ``X-Request-ID``. They also accept what a proxy in front may read
differently (``Content-Length`` together with ``Transfer-Encoding``, the request-smuggling shape)
and any ``HTTP/x.y`` version as if it were 1.1. ``ChronoH11Protocol`` is a small subclass of
hypercorn's ``H11Protocol``; each override exists for one reason:

- ``_send_error_response`` (hypercorn calls it when h11 cannot parse the request): the answer is
  the envelope of ``chrono.api.errors.error_body`` with ``Content-Type: application/json`` and a
  fresh ``X-Request-ID``; h11's 431 "buffer too long" becomes 414 when the request line itself is
  what overflowed (no line end in the buffer yet).
- ``_check_protocol`` (hypercorn calls it with each parsed request head, before the app sees it):
  rejects, in the envelope, an HTTP version other than 1.0 and 1.1 (the HTTP/2 prior-knowledge
  preface ``PRI * HTTP/2.0`` too), two ``Host`` headers or one that is not a host name,
  ``Content-Length`` with
  ``Transfer-Encoding``, ``Transfer-Encoding`` in HTTP/1.0, a request target over
  ``max_target_bytes`` (414), a whole head over ``h11_max_incomplete_size`` (431: h11 limits only
  a head still arriving) and a declared body over ``max_body_bytes`` (413). ``_create_stream``
  then starts no app for a rejected request. h11 itself rejects two differing ``Content-Length``
  values (400) and any transfer coding but ``chunked`` (501). It never calls hypercorn's own
  check, which switched a connection to HTTP/2 on ``Upgrade: h2c``: Chrono serves no cleartext
  HTTP/2 (an ``h2c`` upgrade through a proxy is a known way past its rules, and hypercorn's
  HTTP/2 answers errors outside the envelope), so the upgrade is ignored, as RFC 9110 allows.
- ``stream_send``: hypercorn's streams send their own bodiless errors (a WebSocket handshake that
  is not valid, an app that ended without answering); those become the envelope too, and the
  connection is closed after them (``WSStream`` would leave it open).
- ``handle``: a request head must be complete within ``request_head_timeout_s`` of its first byte,
  else the client gets a 408 in the envelope (slowloris). hypercorn has no such limit: its
  keep-alive timer would close the connection silently, so it is stopped while a head arrives.
- ``handle`` also: a client that half-closes after a whole request (``shutdown(SHUT_WR)``, as
  ``nc -N`` and some HTTP/1.0 clients do) is still answered. hypercorn took its end of input for
  a closed connection and cancelled the app mid-answer: about half such answers were cut or
  lost. Now the reader waits for the answer (up to ``HALF_CLOSED_ANSWER_S``) before closing.
- ``_create_stream`` also gives a WebSocket's app ``scope["extensions"]["chrono.abort"]``, an
  async callable that drops the connection: ``/stream`` cuts a client whose writes block with it
  (a close frame cannot pass a full socket, and hypercorn's writes cannot be cancelled), and
  ``scope["extensions"]["chrono.send_texts"]``, an async callable that writes a list of text
  messages, a frame each, in one socket write: ``/stream`` sends a client's whole batch that way
  (quart's ``websocket.send`` per message went through four layers and a lock for each one).
  Without compression negotiated the frames are written here (``text_frame``), not by wsproto;
  when no other write is under way they go straight into the socket (``_write_now``), and
  through ``TCPServer``'s send only for what the socket buffer cannot take now.
- ``send`` (the callback into ``TCPServer``): restarting the keep-alive timer when a response
  ends runs in the app's task, which quart-trio cancels at that very moment; unshielded, the
  restart was lost and an idle keep-alive connection was never closed.

Every error answer closes the connection, as hypercorn's own did. Request ids: the request's own
``X-Request-ID`` when its head was parsed (as the app does), else a fresh random one.

``install()`` puts the subclass where hypercorn's ``ProtocolWrapper`` looks ``H11Protocol`` up
(a global of ``hypercorn.protocol``), wraps ``TCPServer.run`` so that one connection's protocol
error stays in that connection, and shields ``TCPServer._close`` (see there); it is idempotent.
The overrides lean on hypercorn's private method names and call order, those of the pin in
pyproject.toml (``hypercorn==0.18.*``, with h11 0.16): ``tests/test_http_protocol.py`` checks
every rule over raw sockets against that pin, so an upgrade that moves them fails there first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import sys
from http import HTTPStatus
from itertools import chain
from typing import Any

import h11
import hypercorn.protocol
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import EndBody, Response
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from chrono.api.errors import SAFE_HEADERS, ApiError, ErrorCode, error_body, request_id_of

log = logging.getLogger(__name__)

# A request head (request line and headers) must arrive whole within this time of its first
# byte. Legitimate clients send a head in one packet; 10 s is generous for a slow link and ends
# a slowloris connection long before it matters.
REQUEST_HEAD_TIMEOUT_S = 10.0
# The whole head, as h11 buffers it (hypercorn's default, made explicit). Over it: 431, or 414
# when the request line alone is longer.
ABORT_EXTENSION = "chrono.abort"  # scope["extensions"]: drop a WebSocket connection now
SEND_TEXTS_EXTENSION = "chrono.send_texts"  # ... and: many text frames in one write
MAX_HEAD_BYTES = 16 * 1024
# A request target longer than this is 414 even when the head fits. Chrono's longest URLs
# (/prices/latest with 100 symbols) are about 1.2 KB.
MAX_TARGET_BYTES = 8 * 1024
# No Chrono route reads a request body; a declared body over this is 413 before the app.
MAX_BODY_BYTES = 1024 * 1024
# A client that half-closed after its request waits at most this long for the answer.
HALF_CLOSED_ANSWER_S = 10.0


def text_frame(text: str) -> bytes:
    """One final, unmasked, uncompressed text frame (RFC 6455 5.2): what wsproto writes for a
    server's ``TextMessage`` with no extension."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


_HYPERCORN_ERROR_HEADERS = [(b"content-length", b"0"), (b"connection", b"close")]
_ECHOED_BYTES = re.compile(r": (?:bytearray\()?b['\"].*", re.DOTALL)


class ChronoConfig(HypercornConfig):
    """hypercorn's ``Config`` with the limits ``ChronoH11Protocol`` reads."""

    h11_max_incomplete_size = MAX_HEAD_BYTES
    request_head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S
    max_target_bytes: int = MAX_TARGET_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


def _h11_reason(error: BaseException | None) -> str:
    """h11's message, without the request bytes it echoes (``illegal header line: b'...'``)."""
    if not isinstance(error, h11.RemoteProtocolError):
        return "malformed request"
    return _ECHOED_BYTES.sub("", str(error))[:200] or "malformed request"


def _valid_host(value: bytes) -> bool:
    """What werkzeug can route on: a name that IDNA-encodes (no empty or 64+ octet label).
    Without this check its ``BadHost`` escapes before the app's error handlers (a 500)."""
    name = value.decode("latin-1")
    if not name.startswith("["):  # an IPv6 literal keeps its colons
        name = name.partition(":")[0]
    try:
        name.encode("idna")
    except UnicodeError:
        return False
    return True


class ChronoH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol with Chrono's error envelope and request rules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_to_server = self.send
        self.send = self._send
        config = self.config
        self._head_timeout_s = float(
            getattr(config, "request_head_timeout_s", REQUEST_HEAD_TIMEOUT_S)
        )
        self._max_target_bytes = int(getattr(config, "max_target_bytes", MAX_TARGET_BYTES))
        self._max_body_bytes = int(getattr(config, "max_body_bytes", MAX_BODY_BYTES))
        self._max_head_bytes = int(config.h11_max_incomplete_size)
        self._head_timer: trio.CancelScope | None = None
        self._rejected = False  # an error answer went out: the connection is closing
        self._request_id = ""  # the current request's own X-Request-ID, if it sent one
        self._head_method = False  # the current request is a HEAD: no body in the answer
        self._input_ended = False  # the client sent its end of input (a half-close, or gone)
        self._waiting_for_answer = False
        self._answered = trio.Event()  # the answer in progress is out, or cannot be sent

    async def _send(self, event: Event) -> None:
        if isinstance(event, Updated):
            # Restarting or stopping the keep-alive timer only takes TCPServer's lock; finish it
            # even in an app task that quart-trio is cancelling (it does, as a response ends).
            with trio.CancelScope(shield=True):
                await self._send_to_server(event)
        else:
            # TCPServer may be shutting the socket (its send_eof runs outside the send lock) as
            # this send starts: the connection is closing, nothing more can go out.
            with contextlib.suppress(trio.BusyResourceError):
                await self._send_to_server(event)

    # -- a request head must be complete within request_head_timeout_s (408) --------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData) and not event.data:
            self._input_ended = True
        if isinstance(event, Closed):
            self._stop_head_timer()
            await self._answer_a_half_closed_client()
        await super().handle(event)
        if (
            isinstance(event, RawData)
            and self._head_timer is None
            and not self._rejected
            and self.stream is None
            and isinstance(self.connection, h11.Connection)
            and self.connection.their_state is h11.IDLE
            and self.connection.trailing_data[0]
        ):
            # The first bytes of a head that is not complete yet: hypercorn's keep-alive timer
            # would close the connection silently, the head timer answers 408 instead.
            await self.send(Updated(idle=False))
            self._head_timer = trio.CancelScope()
            self.task_group.spawn(self._expire_head, self._head_timer)

    async def _answer_a_half_closed_client(self) -> None:
        """At the reader's ``Closed`` after the client's end of input: if a whole request is
        being answered, let the answer go out before the connection closes. Any other
        ``Closed`` (a send that failed, the answer's own close) ends the wait."""
        connection = self.connection
        if (
            self._input_ended
            and not self._waiting_for_answer
            and self.stream is not None
            and isinstance(connection, h11.Connection)
            and connection.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
            and connection.our_state in (h11.SEND_RESPONSE, h11.SEND_BODY)
        ):
            self._waiting_for_answer = True
            with trio.move_on_after(HALF_CLOSED_ANSWER_S):
                await self._answered.wait()
        else:
            self._answered.set()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    async def _expire_head(self, timer: trio.CancelScope) -> None:
        with timer:
            with trio.move_on_after(self._head_timeout_s) as waiting:
                await self.context.terminated.wait()
            if timer.cancel_called or self._rejected:
                return  # the head arrived (or the connection ended) as the time ran out
            self._head_timer = None  # answering now: nothing is to cancel this task
            self._forget_request()
            if not waiting.cancelled_caught:
                # the server is stopping: close, as hypercorn closes an idle connection then
                await self.send(Closed())
                return
            await self._reject(
                408,
                f"the request head was not complete within {self._head_timeout_s:g} s",
                {"timeout_s": self._head_timeout_s},
            )

    # -- requests h11 could not parse (400, 414, 431, 501) ---------------------------------

    async def _send_error_response(self, status_code: int) -> None:
        # hypercorn calls this from its ``except h11.RemoteProtocolError`` block, so the
        # exception being handled is h11's, with the reason.
        reason = _h11_reason(sys.exception())
        in_head = self.stream is None  # no request of this cycle was parsed
        if in_head:
            self._forget_request()
        limit = {"limit_bytes": self._max_head_bytes}
        if status_code == 431 and in_head and not self._line_complete():
            await self._answer(414, f"request line over {self._max_head_bytes} bytes", limit)
        elif status_code == 431 and in_head:
            await self._answer(
                431, f"request header section over {self._max_head_bytes} bytes", limit
            )
        elif status_code == 501:
            await self._answer(501, f"not implemented: {reason}")
        else:  # 400, or h11's 431 for an endless chunk-size line inside a body
            await self._answer(400, f"malformed HTTP request: {reason}")
        # hypercorn sends Closed() next

    def _forget_request(self) -> None:
        self._request_id = ""
        self._head_method = False

    def _line_complete(self) -> bool:
        return isinstance(self.connection, h11.Connection) and (
            b"\n" in self.connection.trailing_data[0]
        )

    # -- parsed request heads that Chrono refuses (400, 413, 414) --------------------------

    async def _check_protocol(self, event: h11.Request) -> None:
        self._stop_head_timer()
        if self._rejected:
            return
        self._forget_request()
        self._answered = trio.Event()  # this request's answer is still to go out
        self._head_method = event.method == b"HEAD"
        content_length: int | None = None
        transfer_encoding = False
        hosts: list[bytes] = []
        # h11 limits only a head that is still incomplete; a whole one in a read can be longer.
        head_bytes = len(event.method) + len(event.target) + 12
        for name, value in event.headers:  # h11 lower-cases the names
            head_bytes += len(name) + len(value) + 4
            if name == b"x-request-id" and not self._request_id:
                self._request_id = value.decode("latin-1")
            elif name == b"content-length":
                content_length = int(value)  # h11 checked it is digits, one value
            elif name == b"transfer-encoding":
                transfer_encoding = True
            elif name == b"host":
                hosts.append(value)

        problem: tuple[int, str, dict[str, Any]] | None = None
        version = event.http_version
        if version not in (b"1.0", b"1.1"):
            problem = (
                400,
                f"unsupported HTTP version HTTP/{version.decode('ascii')}: "
                "send HTTP/1.1 or HTTP/1.0",
                {},
            )
        elif len(hosts) > 1:
            problem = (400, "a request carries one Host header", {})
        elif hosts and not _valid_host(hosts[0]):
            problem = (400, "the Host header is not a valid host name", {})
        elif content_length is not None and transfer_encoding:
            problem = (400, "a request may not carry both Content-Length and Transfer-Encoding", {})
        elif transfer_encoding and version == b"1.0":
            problem = (400, "Transfer-Encoding is not allowed in HTTP/1.0", {})
        elif len(event.target) > self._max_target_bytes:
            problem = (
                414,
                f"request target over {self._max_target_bytes} bytes",
                {"limit_bytes": self._max_target_bytes},
            )
        elif head_bytes > self._max_head_bytes:
            problem = (
                431,
                f"request header section over {self._max_head_bytes} bytes",
                {"limit_bytes": self._max_head_bytes},
            )
        elif content_length is not None and content_length > self._max_body_bytes:
            problem = (
                413,
                f"request body over {self._max_body_bytes} bytes",
                {"limit_bytes": self._max_body_bytes},
            )
        if problem is not None:
            await self._reject(*problem)

    async def _create_stream(self, request: h11.Request) -> None:
        if not self._rejected:  # a rejected request never reaches the app
            await super()._create_stream(request)
            scope = getattr(self.stream, "scope", None)  # a WebSocket's, its app not yet run
            if isinstance(self.stream, WSStream) and scope is not None:
                extensions = scope.setdefault("extensions", {})
                extensions[ABORT_EXTENSION] = self._abort
                extensions[SEND_TEXTS_EXTENSION] = self._send_texts

    async def _abort(self) -> None:
        """Drop the connection now: closing the socket ends even a write blocked on a client
        that stopped reading (hypercorn writes in a shielded scope, docs/stack.md, trap 1)."""
        await self._send_to_server(Closed())

    async def _send_texts(self, texts: list[str]) -> None:
        """``texts`` as text frames of the accepted WebSocket, in one write (what ``WSStream``
        does for one ``websocket.send``, its extensions such as compression included)."""
        stream = self.stream
        if stream is None or stream.closed:
            return  # it ended: hypercorn drops an app's send after the close too
        if not isinstance(stream, WSStream) or stream.state != ASGIWebsocketState.CONNECTED:
            raise RuntimeError(f"chrono.send_texts: the WebSocket is not open ({stream!r})")
        connection = stream.connection
        if connection.state is not ConnectionState.OPEN:
            return  # closing: hypercorn drops a send then too
        if getattr(getattr(connection, "_proto", None), "extensions", True):
            data = b"".join([connection.send(TextMessage(data=text)) for text in texts])
        else:  # no compression negotiated: the frames are plain, written here 15x faster
            data = b"".join([text_frame(text) for text in texts])
        sent = self._write_now(data)
        if sent < len(data):  # the rest as H11Protocol.stream_send writes Data
            await self.send(RawData(data=data[sent:] if sent else data))

    def _write_now(self, data: bytes) -> int:
        """How much of ``data`` went straight into the socket's buffer: with nothing else
        being written (``TCPServer``'s send lock free) a non-blocking write keeps the order, and
        skips the lock, the shielded scope and ``send_all``'s checks, a third of a /stream
        fan-out's CPU at 1,000 clients (bench/stream.py). 0 when it must wait its turn."""
        server = getattr(self._send_to_server, "__self__", None)
        if not isinstance(server, TCPServer) or server.send_lock.locked():
            return 0
        stream = server.stream
        if not isinstance(stream, trio.SocketStream):  # TLS: its own framing
            return 0
        try:
            return os.write(stream.socket.fileno(), data)
        except OSError:  # full, or closing: hypercorn's path waits, or reports the close
            return 0

    # -- hypercorn's own bodiless errors from its streams -----------------------------------

    async def stream_send(self, event: StreamEvent) -> None:
        if (
            isinstance(event, Response)
            and event.status_code >= 400
            and list(event.headers) == _HYPERCORN_ERROR_HEADERS
        ):
            # HTTPStream/WSStream._send_error_response: a WebSocket handshake that is not
            # valid (400), an app that ended without answering (500). Its EndBody follows.
            self._rejected = True
            messages = {400: "invalid WebSocket handshake", 403: "WebSocket refused"}
            message = messages.get(event.status_code, HTTPStatus(event.status_code).phrase)
            log.debug("answered %d for hypercorn: %s", event.status_code, message)
            await self._send_envelope(event.status_code, message, {}, end=False)
        elif isinstance(event, EndBody) and self._rejected:
            await super().stream_send(event)
            await self.send(Closed())  # WSStream sends no StreamClosed after its error
        else:
            await super().stream_send(event)
        if isinstance(event, EndBody):
            self._answered.set()  # a half-closed client's reader may close now

    # -- the answer ------------------------------------------------------------------------

    async def _reject(self, status: int, message: str, details: dict[str, Any]) -> None:
        """Answer ``status`` in the envelope and close the connection."""
        await self._answer(status, message, details)
        await self.send(Closed())

    async def _answer(
        self, status: int, message: str, details: dict[str, Any] | None = None
    ) -> None:
        self._rejected = True
        self._stop_head_timer()
        log.debug("answered %d before the app: %s", status, message)
        await self._send_envelope(status, message, details or {}, end=True)

    async def _send_envelope(
        self, status: int, message: str, details: dict[str, Any], *, end: bool
    ) -> None:
        error = ApiError(ErrorCode.of_status(status), message, details)
        request_id = request_id_of(self._request_id)  # as the app: the client's, if sane
        body = error_body(error, request_id)
        headers = chain(
            [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"x-request-id", request_id.encode("latin-1")),
                (b"connection", b"close"),
                *((k.lower().encode(), v.encode()) for k, v in SAFE_HEADERS.items()),
            ],
            self.config.response_headers("h11"),
        )
        events: list[h11.Response | h11.Data | h11.EndOfMessage] = [
            h11.Response(
                status_code=error.status,
                headers=list(headers),
                reason=HTTPStatus(error.status).phrase.encode("ascii"),
            )
        ]
        if not self._head_method:
            events.append(h11.Data(data=body))
        if end:
            events.append(h11.EndOfMessage())
        # One write, so that nothing an app task sends can land between the head and the body.
        data = bytearray()
        for event in events:
            try:
                data += self.connection.send(event)
            except h11.LocalProtocolError:
                if self.connection.their_state != h11.ERROR:  # as hypercorn's _send_h11_event
                    raise
                break
        if data:
            await self.send(RawData(data=bytes(data)))


def _contain_connection_errors() -> None:
    """Keep one connection's protocol error inside that connection.

    hypercorn lets an h11 ``LocalProtocolError`` escape a connection's task (seen here: a client
    that sends WebSocket frames before reading the 101 answer), which ends ``serve`` and drops
    every other connection. Wrapped, the bad connection alone is closed and logged.
    """
    original = TCPServer.run
    if getattr(original, "_chrono_contained", False):
        return

    async def run(self: TCPServer) -> None:
        try:
            await original(self)
        except Exception as exc:
            log.warning("dropped a connection on a protocol error: %r", exc)

    run._chrono_contained = True  # type: ignore[attr-defined]
    TCPServer.run = run  # type: ignore[method-assign]


def _close_even_when_cancelled() -> None:
    """Finish closing a connection even when the task that closes it is being cancelled.

    When an answer ends its connection (HTTP/1.0, ``Connection: close``), it is the app's task
    that asks ``TCPServer`` to close, and quart-trio cancels that task as soon as hypercorn tells
    it the request is over: the cancel lands in ``send_eof``, ``aclose`` never runs, and the
    socket stays open, its reader waiting with no timer left, until the client closes it. The
    two steps only checkpoint (a ``shutdown`` and a ``close``), so shielding them is safe.
    """
    original = TCPServer._close
    if getattr(original, "_chrono_shielded", False):
        return

    async def close(self: TCPServer) -> None:
        with trio.CancelScope(shield=True):
            await original(self)

    close._chrono_shielded = True  # type: ignore[attr-defined]
    TCPServer._close = close  # type: ignore[method-assign]


def install() -> None:
    """Make hypercorn (in this process) follow Chrono's rules; calling it again does nothing."""
    _contain_connection_errors()
    _close_even_when_cancelled()
    # ProtocolWrapper looks H11Protocol up as a global of hypercorn.protocol on each connection
    # (not re-exported, hence the ignores).
    if hypercorn.protocol.H11Protocol is not ChronoH11Protocol:  # type: ignore[attr-defined]
        hypercorn.protocol.H11Protocol = ChronoH11Protocol  # type: ignore[attr-defined]
