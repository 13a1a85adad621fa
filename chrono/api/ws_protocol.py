"""hypercorn's WebSocket path, made safe for hostile clients (``/stream``).

``install()`` applies five fixes to hypercorn 0.18, each reproduced by a probe (its docstring
lists them; docs/stack.md, trap 11); ``chrono.api.server`` calls it beside
``chrono.api.protocol.install()`` and sets hypercorn's ``websocket_max_message_size`` from
``[server] stream_max_message_bytes``.
They lean on hypercorn's private names, those of the pin in pyproject.toml
(``hypercorn==0.18.*``); tests/test_stream_probe.py fails if an upgrade moves them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from io import BytesIO, StringIO
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from hypercorn.trio import task_group
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

MESSAGE_TOO_BIG, INTERNAL_ERROR = 1009, 1011


def utf8_length(data: str | bytes) -> int:
    """A message's size on the wire, in bytes (text counted as UTF-8, without encoding ASCII)."""
    return len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())


class _NoDeflate(PerMessageDeflate):
    """permessage-deflate, always declined."""

    def accept(self, offer: str) -> None:
        return None


def install() -> None:
    """Five fixes to hypercorn 0.18's WebSocket path; calling it again does nothing.

    1. ``WebsocketBuffer`` gathers a message's frames and compares the total with
       ``websocket_max_message_size`` only after storing each piece, and once over the limit it
       goes on storing whatever the client still sends (16 MiB sent against a 64 KiB limit:
       16 MiB held). Here it counts first (in UTF-8 bytes, text too), keeps nothing past the
       limit and lets go of what it held.
    2. Over the limit hypercorn sends close 1009 but neither tells the app nor closes the
       connection: the handler, and the hub's count, lived on until the client answered the
       close, if ever. Here the stream ends there as when the client closes it: the app hears
       ``websocket.disconnect`` and the connection closes.
    3. ``TaskGroup.spawn_app`` passes messages to the app through a bounded queue, and the end
       of the connection through the same queue. A handler busy sending while a client flooded
       it never heard the client go: the send that failed put ``websocket.disconnect`` in that
       full queue and waited for room, which only that handler could make (the client stayed
       counted, and held the shutdown for its whole grace). After the app returned, a reader
       waiting for room waited forever, holding the socket. Here the disconnect never waits:
       the app's next receive gets it, ahead of what is queued; and the queue closes when the
       app returns, dropping whatever comes later.
    4. hypercorn accepts permessage-deflate whenever a client offers it (browsers always do):
       a compressed message inflates in one piece, whatever the limit (16 KB on the wire,
       48 MB in memory), and every update is compressed again for every client. Declined here.
    5. hypercorn pings every ``websocket_ping_interval`` but ignores the pongs: a connection
       whose peer vanished without a FIN (a NAT dropped it, a laptop slept) stayed open, and a
       ``/stream`` client counted, until TCP gave up. Here a ping without a pong within
       ``websocket_pong_timeout`` closes the connection with 1011 (``_handle_events`` is
       rewritten whole for the pongs, fix 2 inside it; ``_send_pings`` replaced).
    """
    buffer_class = ws_stream.WebsocketBuffer
    if getattr(buffer_class.extend, "_chrono", False):
        return

    def extend(self: ws_stream.WebsocketBuffer, event: Message[Any]) -> None:
        data = event.data
        self.length += utf8_length(data)
        if self.length > self.max_length:
            self.value = None
            raise ws_stream.FrameTooLargeError()
        if self.value is None:
            self.value = StringIO() if isinstance(event, TextMessage) else BytesIO()
        self.value.write(data)

    async def _handle_events(self: ws_stream.WSStream) -> None:  # hypercorn's, and fixes 2, 5
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except ws_stream.FrameTooLargeError:
                    await self._send_wsproto_event(CloseConnection(code=MESSAGE_TOO_BIG))
                    if not self.closed:  # fix 2: the app hears it, the connection closes
                        await self.send(StreamClosed(stream_id=self.stream_id))
                    break
                if event.message_finished:
                    assert self.app_put is not None  # set once the handshake is accepted
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, Pong):
                self._chrono_pong_at = trio.current_time()  # type: ignore[attr-defined]
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_pings(self: ws_stream.WSStream) -> None:  # fix 5
        interval = float(self.config.websocket_ping_interval or 0)
        timeout = getattr(self.config, "websocket_pong_timeout", None)
        with trio.CancelScope() as pinging:  # cancelled as the stream closes (handle, below)
            self._chrono_pinging = pinging  # type: ignore[attr-defined]
            while not self.closed:
                await trio.sleep(interval)
                pinged = trio.current_time()
                await self._send_wsproto_event(Ping())
                if timeout is None:
                    continue
                await trio.sleep(timeout)
                if getattr(self, "_chrono_pong_at", -math.inf) < pinged:
                    reason = f"no pong within {timeout:g} s"
                    close = CloseConnection(code=INTERNAL_ERROR, reason=reason)
                    await self._send_wsproto_event(close)
                    await self.send(StreamClosed(stream_id=self.stream_id))
                    return

    original_handle = ws_stream.WSStream.handle

    async def handle(self: ws_stream.WSStream, event: Any) -> None:
        try:
            await original_handle(self, event)
        finally:
            pinging: trio.CancelScope | None = getattr(self, "_chrono_pinging", None)
            if self.closed and pinging is not None:
                pinging.cancel()  # else the connection's task group waits out its sleep

    async def spawn_app(
        self: task_group.TaskGroup,
        app: AppWrapper,
        config: HypercornConfig,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        to_app, app_queue = trio.open_memory_channel[ASGIReceiveEvent](config.max_app_queue_size)
        gone: list[ASGIReceiveEvent] = []  # the websocket.disconnect, once it has come

        async def receive() -> ASGIReceiveEvent:
            if gone:
                await trio.lowlevel.checkpoint()
                return gone[0]
            return await app_queue.receive()

        async def put(message: ASGIReceiveEvent) -> None:
            if message["type"] == "websocket.disconnect":
                gone.append(message)
                with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                    to_app.send_nowait(message)  # wakes an app waiting on an empty queue
                return
            with contextlib.suppress(trio.BrokenResourceError):  # the app has returned
                await to_app.send(message)

        async def run_app(
            scope: Scope,
            receive: ASGIReceiveCallable,
            send: ASGISendCallable,
            sync_spawn: Callable[..., Any],
            call_soon: Callable[..., Any],
        ) -> None:
            try:
                await app(scope, receive, send, sync_spawn, call_soon)
            finally:
                app_queue.close()  # a put waiting for room gives up

        assert self._nursery is not None
        self._nursery.start_soon(
            task_group._handle,
            run_app,
            config,
            scope,
            receive,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return put

    extend._chrono = True  # type: ignore[attr-defined]
    buffer_class.extend = extend  # type: ignore[method-assign]
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream._send_pings = _send_pings  # type: ignore[method-assign]
    ws_stream.WSStream.handle = handle  # type: ignore[method-assign]
    task_group.TaskGroup.spawn_app = spawn_app  # type: ignore[method-assign]
    ws_stream.PerMessageDeflate = _NoDeflate  # type: ignore[attr-defined]
