"""The parent's end of the SQLite writer process (``chrono.store.sqlite_child``).

One request at a time, each awaited to its reply, so a write returns only once it is committed
or refused. Whatever breaks the exchange (the child exiting, a cancelled call with a request
half sent or unanswered) kills the child: the transaction it was in is then committed or
rolled back as a whole, which SQLite guarantees across a crash, and the caller gets
``StoreError`` (or its cancellation), so the batch is retried and its unique keys make the
retry harmless. The next call starts a new child. Closing the child's stdin ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

import chrono
from chrono.errors import SchemaTooNew, StoreError
from chrono.store.migrations import Migration
from chrono.store.sqlite_child import HEADER, frame

CLOSE_TIMEOUT_S = 5.0  # for the child to finish a write and exit once its input ends
READ_SIZE = 65_536
PIPE_BYTES = 1 << 20  # Linux's default most (/proc/sys/fs/pipe-max-size)
S = TypeVar("S")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Any])


class WriterProcess:
    """The child holding the writer connection of the database at ``path``, opened and
    migrated by ``open()`` or by the first call after the last child was lost."""

    def __init__(self, path: Path, migrations: Sequence[Migration]) -> None:
        self._open = frame(["open", str(path), [[m.version, m.description, list(m.statements)]
                                                for m in migrations]], _encoder)  # fmt: skip
        self._process: trio.Process | None = None
        self._lock = trio.Lock()
        self._received = bytearray()
        self.starts = 0  # children started: more than one means one was lost and replaced

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one is running."""
        return None if self._process is None else self._process.pid

    async def open(self) -> None:
        """Start and open a child unless one is running; ``StoreError`` or ``SchemaTooNew`` if
        the database cannot be opened now."""
        async with self._lock:
            await self._running()

    async def call(self, *request: Any) -> Any:
        """Send ``request`` and return the reply's value; ``StoreError`` if the store refused
        it or the child is gone."""
        message = frame(list(request), _encoder)  # before the lock: it may be large
        async with self._lock:
            return await self._exchange(await self._running(), message)

    async def _running(self) -> trio.Process:
        if self._process is not None:
            return self._process
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "chrono.store.sqlite_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_environment(),
            )
        except OSError as exc:
            raise StoreError(f"cannot start the SQLite writer process: {exc}") from exc
        self._process = process
        _widen(_pipe(process.stdin))
        self._received.clear()
        self.starts += 1
        try:
            await self._exchange(process, self._open)
        except BaseException:
            await self._kill()  # a child is kept only once its connection is open
            raise
        return process

    async def _exchange(self, process: trio.Process, message: bytes | bytearray) -> Any:
        try:
            await _pipe(process.stdin).send_all(message)
            reply = await self._reply(_pipe(process.stdout))
        except BaseException as exc:
            code = await self._kill()
            if isinstance(exc, (trio.BrokenResourceError, trio.EndOfChannel, OSError)):
                raise StoreError(f"the SQLite writer process exited (code {code})") from exc
            raise
        match reply:
            case ["ok", value]:
                return value
            case ["error", "schema_too_new", text]:
                raise SchemaTooNew(text)
            case ["error", _, text]:
                raise StoreError(f"sqlite: {text}")
        raise StoreError(f"the SQLite writer process answered {reply!r}")

    async def _reply(self, stdout: trio.abc.ReceiveStream) -> Any:
        buffer = self._received
        while True:
            if len(buffer) >= HEADER:
                end = HEADER + int.from_bytes(buffer[:HEADER], "big")
                if len(buffer) >= end:
                    reply = _decoder.decode(buffer[HEADER:end])
                    del buffer[:end]
                    return reply
            data = await stdout.receive_some(READ_SIZE)
            if not data:
                raise trio.EndOfChannel
            buffer += data

    async def _kill(self) -> int | None:
        """Kill the child and reap it; its exit code (``None`` if there was none)."""
        process, self._process = self._process, None
        if process is None:
            return None
        with trio.CancelScope(shield=True):
            process.kill()
            code = await process.wait()
            await _close_pipes(process)
        return code

    async def aclose(self) -> None:
        """End the child's input and wait for it to exit; kill it if it does not in time."""
        async with self._lock:
            if (process := self._process) is None:
                return
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await _pipe(process.stdin).aclose()
                await process.wait()
            await self._kill()  # reaps it, and its pipes closed; kills it if it hung


async def _close_pipes(process: trio.Process) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            await stream.aclose()


def _widen(stream: trio.abc.SendStream) -> None:
    """Give the request pipe ``PIPE_BYTES`` of buffer where the system lets us (Linux).

    A write of a few thousand rows is a message of a megabyte or so. Through a 64 KiB pipe it
    goes in a dozen chunks, and between two of them the writer task waits for its turn behind
    the collectors' reads (a read of 256 KiB is milliseconds of parsing): the child sat idle
    for most of each transfer. Where the call is refused, the default pipe still works.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None and isinstance(stream, trio.lowlevel.FdStream):
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BYTES)


def _pipe(stream: S | None) -> S:
    if stream is None:
        raise StoreError("the SQLite writer process has no pipe")
    return stream


def _child_environment() -> dict[str, str]:
    """This environment, with Chrono's own package first on the path, so the child imports
    the same code whether Chrono is installed or run from a checkout."""
    root = str(Path(chrono.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else os.pathsep.join((root, path))}
