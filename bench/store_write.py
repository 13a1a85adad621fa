"""Store write rate: rows/s through Chrono's ingest writer into each store, beside a raw floor.

For each store (SQLite, PostgreSQL), in one run, the same N pre-built feeds cut into batches of
``--batch`` (the service's default ``max_feeds``):

1. floor: the plainest fast write of the same rows into a fresh table with Chrono's own schema,
   one transaction per batch: ``sqlite3`` executemany of Chrono's INSERT (WAL,
   ``synchronous=NORMAL``), or psycopg binary COPY straight into ``price_feeds``;
2. chrono: the batches sent over a memory channel of ``TO_WRITER_BATCHES`` (as in the service)
   into an ``IngestWriter`` on a fresh store, its spool in a temp folder (it must stay empty);
   timed from the first send to ``run()`` returning after the channel closes;
3. replay: the same feeds again through a fresh writer into that store, all duplicates, as a
   replay after an outage is;
4. floor again, in transactions of the size the writer used (it merges queued batches): the
   like-for-like floor that the ratio is taken against;
5. outage: the batches appended to a spool (fsync'd, one file each, as while the store is
   down), then replayed from it by a writer into a fresh store: how fast Chrono catches up;
6. SQLite's writer alone (with ``--stores`` holding sqlite; ``--writers-only`` runs just this):
   the old executemany of one-row INSERTs beside ``SQLiteStore.write``'s multi-row INSERTs,
   ``--write-batch`` feeds (with their ``text``, as the adapters' fast path gives) per
   transaction, in a worker thread, on schema v2 and v3, with the main thread idle and running
   Python throughout (the worst neighbour: the writer waits for the GIL after every step).

Turning feeds into rows is inside the timed region of both (Chrono has to do it too). The
ratio chrono / floor is what the writer path (the channel, worker-thread hops; on PostgreSQL the
savepoint, and the staging table for a batch that meets a stored feed) costs on top of the
database's own work. Every count is checked
and both tables must hold the same rows. Best of ``--repeat`` rounds, each on fresh tables.

Usage: ``python bench/store_write.py [--feeds N] [--batch B] [--stores sqlite,postgresql]
[--repeat R] [--write-batch W] [--writers-only] [--json]``; ``--postgres-paths`` measures only
PostgreSQL's direct COPY against its staging path (``postgres_paths``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from pathlib import Path
from time import perf_counter, process_time
from typing import Any, Final, Protocol

import msgspec
import psycopg
import trio
from psycopg.types.json import set_json_dumps

from chrono.config import BatchConfig, StorageConfig
from chrono.errors import StoreError
from chrono.model import PriceFeed, feed_text, utc_now
from chrono.pipeline.writer import IngestWriter
from chrono.service import TO_WRITER_BATCHES
from chrono.store import PostgresStore, SQLiteStore, sqlite_sql
from chrono.store import sqlite as chrono_sqlite
from chrono.store.pg_sql import COLUMNS, INCOMING_TYPES
from chrono.store.postgres import copy_row
from chrono.store.spool import Spool
from chrono.testing.postgres import PostgresCluster, PostgresMissing, start_cluster

T0: Final = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
TICK: Final = timedelta(microseconds=250)  # between trades: N = 200,000 spans 50 s
RECEIVE_DELAY: Final = timedelta(milliseconds=3)
MARKETS: Final = (("BTC/USD", "BTC-USD", "67234.56"), ("ETH/USD", "ETH-USD", "3512.12"),
                  ("SOL/USD", "SOL-USD", "187.43"))  # fmt: skip
CENT: Final = Decimal("0.01")
STATEMENT_TIMEOUT_MS: Final = 60_000  # one floor COPY of a batch; a hung server fails the run
CONNECT_TIMEOUT_S: Final = 10
OPEN_TIMEOUT_S: Final = 60  # a store's open(): connect and migrate

Batches = list[list[PriceFeed]]


class BenchError(Exception):
    """A count, a spooled batch or a timeout: the numbers would be wrong."""


def make_feeds(count: int) -> list[PriceFeed]:
    """Distinct trades over three symbols; prices with 2-8 places, sizes with 8."""
    feeds = []
    for i in range(count):
        symbol, native, base = MARKETS[i % len(MARKETS)]
        step = Decimal(1).scaleb(-(2 + i % 7))  # 2..8 decimal places
        price = (Decimal(base) + Decimal(i % 997) * CENT).quantize(step)
        at = T0 + i * TICK
        feeds.append(
            PriceFeed(
                symbol=symbol, price=price, timestamp=at, received_at=at + RECEIVE_DELAY,
                source="coinbase", worker_id="coinbase-1",
                volume=Decimal(9756 + i % 100) + Decimal("0.91661100"),
                bid=(price - CENT).quantize(step), ask=(price + CENT).quantize(step),
                metadata={"native_symbol": native, "trade_id": i},
            )
        )  # fmt: skip
    return feeds


# --- the floors: plain drivers, one transaction per batch ---------------------------------

_json = msgspec.json.Encoder()


def sqlite_floor(path: Path, batches: Batches) -> float:
    """Seconds for ``sqlite3`` executemany of Chrono's INSERT, one transaction per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        for migration in sqlite_sql.MIGRATIONS:
            for statement in migration.statements:
                conn.execute(statement)
        start = perf_counter()
        for batch in batches:
            ingested_at = chrono_sqlite.format_time(utc_now())
            rows = [chrono_sqlite.to_row(f, ingested_at) for f in batch]
            conn.execute("BEGIN")
            conn.executemany(sqlite_sql.INSERT, rows)
            conn.execute("COMMIT")
        return perf_counter() - start
    finally:
        conn.close()


