"""Serve the app with hypercorn's trio worker, inside the caller's nursery.

The hypercorn ``Config`` is built here (never its mutable, typo-accepting file loader) and its
listening sockets get ``TCP_USER_TIMEOUT``: a client that stops reading would otherwise pin
hypercorn's shielded send forever (../shared/STACK.md trap 1); accepted sockets inherit it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve

from chrono.config import ServerConfig


class _Config(HypercornConfig):
    tcp_user_timeout_ms = 10_000

    def create_sockets(self) -> Sockets:
        sockets: Sockets = super().create_sockets()
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in sockets.insecure_sockets:
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.tcp_user_timeout_ms
                )
        return sockets


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
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
    """Serve until ``stopping`` is set; report the bound port (``port = 0`` picks one)."""
    config = hypercorn_config(server)
    await serve(app, config, shutdown_trigger=stopping.wait, task_status=_PortOf(task_status))
