"""HTTP at the protocol level, over raw sockets: what hypercorn and h11 answer before the app.

Every error is the envelope with ``Content-Type: application/json`` and ``X-Request-ID`` and
closes the connection; unknown HTTP versions and ambiguous framing never reach the app. These
tests hold ``chrono/api/protocol.py``'s overrides to the pinned hypercorn (0.18.*) and h11.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import hypercorn.protocol
import pytest
import trio
from hypercorn.trio.tcp_server import TCPServer

from chrono.api import protocol
from chrono.api.errors import ErrorCode
from chrono.api.protocol import MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_TARGET_BYTES
from tests.conftest import Running


@pytest.fixture(autouse=True)
def no_dropped_connections(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No protocol error escaped a connection (protocol.py logs those as it drops them), and no
    error was logged at all."""
    yield
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One TCP connection: write bytes, read whole HTTP/1.1 answers by their Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive_some(65_536)
        except trio.BrokenResourceError:  # a reset after the server closed counts as closed
            data = b""
        self.buffer += data
        return bool(data)

    async def answer(self, *, head: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._fill(), f"closed before a whole answer: {bytes(self.buffer)!r}"
        end = self.buffer.index(b"\r\n\r\n")
        status_line, *lines = self.buffer[:end].decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        version, status, _reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} twice"
            headers[name.lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        while len(self.buffer) < length:
            assert await self._fill(), "closed inside a body"
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return Answer(int(status), headers, body)

    async def closed(self) -> bool:
        """True once the server ends the connection, with nothing more sent."""
        while await self._fill():
            pass
        return not self.buffer


async def connect(running: Running) -> RawClient:
    port = urlsplit(running.url).port
    assert port is not None
    return RawClient(await trio.open_tcp_stream("127.0.0.1", port))


async def exchange(running: Running, request: bytes, *, head: bool = False) -> Answer:
    """Send ``request`` on a new connection: its answer, after which the server must close."""
    async with await connect(running) as client:
        await client.send(request)
        answer = await client.answer(head=head)
        assert await client.closed()
    return answer


def assert_envelope(answer: Answer, status: int, code: str, *, body: bool = True) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    request_id = answer.headers["x-request-id"]
    assert request_id
    if not body:
        assert answer.body == b""
        return {}
    envelope: dict[str, Any] = answer.json()
    assert set(envelope) == {"error", "status"}
    assert set(envelope["error"]) == {"code", "message", "details", "request_id"}
    assert envelope["status"] == status
    assert envelope["error"]["code"] == code
    assert isinstance(envelope["error"]["message"], str)
    assert envelope["error"]["message"]
    assert isinstance(envelope["error"]["details"], dict)
    assert envelope["error"]["request_id"] == request_id
    return envelope


HOST = b"Host: chrono\r\n"
GET_HEALTH = b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n"


async def assert_still_serving(running: Running) -> None:
    async with await connect(running) as client:
        await client.send(GET_HEALTH)
        answer = await client.answer()
    assert answer.status == 200
    assert answer.headers["x-request-id"]


# Answered by the server itself, before the app or without it: (id, request bytes, status, code).
# GET /health answers 200 in the app, so a row on it that gets its error never reached the app.
PROTOCOL_ERRORS: list[tuple[str, bytes, int, str]] = [
    ("garbage-request-line", b"GARBAGE\r\n\r\n", 400, "VALIDATION_ERROR"),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "VALIDATION_ERROR"),
    ("no-version", b"GET /health\r\n\r\n", 400, "VALIDATION_ERROR"),
    (
        "bad-header-line",
        b"GET /health HTTP/1.1\r\n" + HOST + b"this is no header\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    ("space-before-colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, "VALIDATION_ERROR"),
    ("no-host", b"GET /health HTTP/1.1\r\n\r\n", 400, "VALIDATION_ERROR"),
    ("http-9.9", b"GET /health HTTP/9.9\r\n" + HOST + b"\r\n", 400, "VALIDATION_ERROR"),
    ("http-2.0", b"GET /health HTTP/2.0\r\n" + HOST + b"\r\n", 400, "VALIDATION_ERROR"),
    ("http-0.9", b"GET /health HTTP/0.9\r\n" + HOST + b"\r\n", 400, "VALIDATION_ERROR"),
    ("http-2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "VALIDATION_ERROR"),
    (
        "content-length-and-transfer-encoding",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "transfer-encoding-and-content-length",
        b"POST /health HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,  # not the app's 405
        "VALIDATION_ERROR",
    ),
    (
        "two-content-lengths",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "content-length-list",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: 1, 2\r\n\r\nxx",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "negative-content-length",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "transfer-encoding-in-http-1.0",
        b"GET /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "unknown-transfer-coding",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        501,
        "NOT_IMPLEMENTED",
    ),
    (
        "bad-chunk-size",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    (
        "header-section-too-large",
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
        431,
        "HEADERS_TOO_LARGE",
    ),
    (
        "too-many-headers",
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Many: a\r\n" * (MAX_HEAD_BYTES // 11) + b"\r\n",
        431,
        "HEADERS_TOO_LARGE",
    ),
    (
        # still arriving when it overflows h11's buffer: a line end tells 431 from 414
        "unfinished-header-section-too-large",
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * MAX_HEAD_BYTES,
        431,
        "HEADERS_TOO_LARGE",
    ),
    (
        "unfinished-request-line-too-large",
        b"GET /health?q=" + b"a" * MAX_HEAD_BYTES,
        414,
        "URI_TOO_LONG",
    ),
    (
        "request-line-over-head-limit",
        b"GET /health?q=" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "URI_TOO_LONG",
    ),
    (
        "target-over-limit",
        b"GET /health?q=" + b"a" * MAX_TARGET_BYTES + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "URI_TOO_LONG",
    ),
    (
        "body-over-limit",
        b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    (
        "host-label-too-long",  # werkzeug's BadHost would escape the app as a 500
        b"GET /health HTTP/1.1\r\nHost: " + b"x" * 64 + b".example\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
    ("host-empty-label", b"GET /health HTTP/1.1\r\nHost: a..b\r\n\r\n", 400, "VALIDATION_ERROR"),
    ("two-hosts", b"GET /health HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400, "VALIDATION_ERROR"),
    (
        "websocket-handshake-without-key",
        b"GET /stream HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        400,
        "VALIDATION_ERROR",
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [pytest.param(*row, id=name) for name, *row in PROTOCOL_ERRORS],
)
async def test_protocol_errors_are_the_envelope_and_close(
    running: Running, request_bytes: bytes, status: int, code: str
) -> None:
    with trio.fail_after(10):
        answer = await exchange(running, request_bytes)
        assert_envelope(answer, status, code)
        assert answer.headers["connection"] == "close"
        await assert_still_serving(running)


async def test_bad_connections_do_not_disturb_a_good_one(running: Running) -> None:
    with trio.fail_after(10):
        async with await connect(running) as good:
            for _name, request_bytes, status, code in PROTOCOL_ERRORS:
                assert_envelope(await exchange(running, request_bytes), status, code)
                await good.send(GET_HEALTH)
                assert (await good.answer()).status == 200


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        pytest.param(b"GET /no/such/route HTTP/1.1\r\n", 404, "NOT_FOUND", id="unknown-route"),
        pytest.param(b"POST /health HTTP/1.1\r\n", 405, "METHOD_NOT_ALLOWED", id="wrong-method"),
        pytest.param(b"GET /prices/latest HTTP/1.1\r\n", 401, "UNAUTHORIZED", id="no-key"),
    ],
)
async def test_app_errors_are_the_envelope_and_keep_the_connection(
    running: Running, request_line: bytes, status: int, code: str
) -> None:
    with trio.fail_after(10):
        async with await connect(running) as client:
            await client.send(request_line + HOST + b"\r\n")
            assert_envelope(await client.answer(), status, code)
            await client.send(GET_HEALTH)
            assert (await client.answer()).status == 200


async def test_keep_alive_serves_two_requests_on_one_connection(running: Running) -> None:
    with trio.fail_after(10):
        async with await connect(running) as client:
            ids = []
            for _ in range(2):
                await client.send(GET_HEALTH)
                answer = await client.answer()
                assert answer.status == 200
                assert answer.headers["content-type"] == "application/json"
                assert answer.json()["status"] == "healthy"
                ids.append(answer.headers["x-request-id"])
            assert all(ids)
            assert ids[0] != ids[1]
            # pipelined: two heads in one write, answered in order
            await client.send(GET_HEALTH + b"GET /nope HTTP/1.1\r\n" + HOST + b"\r\n")
            assert (await client.answer()).status == 200
            assert_envelope(await client.answer(), 404, "NOT_FOUND")


async def test_requests_within_the_limits_still_work(running: Running) -> None:
    with trio.fail_after(10):
        target = b"/health?q=" + b"a" * (MAX_TARGET_BYTES - 20)
        big_header = b"X-Big: " + b"a" * (MAX_HEAD_BYTES - len(target) - 200) + b"\r\n"
        async with await connect(running) as client:
            await client.send(b"GET " + target + b" HTTP/1.1\r\n" + HOST + big_header + b"\r\n")
            assert (await client.answer()).status == 200
            # a body within the limit, either framing, is read (and ignored by a GET route)
            await client.send(
                b"GET /health HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello"
            )
            assert (await client.answer()).status == 200
            chunked = b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            await client.send(b"GET /health HTTP/1.1\r\n" + HOST + chunked)
            assert (await client.answer()).status == 200


async def test_http_1_0_and_connection_close_are_answered_then_closed(running: Running) -> None:
    with trio.fail_after(10):
        for request in (
            b"GET /health HTTP/1.0\r\n\r\n",
            b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
        ):
            answer = await exchange(running, request)  # exchange waits for the server's close
            assert answer.status == 200
            assert answer.headers["x-request-id"]


async def test_a_rejected_request_keeps_its_own_request_id(running: Running) -> None:
    with trio.fail_after(10):
        answer = await exchange(
            running, b"GET /health HTTP/9.9\r\n" + HOST + b"X-Request-ID: probe-0001\r\n\r\n"
        )
        envelope = assert_envelope(answer, 400, "VALIDATION_ERROR")
        assert envelope["error"]["request_id"] == "probe-0001"
        assert "HTTP/9.9" in envelope["error"]["message"]
        # a head that cannot be parsed gets a fresh id each time
        first = await exchange(running, b"GARBAGE\r\nX-Request-ID: probe-0002\r\n\r\n")
        second = await exchange(running, b"GARBAGE\r\n\r\n")
        ids = {
            assert_envelope(a, 400, "VALIDATION_ERROR")["error"]["request_id"]
            for a in (first, second)
        }
        assert len(ids) == 2
        assert "probe-0002" not in ids
        # as the app does: an id that is not sane is replaced, and the safe headers are there
        odd = await exchange(
            running, b"GET /health HTTP/9.9\r\n" + HOST + b"X-Request-ID: <script>\r\n\r\n"
        )
        replaced = assert_envelope(odd, 400, "VALIDATION_ERROR")["error"]["request_id"]
        assert replaced != "<script>"
        assert len(replaced) == 16
        assert odd.headers["x-content-type-options"] == "nosniff"
        assert odd.headers["cache-control"] == "no-store"


async def test_a_rejected_head_request_gets_the_headers_without_a_body(running: Running) -> None:
    with trio.fail_after(10):
        answer = await exchange(running, b"HEAD /health HTTP/9.9\r\n" + HOST + b"\r\n", head=True)
        assert_envelope(answer, 400, "VALIDATION_ERROR", body=False)
        assert int(answer.headers["content-length"]) > 0  # as a GET's would be


async def test_install_is_idempotent() -> None:
    protocol.install()
    run, close = TCPServer.run, TCPServer._close
    protocol.install()
    assert (TCPServer.run, TCPServer._close) == (run, close)
    assert hypercorn.protocol.H11Protocol is protocol.ChronoH11Protocol  # type: ignore[attr-defined]


@pytest.fixture
def short_head_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 2 s limit on request heads, and a keep-alive timeout shorter still: the head timer, not
    hypercorn's silent keep-alive close, must answer a head that is still arriving. A sync
    fixture, so it applies before the (async) ``running`` builds the server's Config."""
    monkeypatch.setattr(protocol.ChronoConfig, "request_head_timeout_s", 2.0)
    monkeypatch.setattr(protocol.ChronoConfig, "keep_alive_timeout", 0.3)
    return 2.0


async def test_a_head_that_never_finishes_gets_408(
    short_head_timeout: float, running: Running
) -> None:
    with trio.fail_after(10):
        async with await connect(running) as slow:
            started = trio.current_time()
            for byte in b"GET /health HTTP/1.1\r\nHost: chr":  # a byte at a time, never the end
                await slow.send(bytes([byte]))
                await trio.sleep(0.02)
            for _ in range(3):  # meanwhile other connections are served
                await assert_still_serving(running)
            answer = await slow.answer()
            elapsed = trio.current_time() - started
            envelope = assert_envelope(answer, 408, "REQUEST_TIMEOUT")
            assert envelope["error"]["details"] == {"timeout_s": short_head_timeout}
            assert short_head_timeout - 0.1 <= elapsed < short_head_timeout + 2
            assert await slow.closed()
        await assert_still_serving(running)


async def test_each_request_gets_its_own_head_time_and_idle_connections_close(
    short_head_timeout: float, running: Running
) -> None:
    with trio.fail_after(10):
        async with await connect(running) as client:
            for _ in range(3):  # each head half sent, then finished within its own limit
                await client.send(b"GET /health HTTP/1.1\r\n")
                await trio.sleep(0.6)  # longer than the keep-alive timeout, within the limit
                await client.send(HOST + b"\r\n")
                assert (await client.answer()).status == 200
            # then idle: hypercorn's keep-alive timeout closes the connection, silently
            started = trio.current_time()
            assert await client.closed()
            assert trio.current_time() - started < short_head_timeout


# -- fuzzing: no answer from Chrono to any request, however broken, lacks the envelope -----------

SEEDS = [
    GET_HEALTH,
    b"GET /prices/latest?symbols=BTC/USD,ETH/USD HTTP/1.1\r\n"
    + HOST
    + b"Authorization: Bearer test_public_key_0001\r\nX-Request-ID: fuzz-1\r\n\r\n",
    b"POST /health HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
    b"POST /health HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /status HTTP/1.0\r\n\r\n",
]
JUNK = [b"\r\n", b"\n", b"\r", b"\x00", b" ", b":", b"\t", b"\xff", b"HTTP/9.9", b"%", b"?", b"0"]


def mutate(request: bytes, rng: random.Random) -> bytes:
    """One to three random edits of a valid request: what a broken client or a fuzzer sends."""
    data = bytearray(request)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        edit = rng.randrange(6)
        if edit == 0 and data:  # a byte replaced by any byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif edit == 1:  # something that matters to a parser, inserted
            data[at:at] = rng.choice(JUNK)
        elif edit == 2:  # a piece cut out
            del data[at : at + rng.randint(1, 8)]
        elif edit == 3:  # a piece repeated (headers twice, a line doubled)
            end = min(len(data), at + rng.randint(1, 40))
            data[end:end] = data[at:end]
        elif edit == 4:  # the request cut short
            del data[at:]
        else:  # a long run of one byte
            data[at:at] = bytes([rng.randrange(256)]) * rng.choice([100, 9000, 20_000])
    return bytes(data)


async def answers_to(running: Running, request: bytes) -> list[Answer]:
    """Every answer Chrono sends to ``request`` (then end of input) before it closes."""
    answers: list[Answer] = []
    async with await connect(running) as client:
        with contextlib.suppress(trio.BrokenResourceError):
            await client.send(request)
            await client.stream.send_eof()
        while True:
            if not client.buffer and not await client._fill():
                return answers
            answer = await client.answer(head=request.startswith(b"HEAD"))
            answers.append(answer)
            if answer.status == 101:
                return answers


async def test_an_h2c_upgrade_is_answered_in_http_1_1(running: Running) -> None:
    upgrade = (
        b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    with trio.fail_after(10):
        async with await connect(running) as client:
            await client.send(upgrade)
            answer = await client.answer()  # HTTP/1.1, never a 101 to HTTP/2
            assert answer.status == 200
            assert answer.json()["status"] in ("healthy", "degraded")
            await client.send(GET_HEALTH)  # and the connection stays HTTP/1.1
            assert (await client.answer()).status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [GET_HEALTH, b"GET /nowhere HTTP/1.0\r\n\r\n", b"GET /health HTTP/1.0\r\n\r\n"],
)
async def test_a_client_that_half_closes_after_its_request_gets_the_whole_answer(
    running: Running, request_bytes: bytes
) -> None:
    """``shutdown(SHUT_WR)`` after the request (``nc -N``, some HTTP/1.0 clients): hypercorn
    took it for a closed connection and cut about half of the answers."""
    for _ in range(30):
        with trio.fail_after(10):
            [answer] = await answers_to(running, request_bytes)
        assert answer.status in (200, 404)
        assert answer.headers["x-request-id"]
        assert len(answer.body) == int(answer.headers["content-length"]) > 0


@pytest.mark.parametrize("batch", range(8))
async def test_every_answer_to_a_mutated_request_is_the_envelope(
    running: Running, batch: int
) -> None:
    rng = random.Random(batch)  # reproducible: a failure names its batch
    for case in range(50):
        request = mutate(rng.choice(SEEDS), rng)
        with trio.fail_after(10):
            answers = await answers_to(running, request)
        for answer in answers:
            assert answer.headers.get("x-request-id"), (case, request, answer)
            if answer.status >= 400:
                code = assert_envelope(answer, answer.status, answer.json()["error"]["code"])
                assert code["error"]["code"] in ErrorCode.__members__, (case, request, answer)
    await assert_still_serving(running)
