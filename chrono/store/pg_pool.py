"""A small pool of psycopg connections, each used by one worker thread at a time.

psycopg's async API is asyncio-only, so Chrono uses its sync API in ``trio.to_thread``
(docs/stack.md). ``run(fn)`` takes a slot (at most ``size`` at once), runs ``fn(conn)`` in
a worker thread on an idle connection or a new one, and puts the connection back unless it
broke. A connection that broke (server restart, network) is dropped, so the next call
connects afresh: a store that comes back needs no restart of Chrono. psycopg errors become
``StoreError`` here, the one boundary.

Calls are not abandoned on cancellation: a cancelled caller waits for its thread, so a
transaction is either committed or rolled back, never left running behind Chrono's back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
import trio
from psycopg.rows import TupleRow

from chrono.errors import StoreError

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
Setup = Callable[[Connection], None]


class ConnectionPool:
    def __init__(self, conninfo: str, size: int, *, setup: Setup | None = None) -> None:
        self._conninfo = conninfo
        self._setup = setup
        self._limiter = trio.CapacityLimiter(size)
        self._idle: list[Connection] = []
        self.connects = 0
        self.broken = 0

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in a worker thread; ``StoreError`` on any database failure."""
        async with self._limiter:
            conn = self._idle.pop() if self._idle else None
            try:
                used, result = await trio.to_thread.run_sync(self._call, conn, fn)
            except _Failed as failed:
                if failed.conn is not None:
                    self._idle.append(failed.conn)
                raise StoreError(f"postgresql: {failed.error}") from failed.error
            self._idle.append(used)
            return result

    def _call(self, conn: Connection | None, fn: Callable[[Connection], T]) -> tuple[Connection, T]:
        try:
            if conn is None or conn.closed:
                conn = self._connect()
            return conn, fn(conn)
        except psycopg.Error as exc:
            raise _Failed(exc, self._keep(conn)) from exc
        except BaseException:
            if conn is not None:
                conn.close()  # in an unknown state: not worth keeping
            raise

    def _connect(self) -> Connection:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            if self._setup is not None:
                self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self.connects += 1
        return conn

    def _keep(self, conn: Connection | None) -> Connection | None:
        """The connection, if it can serve the next call; otherwise it is closed."""
        if conn is None:
            return None
        if conn.broken or conn.closed:
            self.broken += 1
            conn.close()
            return None
        return conn

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.to_thread.run_sync(conn.close)


class _Failed(Exception):
    """A psycopg error and the connection it left, carried out of the worker thread."""

    def __init__(self, error: psycopg.Error, conn: Connection | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.conn = conn
