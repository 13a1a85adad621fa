"""Serve the app with hypercorn's trio worker, inside the caller's nursery.

The hypercorn ``Config`` is built here (never its mutable, typo-accepting file loader) and its
listening sockets get ``TCP_USER_TIMEOUT``: a client that stops reading would otherwise pin
hypercorn's shielded send forever (docs/stack.md, trap 1); accepted sockets inherit it.
hypercorn itself runs with Chrono's HTTP rules and limits (``chrono.api.protocol``: every error
in the envelope, strict framing, a time limit on request heads) and a WebSocket path safe for
hostile clients (``chrono.api.ws_protocol``).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Sockets
from hypercorn.trio import serve

from chrono.api import protocol, ws_protocol
from chrono.config import ServerConfig, StreamConfig
from chrono.errors import Unrecoverable


class _Config(protocol.ChronoConfig):
    tcp_user_timeout_ms = 20_000
    websocket_pong_timeout: float | None = None  # read by chrono.api.ws_protocol
    bound: Sockets | None = None  # bound ahead by serve_http, to report a busy port itself

    def create_sockets(self) -> Sockets:
        if self.bound is not None:
            return self.bound
        sockets: Sockets = super().create_sockets()
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in sockets.insecure_sockets:
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.tcp_user_timeout_ms
                )
        return sockets


def hypercorn_config(server: ServerConfig, stream: StreamConfig | None = None) -> _Config:
    config = _Config()
    config.bind = [f"{server.host}:{server.port}"]
    config.graceful_timeout = server.graceful_timeout_s
    config.tcp_user_timeout_ms = server.tcp_user_timeout_ms
    config.accesslog = None
    config.include_server_header = False  # the app sends Server: chrono
    config.errorlog = logging.getLogger("hypercorn.error")  # into our own handlers
    config.keep_alive_max_requests = 100_000
    config.websocket_max_message_size = server.stream_max_message_bytes  # over it: 1009
    if stream is not None:  # pings, and 1011 for a client whose pong does not come in time
        config.websocket_ping_interval = stream.ping_interval_s
        config.websocket_pong_timeout = stream.pong_timeout_s
    return config


class _PortOf:
    """Hands hypercorn's bound addresses ("http://127.0.0.1:8080") on as the port number."""

    def __init__(self, task_status: trio.TaskStatus[int]) -> None:
        self._task_status = task_status

    def started(self, value: list[str] | None = None) -> None:
        assert value, "hypercorn reports its bound addresses"
        self._task_status.started(int(value[0].rsplit(":", 1)[1]))


async def serve_http(
    app: Any,
    server: ServerConfig,
    stopping: trio.Event,
    stream: StreamConfig | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stopping`` is set; report the bound port (``port = 0`` picks one).

    Raises ``Unrecoverable`` if the address cannot be bound: a restart would fail the same way.
    """
    protocol.install()
    ws_protocol.install()
    config = hypercorn_config(server, stream)
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        where = f"{server.host}:{server.port}"
        raise Unrecoverable(f"server: cannot listen on {where}: {exc.strerror or exc}") from exc
    config.bound = sockets
    await serve(app, config, shutdown_trigger=stopping.wait, task_status=_PortOf(task_status))
