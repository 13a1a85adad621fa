"""SQLite's writer process: a lost child fails one write and the next write starts another; a
cancelled write is committed or not, never half; signals meant for the group leave it writing;
it ends when the store closes or its parent dies; nothing is ever stored twice."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from chrono.errors import StoreError
from chrono.store.sqlite import SQLiteStore
from chrono.store.sqlite_process import PIPE_BYTES
from chrono.store.sqlite_sql import WAL_CHECKPOINT_PAGES
from tests.feeds import make_feed
from tests.stores import store_locked


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM price_feeds").fetchone()
    return int(rows)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def writer_pid(store: SQLiteStore) -> int:
    pid = store.writer.pid
    assert pid is not None
    assert pid != os.getpid()
    return pid


async def test_a_killed_writer_fails_one_write_and_the_next_write_starts_another(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chrono.db"
    store = SQLiteStore(str(db))
    await store.open()
    assert await store.write([make_feed(i) for i in range(10)]) == 10
    first = writer_pid(store)
    os.kill(first, signal.SIGKILL)
    await trio.to_thread.run_sync(os.waitid, os.P_PID, first, os.WEXITED | os.WNOWAIT)  # dead
    with pytest.raises(StoreError, match="writer process exited"):
        await store.write([make_feed(i) for i in range(10, 20)])
    assert store.writer.pid is None
    assert await store.write([make_feed(i) for i in range(5, 20)]) == 10  # 5..9 are stored
    assert writer_pid(store) != first
    assert store.writer.starts == 2
    shown = store.statistics()
    assert (shown.writer_pid, shown.writer_starts) == (store.writer.pid, 2)
    assert [f.price for f in await store.latest(["BTC/USD"])] == [make_feed(19).price]
    await store.aclose()
    assert count(db) == 20


@pytest.mark.parametrize("delay_s", [0, 0.001, 0.003, 0.01, 0.03])
async def test_a_cancelled_write_is_whole_or_absent_and_writing_goes_on(
    tmp_path: Path, delay_s: float
) -> None:
    db = tmp_path / "chrono.db"
    store = SQLiteStore(str(db))
    await store.open()
    batch = [make_feed(i) for i in range(20_000)]  # several statements: one transaction
    with trio.move_on_after(delay_s):
        await store.write(batch)  # cancelled before, while or after the child writes it
    stored = count(db)
    assert stored in (0, len(batch))
    assert await store.write(batch) == len(batch) - stored
    assert await store.write(batch) == 0
    await store.aclose()
    assert count(db) == len(batch)


async def test_a_write_cancelled_while_the_child_waits_kills_that_child(tmp_path: Path) -> None:
    db = tmp_path / "chrono.db"
    store = SQLiteStore(str(db))
    await store.open()
    first = writer_pid(store)
    with store_locked(db):  # the child's write waits for the lock (busy_timeout)
        with trio.move_on_after(0.2) as scope:
            await store.write([make_feed(1)])
    assert scope.cancelled_caught
    assert store.writer.pid is None  # the child whose answer never came is gone
    assert not alive(first)
    assert await store.write([make_feed(1), make_feed(2)]) == 2
    assert store.writer.starts == 2
    await store.aclose()


async def test_signals_meant_for_the_group_leave_the_writer_writing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "chrono.db"))
    await store.open()
    pid = writer_pid(store)
    for sig in (signal.SIGTERM, signal.SIGINT):
        os.kill(pid, sig)
    await trio.sleep(0.1)
    assert await store.write([make_feed(1)]) == 1
    assert writer_pid(store) == pid
    await store.aclose()


async def test_closing_the_store_ends_its_writer_and_a_later_write_reopens_it(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "chrono.db"))
    await store.open()
    pid = writer_pid(store)
    await store.aclose()
    assert not alive(pid)  # exited and reaped
    assert store.writer.pid is None
    assert await store.write([make_feed(1)]) == 1  # a write opens the store again
    await store.aclose()


def test_the_writer_exits_when_its_parent_dies(tmp_path: Path) -> None:
    parent = textwrap.dedent(f"""
        import trio
        from chrono.store.sqlite import SQLiteStore

        async def main():
            store = SQLiteStore({str(tmp_path / "chrono.db")!r})
            await store.open()
            print(store.writer.pid, flush=True)
            await trio.sleep_forever()

        trio.run(main)
    """)
    with subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        child = int(p.stdout.readline())
        assert running(child)
        p.kill()
    deadline = time.monotonic() + 10
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(child)


async def test_a_store_that_cannot_be_opened_keeps_no_writer(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = SQLiteStore(str(tmp_path / "file" / "chrono.db"))
    with pytest.raises(StoreError, match="cannot open"):
        await store.open()
    assert store.writer.pid is None
    assert store.writer.starts == 1
    with pytest.raises(StoreError):
        await store.write([make_feed(1)])
    assert store.writer.starts == 2  # each attempt is a new child, none left running
    await store.aclose()


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
async def test_the_request_pipe_holds_a_large_write_in_one_go(tmp_path: Path) -> None:
    """A megabyte-sized request goes through in one write, not a dozen turns of the loop."""
    store = SQLiteStore(str(tmp_path / "chrono.db"))
    await store.open()
    fd = os.open(f"/proc/{writer_pid(store)}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        os.close(fd)
    feeds = [make_feed(i) for i in range(5_000)]
    assert await store.write(feeds) == 5_000
    await store.aclose()


async def test_the_writer_leaves_thousands_of_pages_in_the_wal(tmp_path: Path) -> None:
    """Writes that put several times SQLite's default 1,000 pages in the WAL leave them there
    (a checkpoint copies them all into the database file: at the default, one ran every few
    writes) until WAL_CHECKPOINT_PAGES."""
    db, wal = tmp_path / "chrono.db", tmp_path / "chrono.db-wal"
    store = SQLiteStore(str(db))
    await store.open()
    written = 0
    for _ in range(40):  # ~15 writes reach 6,000 pages
        assert await store.write([make_feed(written + i) for i in range(5_000)]) == 5_000
        written += 5_000
        if wal.stat().st_size >= 6_000 * 4096:
            break
    with sqlite3.connect(db) as conn:
        _busy, pages, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert 6_000 <= pages <= WAL_CHECKPOINT_PAGES
    await store.aclose()
    assert count(db) == written
