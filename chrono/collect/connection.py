"""The one place Chrono touches the exchange-facing WebSocket client.

Built on ``websockets.trio.client.connect``: it received 2x faster than trio-websocket here and
keeps the link alive itself (pings every 20 s, closed if unanswered within 20 s). Every
library error becomes ``FeedConnectionError``, so the collector handles exactly one kind of
failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.trio.client import ClientConnection, connect

from chrono.errors import FeedConnectionError

CLOSE_TIMEOUT_S = 2.0  # a polite close that the peer doesn't answer must not delay a reconnect
MAX_FRAME_BYTES = 4 * 2**20
RECEIVE_QUEUE_FRAMES = 256  # frames websockets buffers ahead of us before it stops reading


class FeedConnection:
    """An open exchange connection: ``send`` text, ``receive`` frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except (ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            raise FeedConnectionError(f"send failed: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        """A polite close (bounded by ``CLOSE_TIMEOUT_S``); errors mean it is closed anyway."""
        with contextlib.suppress(ConnectionClosed, OSError, trio.BrokenResourceError):
            await self._ws.aclose()

    async def receive(self) -> str | bytes:
        """The next frame; raises ``FeedConnectionError`` once the connection is gone."""
        try:
            return await self._ws.recv()
        except (ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            raise FeedConnectionError(f"connection lost: {_describe(exc)}") from exc


@asynccontextmanager
async def open_feed(url: str, *, open_timeout_s: float) -> AsyncIterator[FeedConnection]:
    """Connect to ``url``; raise ``FeedConnectionError`` if that fails or times out."""
    try:
        async with connect(
            url,
            compression=None,
            open_timeout=open_timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=MAX_FRAME_BYTES,
            max_queue=RECEIVE_QUEUE_FRAMES,
            proxy=None,
        ) as ws:
            yield FeedConnection(ws)
    except (WebSocketException, OSError, TimeoutError) as exc:
        if isinstance(exc, ConnectionClosed):
            raise FeedConnectionError(f"connection lost: {_describe(exc)}") from exc
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        raise FeedConnectionError(
            f"cannot connect to {url}: {_describe(exc)}",
            status=status,
            retry_after_s=_retry_after_s(exc),
        ) from exc


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is None:
            return "closed without a close frame (1006)"
        return f"closed by peer ({exc.rcvd.code} {exc.rcvd.reason})".strip()
    return f"{type(exc).__name__}: {exc}"
