"""``chrono run`` as a child process, for end-to-end tests and benchmarks.

``open_chrono(config)`` starts it, collects its JSON log lines as they come, waits until it
serves (the ``http listening`` line carries the port) and kills it on the way out unless it
already exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


class ChronoProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.port = 0
        self._listening = trio.Event()
        self._logs_ended = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages(self) -> list[str]:
        return [str(record.get("message")) for record in self.logs]

    def tail(self, lines: int = 20) -> str:
        return "\n".join(json.dumps(record) for record in self.logs[-lines:])

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._note(line)
        self._listening.set()  # an early exit ends the wait for it, too
        self._logs_ended.set()

    def _note(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:  # a traceback or other raw text: kept for the error report
            record = {"message": line.decode("utf-8", "replace")}
        self.logs.append(record)
        if record.get("message") == "http listening":
            self.port = record["data"]["port"]
            self._listening.set()

    async def wait_exit(self) -> int:
        """The exit code, once the process has ended and its last log line is read."""
        code = await self.process.wait()
        await self._logs_ended.wait()
        return code

    async def stop(self) -> int:
        """SIGTERM, then wait for the drain; the exit code (0 when it drained cleanly)."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT_S):
            return await self.wait_exit()


@asynccontextmanager
async def open_chrono(
    config: Path, *, command: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[ChronoProcess]:
    """``chrono run CONFIG`` (or ``command``), serving; ``RuntimeError`` if it never does.
    ``env``: variables added to this process's environment for the child."""
    argv = command or [sys.executable, "-m", "chrono", "run", str(config)]
    child_env = None if env is None else {**os.environ, **env}
    process = await trio.lowlevel.open_process(list(argv), stderr=subprocess.PIPE, env=child_env)
    chrono = ChronoProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chrono.read_logs)
            with trio.move_on_after(STARTUP_TIMEOUT_S):
                await chrono._listening.wait()
            if not chrono.port:
                raise RuntimeError(f"chrono run did not start serving:\n{chrono.tail()}")
            yield chrono
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()
