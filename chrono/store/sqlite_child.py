"""The SQLite writer process: the one writer connection, away from the event loop's GIL.

sqlite3 gives up the GIL around every statement step, and beside a busy event loop each
re-take waits for the switch interval; in a process of its own the writer never waits.
``chrono.store.sqlite_process`` starts it as ``python -m chrono.store.sqlite_child`` and
speaks to it over its stdin and stdout, one request at a time. Each message is a 4-byte
big-endian length, then a MessagePack array:

- ``["open", path, [[version, description, [statement, ...]], ...]]``: connect and migrate;
  the reply is ``None``;
- ``["feeds", columns]``: ``insert_feeds`` of ``row_params(columns)`` (``feed_columns``; in
  the statement sizes the connection's parameter limit allows); the reply is the rows added;
- ``["many", statement, rows]``: ``execute_many``; the reply is the rows changed.

A reply is ``["ok", value]`` or ``["error", kind, message]`` with kind ``"store"`` (sqlite3
or file errors: the caller spools and retries) or ``"schema_too_new"``. End of input ends the
process: it closes the connection and exits. It ignores SIGINT and SIGTERM, which a terminal
or systemd sends to the whole group, so that a draining parent can still write its last
batches; the parent's exit (its end of the pipe closing) is what stops it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from chrono.errors import SchemaTooNew
from chrono.store.migrations import Migration
from chrono.store.sqlite_sql import execute_many, insert_feeds, open_writer, row_params

HEADER = 4  # bytes of length before each message


class Writer:
    """The connection and the requests on it."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.sizes: tuple[int, ...] = ()

    def handle(self, request: list[Any]) -> list[Any]:
        try:
            return ["ok", self._run(request)]
        except SchemaTooNew as exc:
            return ["error", "schema_too_new", str(exc)]
        except (sqlite3.Error, OSError) as exc:
            return ["error", "store", str(exc)]

    def _run(self, request: list[Any]) -> Any:
        op, *args = request
        if op == "open":
            path, migrations = args
            self.close()
            self.conn, self.sizes = open_writer(
                Path(path), [Migration(v, d, tuple(s)) for v, d, s in migrations]
            )
            return None
        if self.conn is None:
            raise sqlite3.OperationalError("the writer connection is not open")
        if op == "feeds":
            (columns,) = args
            return insert_feeds(self.conn, self.sizes, row_params(columns))
        if op == "many":
            statement, rows = args
            return execute_many(self.conn, statement, rows)
        raise ValueError(f"unknown request {op!r}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def read_message(stream: BinaryIO, decoder: msgspec.msgpack.Decoder[list[Any]]) -> list[Any] | None:
    """The next request, or ``None`` at the end of input."""
    header = stream.read(HEADER)
    if len(header) < HEADER:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    if len(body) < size:
        return None  # the parent went away mid-message: nothing to answer
    return decoder.decode(body)


def frame(message: object, encoder: msgspec.msgpack.Encoder) -> bytearray:
    """``message`` encoded after its length header."""
    buffer = bytearray(HEADER)
    encoder.encode_into(message, buffer, HEADER)
    buffer[:HEADER] = (len(buffer) - HEADER).to_bytes(HEADER, "big")
    return buffer


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt a reply
    requests = sys.stdin.buffer
    decoder = msgspec.msgpack.Decoder(list[Any])
    encoder = msgspec.msgpack.Encoder()
    writer = Writer()
    try:
        while (request := read_message(requests, decoder)) is not None:
            replies.write(frame(writer.handle(request), encoder))
            replies.flush()
    finally:
        writer.close()


if __name__ == "__main__":
    main()
