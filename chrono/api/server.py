"""Serve the app with hypercorn's trio worker, inside the caller's nursery.

The hypercorn ``Config`` is built here (never its mutable, typo-accepting file loader) and its
listening sockets get ``TCP_USER_TIMEOUT``: a client that stops reading would otherwise pin
hypercorn's shielded send forever (docs/stack.md, trap 1); accepted sockets inherit it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from chrono.config import ServerConfig
from chrono.errors import Unrecoverable

log = logging.getLogger(__name__)


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


class _Config(HypercornConfig):
    tcp_user_timeout_ms = 10_000
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


def hypercorn_config(server: ServerConfig) -> _Config:
    config = _Config()
    config.bind = [f"{server.host}:{server.port}"]
    config.graceful_timeout = server.graceful_timeout_s
    config.tcp_user_timeout_ms = server.tcp_user_timeout_ms
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # into our own handlers
    config.keep_alive_max_requests = 100_000
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
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stopping`` is set; report the bound port (``port = 0`` picks one).

    Raises ``Unrecoverable`` if the address cannot be bound: a restart would fail the same way.
    """
    _contain_connection_errors()
    config = hypercorn_config(server)
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        where = f"{server.host}:{server.port}"
        raise Unrecoverable(f"server: cannot listen on {where}: {exc.strerror or exc}") from exc
    config.bound = sockets
    await serve(app, config, shutdown_trigger=stopping.wait, task_status=_PortOf(task_status))