FLOOR_COPY: Final = f"COPY price_feeds ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def postgres_floor(url: str, batches: Batches) -> float:
    """Seconds for psycopg binary COPY straight into ``price_feeds``, one transaction per batch."""
    options = f"-c TimeZone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    with psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options
    ) as conn:
        set_json_dumps(_json.encode, context=conn)  # as Chrono's writer session does
        start = perf_counter()
        for batch in batches:
            with conn.transaction(), conn.cursor() as cur, cur.copy(FLOOR_COPY) as copy:
                copy.set_types(INCOMING_TYPES)
                for f in batch:
                    copy.write_row(copy_row(f))
        return perf_counter() - start


# --- the stores: where each one's fresh table lives and how it is checked ---------------


class Target(Protocol):
    """One store under test; a location is a SQLite path or a PostgreSQL URL."""

    name: str

    def fresh(self, label: str) -> str: ...
    def floor(self, location: str, batches: Batches) -> float: ...
    def store(self, location: str) -> SQLiteStore | PostgresStore: ...
    def count(self, location: str) -> int: ...
    def fingerprint(self, location: str) -> str: ...


CONTENT: Final = ", ".join(COLUMNS)  # every column but id and ingested_at
KEY_ORDER: Final = "source, symbol, timestamp, price"


