"""A webhook receiver on loopback: a real HTTP/1.1 server (h11) that records each JSON body it
is POSTed, and answers 503 to the first ``fail_first`` requests (to see a sender retry)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import h11
import trio


class WebhookReceiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests = 0  # every POST, refused or taken
        self.events: list[dict[str, Any]] = []
        self.url = ""
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook/T0KEN"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if not (data := await stream.receive_some(65536)):
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.requests += 1
                status = 503 if self.requests <= self.fail_first else 200
                if status == 200:
                    self.events.append(json.loads(body))
                    self._changed.set()
                answer = h11.Response(status_code=status, headers=[("Content-Length", "0")])
                await stream.send_all(conn.send(answer) + conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
                body = b""
            elif isinstance(event, h11.ConnectionClosed):
                return

    async def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event recorded that ``match``es, waiting for it."""
        while not (found := [e for e in self.events if match(e)]):
            self._changed = trio.Event()
            await self._changed.wait()
        return found[0]