class SQLiteTarget:
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)

    def fresh(self, label: str) -> str:
        return str(self.folder / f"{label}.db")

    def floor(self, location: str, batches: Batches) -> float:
        return sqlite_floor(Path(location), batches)

    def store(self, location: str) -> SQLiteStore:
        return SQLiteStore(location)

    def _query(self, location: str, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def count(self, location: str) -> int:
        return int(self._query(location, "SELECT count(*) FROM price_feeds")[0][0])

    def fingerprint(self, location: str) -> str:
        rows = self._query(location, f"SELECT {CONTENT} FROM price_feeds ORDER BY {KEY_ORDER}")
        return hashlib.sha256(repr(rows).encode()).hexdigest()


class PostgresTarget:
    name = "postgresql"

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster

    def fresh(self, label: str) -> str:
        return self.cluster.create_database(label)

    def floor(self, location: str, batches: Batches) -> float:
        trio.run(_migrate_postgres, location)  # Chrono's schema, from Chrono's migrations
        return postgres_floor(location, batches)

    def store(self, location: str) -> PostgresStore:
        return PostgresStore(location)

    def _scalar(self, location: str, sql: str) -> Any:
        with psycopg.connect(location, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]

    def count(self, location: str) -> int:
        return int(self._scalar(location, "SELECT count(*) FROM price_feeds"))

    def fingerprint(self, location: str) -> str:
        digest = f"""SELECT md5(string_agg(concat_ws('|', {CONTENT}), E'\\n' ORDER BY {KEY_ORDER}))
                     FROM price_feeds"""
        return str(self._scalar(location, digest))


async def _migrate_postgres(url: str) -> None:
    store = PostgresStore(url)
    try:
        with trio.fail_after(OPEN_TIMEOUT_S):
            await store.open()
    finally:
        await store.aclose()


# --- PostgreSQL alone: the writer's direct COPY against its staging path ------------------


def postgres_paths(
    feeds: list[PriceFeed], batch: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """Rows/s of the PostgreSQL writer's own transaction per batch (``_copy_in``, in this
    thread, one fresh database each, best of ``repeat``): new feeds by the direct COPY, in
    binary and from their texts; batches that each meet one stored feed (the failed COPY, then
    the staging path); and the staging path alone, the writer's only path before. Beside each
    best rate, the least CPU per row this process took (the server's is not in it): what the
    writer's thread takes from a Chrono that also parses the feeds."""
    from chrono.model import feed_text
    from chrono.store import postgres as pg
    from chrono.store.pg_sql import COPY_INCOMING, MOVE_INCOMING

    texts = [msgspec.structs.replace(f, text=feed_text(f)) for f in feeds]
    plain = [feeds[i : i + batch] for i in range(0, len(feeds), batch)]
    with_texts = [texts[i : i + batch] for i in range(0, len(texts), batch)]

    def staging_only(conn: psycopg.Connection[Any], b: list[PriceFeed]) -> tuple[int, bool]:
        with conn.transaction(), conn.cursor() as cur:
            pg._copy(cur, COPY_INCOMING, b, False)
            cur.execute(MOVE_INCOMING)
            return cur.rowcount, False

    modes = {  # name: (batches, one stored feed per batch first, the write, rows it adds)
        "direct COPY, binary": (plain, False, pg._copy_in, 0),
        "direct COPY, texts": (with_texts, False, pg._copy_in, 0),
        "1 stored feed/batch": (plain, True, pg._copy_in, 1),
        "staging only (before)": (plain, False, staging_only, 0),
    }
    rates: dict[str, list[float]] = {name: [] for name in modes}
    cpus: dict[str, list[float]] = {name: [] for name in modes}
    print("starting a throwaway PostgreSQL cluster", file=sys.stderr)
    cluster = start_cluster()
    try:
        for number in range(repeat):
            for i, (name, (batches, seed, write, fewer)) in enumerate(modes.items()):
                url = cluster.create_database(f"paths{number}_{i}")
                trio.run(_migrate_postgres, url)
                with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
                    pg._writer_setup(conn)
                    if seed:
                        pg._copy_in(conn, [b[0] for b in batches])
                    start, cpu = perf_counter(), process_time()
                    for b in batches:
                        if write(conn, b)[0] != len(b) - fewer:
                            raise BenchError(f"{name}: a batch added the wrong count")
                    seconds, cpu = perf_counter() - start, process_time() - cpu
                rates[name].append(len(feeds) / seconds)
                cpus[name].append(cpu / len(feeds) * 1e6)
    finally:
        cluster.destroy()
    return {name: (max(rates[name]), min(cpus[name])) for name in modes}


@contextmanager
def sqlite_target(folder: Path) -> Iterator[Target]:
    yield SQLiteTarget(folder / "sqlite")


@contextmanager
def postgres_target(folder: Path) -> Iterator[Target]:
    """A throwaway cluster for this store's rounds, destroyed whatever happens."""
    print("starting a throwaway PostgreSQL cluster", file=sys.stderr)
    cluster = start_cluster()
    try:
        yield PostgresTarget(cluster)
    finally:
        cluster.destroy()


TARGETS: Final[dict[str, Callable[[Path], AbstractContextManager[Target]]]] = {
    "sqlite": sqlite_target,
    "postgresql": postgres_target,
}


# --- through Chrono's writer ---------------------------------------------------------------


@dataclass
class WriterRun:
    seconds: float
    written: int
    duplicates: int
    writes: int  # store.write calls: the writer merges the batches queued when it wakes


async def through_writer(
    store: SQLiteStore | PostgresStore, batches: Batches, spool_dir: Path, timeout_s: float
) -> WriterRun:
    """All ``batches`` sent into an ``IngestWriter``; timed until its ``run()`` returns."""
    spool = Spool(spool_dir, StorageConfig().spool_max_bytes)
    await spool.open()  # before the clock: the service opens it once at start
    send, receive = trio.open_memory_channel[list[PriceFeed]](TO_WRITER_BATCHES)
    writer = IngestWriter(receive, store, spool)
    writes_before = store.batches_written
    try:
        with trio.fail_after(timeout_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                start = perf_counter()
                async with send:
                    for batch in batches:
                        await send.send(batch)
            seconds = perf_counter() - start
    except trio.TooSlowError:
        raise BenchError(f"{store.kind}: the writer took over {timeout_s:g} s") from None
    if writer.write_errors or spool.batches_spooled:
        raise BenchError(f"{store.kind}: the store failed, batches spooled: {writer.last_error}")
    return WriterRun(seconds, writer.feeds_written, writer.duplicates_ignored,
                     store.batches_written - writes_before)  # fmt: skip


async def write_and_replay(
    target: Target, location: str, batches: Batches, folder: Path, timeout_s: float
) -> tuple[WriterRun, WriterRun]:
    store = target.store(location)
    try:
        with trio.fail_after(OPEN_TIMEOUT_S):
            await store.open()  # connect and migrate before the clock
        write = await through_writer(store, batches, folder / "spool-write", timeout_s)
        replay = await through_writer(store, batches, folder / "spool-replay", timeout_s)
    finally:
        await store.aclose()
    feeds = sum(len(b) for b in batches)
    if write.written != feeds or replay.written or replay.duplicates != feeds:
        raise BenchError(
            f"{store.kind}: the writer counted {write.written} new, then {replay.written} new"
            f" and {replay.duplicates} duplicates; expected {feeds}, 0 and {feeds}"
        )
    return write, replay


async def after_an_outage(
    target: Target, location: str, batches: Batches, folder: Path, timeout_s: float
) -> tuple[float, float]:
    """Seconds to spool ``batches`` (fsync'd, one file each, as during an outage), then for a
    writer to replay them into a fresh store: how fast Chrono catches up once it is back."""
    spool = Spool(folder, len(batches) * 1 << 20)
    await spool.open()
    store = target.store(location)
    try:
        with trio.fail_after(timeout_s):
            start = perf_counter()
            for batch in batches:
                await spool.append(batch)
            spooled_s = perf_counter() - start
            await store.open()
            send, receive = trio.open_memory_channel[list[PriceFeed]](TO_WRITER_BATCHES)
            writer = IngestWriter(receive, store, spool)
            start = perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await send.aclose()  # nothing new: the spool is all there is
            replay_s = perf_counter() - start
    finally:
        await store.aclose()
    feeds = sum(len(b) for b in batches)
    if writer.feeds_replayed != feeds or not spool.is_empty():
        raise BenchError(f"{store.kind}: replayed {writer.feeds_replayed} of {feeds} spooled")
    return spooled_s, replay_s


# --- SQLite's feed writer: multi-row INSERTs beside executemany, idle and beside a busy thread -

SCHEMAS: Final = {"v2": 2, "v3": 3}  # UNIQUE + price_feeds_symbol_time, or one unique index
SPIN_S: Final = 0.5  # the main thread's loop alone, to compare its rate beside a writer with


Write = Callable[[sqlite3.Connection, list[PriceFeed]], None]


def sqlite_at(path: Path, version: int) -> sqlite3.Connection:
    """A fresh file at schema ``version``, connected as the store's writer is."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           cached_statements=sqlite_sql.CACHED_STATEMENTS)  # fmt: skip
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for migration in sqlite_sql.MIGRATIONS[:version]:
        for statement in migration.statements:
            conn.execute(statement)
    return conn


def executemany_write(conn: sqlite3.Connection, batch: list[PriceFeed]) -> None:
    """The writer before: one tuple per feed, executemany steps once per row."""
    ingested_at = chrono_sqlite.format_time(utc_now())
    rows = [chrono_sqlite.to_row(f, ingested_at) for f in batch]
    conn.execute("BEGIN")
    conn.executemany(sqlite_sql.INSERT, rows)
    conn.execute("COMMIT")


def multi_row_write(conn: sqlite3.Connection, batch: list[PriceFeed]) -> None:
    """``SQLiteStore.write``'s work in its thread: one flat list, a few multi-row INSERTs."""
    params = chrono_sqlite.feed_params(batch, chrono_sqlite.format_time(utc_now()))
    sqlite_sql.insert_feeds(conn, sqlite_sql.ROW_SIZES, params)


WRITERS: Final[dict[str, Write]] = {
    "executemany": executemany_write,
    "multi-row": multi_row_write,
}


def spin(done: Callable[[], bool]) -> int:
    """Pure Python on the main thread until ``done()``: an event loop that never waits, the
    worst neighbour for a thread that needs the GIL back after every SQLite step."""
    turns = 0
    while not done():
        for _ in range(1000):
            turns += 1
    return turns


def spin_rate() -> float:
    """Turns/s of ``spin`` with nothing beside it."""
    start = perf_counter()
    turns = spin(lambda: perf_counter() - start > SPIN_S)
    return turns / (perf_counter() - start)


def timed_writes(
    conn: sqlite3.Connection, write: Write, batches: Batches, busy: bool
) -> tuple[float, float]:
    """Seconds for ``write`` of every batch in a worker thread (as ``trio.to_thread`` runs it),
    and the main thread's spin turns/s meanwhile (0 when it only waits)."""
    seconds: list[float] = []
    done = threading.Event()

    def run() -> None:
        try:
            start = perf_counter()
            for batch in batches:
                write(conn, batch)
            seconds.append(perf_counter() - start)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    turns = spin(done.is_set) if busy else 0
    thread.join()
    if not seconds:
        raise BenchError("the SQLite writer thread failed")
    return seconds[0], turns / seconds[0]


def writer_rates(batches: Batches, repeat: int, folder: Path) -> dict[str, Any]:
    """Rows/s of each writer on each schema, idle and beside a busy main thread: best of
    ``repeat`` rounds, each on fresh files, the combinations interleaved in every round."""
    folder.mkdir(exist_ok=True)
    feeds = sum(len(b) for b in batches)
    solo = spin_rate()
    combos = [(schema, busy, writer) for schema in SCHEMAS for busy in (False, True)
              for writer in WRITERS]  # fmt: skip
    runs: dict[tuple[str, bool, str], list[tuple[float, float]]] = {c: [] for c in combos}
    for number in range(repeat):
        for schema, busy, writer in combos:
            path = folder / f"{schema}-{writer}-{'busy' if busy else 'idle'}-{number}.db"
            conn = sqlite_at(path, SCHEMAS[schema])
            try:
                measured = timed_writes(conn, WRITERS[writer], batches, busy)
                runs[schema, busy, writer].append(measured)
                (count,) = conn.execute("SELECT count(*) FROM price_feeds").fetchone()
            finally:
                conn.close()
            if count != feeds:
                raise BenchError(f"sqlite {writer} on {schema}: {count} rows, expected {feeds}")
        print(f"sqlite writers round {number + 1}/{repeat} done", file=sys.stderr)
    rows = []
    for (schema, busy, writer), rounds in runs.items():
        seconds, turns_per_s = min(rounds)
        median_s = sorted(r[0] for r in rounds)[len(rounds) // 2]
        rows.append({"schema": schema, "main_thread": "busy" if busy else "idle",
                     "writer": writer, "rows_per_s": feeds / seconds,
                     "median_rows_per_s": feeds / median_s,
                     "main_thread_kept": turns_per_s / solo if busy else None})  # fmt: skip
    return {"feeds": feeds, "per_write": len(batches[0]), "rows": rows}


def render_writers(result: dict[str, Any]) -> list[str]:
    lines = [
        f"sqlite writer in a worker thread, N={result['feeds']}, {result['per_write']} feeds"
        " (with their text) per write",
        f"{'schema':<7} {'main thread':<12} {'writer':<12} {'rows/s':>9} {'median':>9}"
        f" {'main thread kept':>17}",
    ]
    for r in result["rows"]:
        kept = "-" if r["main_thread_kept"] is None else f"{r['main_thread_kept']:.0%}"
        lines.append(
            f"{r['schema']:<7} {r['main_thread']:<12} {r['writer']:<12} {r['rows_per_s']:>9,.0f}"
            f" {r['median_rows_per_s']:>9,.0f} {kept:>17}"
        )
    lines.append(
        "v2: UNIQUE (source, symbol, timestamp, price) + index price_feeds_symbol_time;"
        " v3: one unique index (symbol, timestamp, source, price)"
    )
    lines.append(
        "busy: the main thread runs Python throughout; kept: its rate beside the writer / alone;"
        " median: of the rounds"
    )
    return lines


# --- one round, the rounds, the report ------------------------------------------------------


def run_round(
    target: Target, batches: Batches, folder: Path, number: int, check_rows: bool
) -> dict[str, Any]:
    feeds = sum(len(b) for b in batches)
    timeout_s = 60 + feeds / 1000  # slower than ~1k rows/s is a failure, not a number
    floor_at, chrono_at = target.fresh(f"floor{number}"), target.fresh(f"chrono{number}")

    def floor() -> float:
        return target.floor(floor_at, batches)

    def chrono() -> tuple[WriterRun, WriterRun]:
        spools = folder / f"{target.name}-spools{number}"
        return trio.run(write_and_replay, target, chrono_at, batches, spools, timeout_s)

    if number % 2:  # alternate which goes first: a busy neighbour hurts both alike
        write, replay = chrono()
        floor_s = floor()
    else:
        floor_s = floor()
        write, replay = chrono()
    # The writer merges the batches queued when it wakes: the floor again, in transactions of
    # the size the writer used, is the like-for-like comparison.
    per_write = max(1, round(feeds / write.writes / len(batches[0])))
    merged = [list(chain.from_iterable(batches[i : i + per_write]))
              for i in range(0, len(batches), per_write)]  # fmt: skip
    merged_at = target.fresh(f"merged{number}")
    merged_s = target.floor(merged_at, merged)
    outage_at = target.fresh(f"outage{number}")
    spooled_s, unspooled_s = trio.run(
        after_an_outage, target, outage_at, batches, folder / f"outage{number}", timeout_s
    )
    counts = {
        "floor": target.count(floor_at),
        "merged": target.count(merged_at),
        "chrono": target.count(chrono_at),
        "outage": target.count(outage_at),
    }
    if set(counts.values()) != {feeds}:
        raise BenchError(f"{target.name}: rows in the tables {counts}, expected {feeds} each")
    if check_rows and target.fingerprint(floor_at) != target.fingerprint(chrono_at):
        raise BenchError(f"{target.name}: the floor's table and Chrono's hold different rows")
    return {
        "floor_s": floor_s,
        "floor_same_size_s": merged_s,
        "same_size_feeds": len(merged[0]),
        "spool_s": spooled_s,
        "spool_replay_s": unspooled_s,
        "write": asdict(write),
        "replay": asdict(replay),
    }


def measure(target: Target, batches: Batches, repeat: int, folder: Path) -> dict[str, Any]:
    feeds = sum(len(b) for b in batches)
    rounds = []
    for number in range(repeat):
        rounds.append(run_round(target, batches, folder, number, check_rows=number == 0))
        r = rounds[-1]
        print(
            f"{target.name} round {number + 1}/{repeat}: floor {feeds / r['floor_s']:,.0f}, "
            f"floor at {r['same_size_feeds']}/txn {feeds / r['floor_same_size_s']:,.0f}, "
            f"chrono {feeds / r['write']['seconds']:,.0f}, "
            f"replay {feeds / r['replay']['seconds']:,.0f} rows/s",
            file=sys.stderr,
        )

    def best(what: str) -> dict[str, Any]:
        run: dict[str, Any] = min((r[what] for r in rounds), key=lambda run: run["seconds"])
        return run

    floor = feeds / min(r["floor_s"] for r in rounds)
    same_size = feeds / min(r["floor_same_size_s"] for r in rounds)
    write, replay = best("write"), best("replay")
    return {
        "floor_rows_per_s": floor,
        "floor_same_size_rows_per_s": same_size,
        "chrono_rows_per_s": feeds / write["seconds"],
        "ratio": feeds / write["seconds"] / same_size,
        "ratio_to_batch_floor": feeds / write["seconds"] / floor,
        "feeds_per_write": feeds / write["writes"],
        "replay_rows_per_s": feeds / replay["seconds"],
        "replay_feeds_per_write": feeds / replay["writes"],
        "spool_rows_per_s": feeds / min(r["spool_s"] for r in rounds),
        "spool_replay_rows_per_s": feeds / min(r["spool_replay_s"] for r in rounds),
        "rounds": rounds,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"store writes (IngestWriter -> store vs raw floor), N={result['feeds']}, "
        f"batch {result['batch']}, best of {result['repeat']}, machine: {result['cpus']} cores",
    ]
    if result["stores"]:
        lines.append(f"{'store':<11} {'what':<22} {'floor/batch':>12} {'floor/same':>11}"
                     f" {'chrono rows/s':>14} {'ratio':>6} {'feeds/write':>12}")  # fmt: skip
    for name, r in result["stores"].items():
        lines.append(
            f"{name:<11} {'new rows':<22} {r['floor_rows_per_s']:>12,.0f}"
            f" {r['floor_same_size_rows_per_s']:>11,.0f} {r['chrono_rows_per_s']:>14,.0f}"
            f" {r['ratio']:>6.2f} {r['feeds_per_write']:>12,.0f}"
        )
        lines.append(
            f"{name:<11} {'replay (all duplicate)':<22} {'-':>12} {'-':>11}"
            f" {r['replay_rows_per_s']:>14,.0f} {'-':>6} {r['replay_feeds_per_write']:>12,.0f}"
        )
        for what, key in (("spool (outage)", "spool_rows_per_s"),
                          ("replay from the spool", "spool_replay_rows_per_s")):  # fmt: skip
            lines.append(f"{name:<11} {what:<22} {'-':>12} {'-':>11} {r[key]:>14,.0f}")
    if result["stores"]:
        lines.append(
            "floor/batch: one transaction per batch; floor/same: transactions of the size the"
            " writer used (it merges queued batches); ratio = chrono / floor/same"
        )
    if "sqlite_writers" in result:
        lines += render_writers(result["sqlite_writers"])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=BatchConfig().max_feeds)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-batch", type=int, default=1000,
                        help="feeds per write in the SQLite writer comparison")  # fmt: skip
    parser.add_argument("--writers-only", action="store_true",
                        help="only the SQLite writer comparison")  # fmt: skip
    parser.add_argument("--postgres-paths", action="store_true",
                        help="only PostgreSQL's direct COPY vs its staging path")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.stores.split(",") if n.strip()]
    if unknown := set(names) - TARGETS.keys():
        raise SystemExit(f"unknown stores: {', '.join(sorted(unknown))}")
    if min(args.feeds, args.batch, args.repeat, args.write_batch) < 1:
        raise SystemExit("--feeds, --batch, --write-batch and --repeat must be positive")
    feeds = make_feeds(args.feeds)
    if args.postgres_paths:
        for name, (rate, cpu_us) in postgres_paths(feeds, args.batch, args.repeat).items():
            print(f"postgresql {name:<22} {rate:>10,.0f} rows/s, {cpu_us:.2f} us CPU/row here"
                  f" (batch {args.batch}, best of {args.repeat})")  # fmt: skip
        return 0
    batches = [feeds[i : i + args.batch] for i in range(0, len(feeds), args.batch)]
    result: dict[str, Any] = {"feeds": args.feeds, "batch": args.batch, "repeat": args.repeat,
                              "cpus": os.cpu_count(), "stores": {}}  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
            for name in [] if args.writers_only else names:
                with TARGETS[name](Path(tmp)) as target:
                    result["stores"][name] = measure(target, batches, args.repeat, Path(tmp))
            if "sqlite" in names:
                texts = [msgspec.structs.replace(f, text=feed_text(f)) for f in feeds]
                per_write = [texts[i : i + args.write_batch]
                             for i in range(0, len(texts), args.write_batch)]  # fmt: skip
                result["sqlite_writers"] = writer_rates(per_write, args.repeat, Path(tmp) / "w")
    except (BenchError, PostgresMissing, StoreError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except trio.TooSlowError:
        print(f"bench failed: a store did not open within {OPEN_TIMEOUT_S} s", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
