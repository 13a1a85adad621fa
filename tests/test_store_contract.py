"""One contract for every store, run on SQLite and on a throwaway PostgreSQL cluster: rows read
back digit for digit, each feed once, the read side (latest, range, candles), migrations, and a
store that is not there at start opening on a later write."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from chrono.errors import SchemaTooNew, StoreError
from chrono.model import PriceFeed, decimal_text
from chrono.store import Candle, PostgresStore, SQLiteStore, Store
from chrono.store import postgres as pg_module
from chrono.store import sqlite as sqlite_module
from chrono.store.migrations import Migration
from chrono.testing.postgres import PostgresCluster
from tests.feeds import T0, make_feed

TRICKY_PRICES = [
    "67234.56000000",
    "0.000000012345678901",
    "1000",
    "99999999999999.99",
    "0.1",
    "12345678901234567890.123456789012345678",  # 38 digits, 18 places: the limits
]


@dataclass
class Target:
    """A store's URL, and how to open it again and read it with its plain driver."""

    kind: str
    location: str  # a SQLite path or a PostgreSQL URL

    def make(self, migrations: Sequence[Migration] | None = None) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.location, migrations=migrations or sqlite_module.MIGRATIONS)
        return PostgresStore(self.location, migrations=migrations or pg_module.MIGRATIONS)

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.location) as db:
                return db.execute(query).fetchall()
        with psycopg.connect(self.location) as conn:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]

    def migrations(self) -> tuple[Migration, ...]:
        return sqlite_module.MIGRATIONS if self.kind == "sqlite" else pg_module.MIGRATIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", str(tmp_path / "chrono.db"))
    return Target("postgresql", request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(target: Target) -> AsyncIterator[Store]:
    opened = target.make()
    with trio.fail_after(30):
        await opened.open()
    yield opened
    await opened.aclose()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def feed_at(
    seconds: float, price: str, *, symbol: str = "BTC/USD", source: str = "coinbase", **kw: Any
) -> PriceFeed:
    base = make_feed(symbol=symbol, price=price, source=source)
    fields = {"timestamp": at(seconds), "received_at": at(seconds + 0.002), **kw}
    return PriceFeed(**{**{f: getattr(base, f) for f in PriceFeed.__struct_fields__}, **fields})


async def test_round_trip_digit_for_digit(store: Store, target: Target) -> None:
    feeds = [make_feed(i, price=p) for i, p in enumerate(TRICKY_PRICES)]
    assert await store.write(feeds) == len(feeds)
    # As the plain driver sees the table ...
    rows = target.sql("SELECT CAST(price AS TEXT), source, worker_id FROM price_feeds ORDER BY id")
    assert [r[0] for r in rows] == TRICKY_PRICES
    assert rows[0][1:] == ("coinbase", "coinbase-1")
    # ... and as the store reads it back: every field, prices with their zeros.
    back = await store.feeds_between("BTC/USD", T0, at(1))
    assert back == feeds
    assert [decimal_text(f.price) for f in back] == TRICKY_PRICES
    assert decimal_text(back[0].ask or Decimal(0)) == "67234.57000000"
    assert all(f.timestamp.utcoffset() == timedelta(0) for f in back)


async def test_a_feed_is_stored_once(store: Store, target: Target) -> None:
    feeds = [make_feed(i) for i in range(10)]
    assert await store.write(feeds) == 10
    assert await store.write([*feeds[5:], make_feed(10)]) == 1  # a replayed batch
    assert await store.write([make_feed(11), make_feed(11)]) == 1  # twice in one batch
    assert await store.write([make_feed(0, source="kraken")]) == 1  # another source
    assert await store.write([make_feed(0, price="67234.57")]) == 1  # another price
    assert target.sql("SELECT COUNT(*) FROM price_feeds") == [(14,)]


async def test_latest_per_symbol_and_source(store: Store) -> None:
    await store.write(
        [
            feed_at(2, "3.00"),
            feed_at(1, "2.00"),
            feed_at(3, "2.50", source="kraken"),
            feed_at(5, "4000.10", symbol="ETH/USD"),
        ]
    )
    latest = await store.latest(["ETH/USD", "BTC/USD", "DOGE/USD"])
    assert [(f.symbol, f.price, f.source) for f in latest] == [
        ("ETH/USD", Decimal("4000.10"), "coinbase"),
        ("BTC/USD", Decimal("2.50"), "kraken"),
    ]
    assert latest[1] == feed_at(3, "2.50", source="kraken")  # every field as written
    from_coinbase = await store.latest(["BTC/USD"], source="coinbase")
    assert [(f.price, f.source) for f in from_coinbase] == [(Decimal("3.00"), "coinbase")]
    assert await store.latest(["BTC/USD"], source="bitstamp") == []


async def test_latest_by_source_within_a_window(store: Store) -> None:
    await store.write(
        [
            feed_at(0, "1.0"),
            feed_at(10, "1.1"),
            feed_at(20, "1.2", source="kraken"),
            feed_at(25, "1.3", source="kraken"),
            feed_at(1, "0.9", source="bitstamp"),  # too old for the window
            feed_at(30, "50", symbol="ETH/USD", source="okx"),
        ]
    )
    found = await store.latest_by_source(["BTC/USD", "ETH/USD"], since=at(5))
    assert sorted((f.symbol, f.source, f.price) for f in found) == [
        ("BTC/USD", "coinbase", Decimal("1.1")),
        ("BTC/USD", "kraken", Decimal("1.3")),
        ("ETH/USD", "okx", Decimal("50")),
    ]


async def test_feeds_between_is_half_open_and_ordered(store: Store) -> None:
    feeds = [feed_at(s, f"{100 + s}") for s in (4, 1, 3, 0, 2)]
    await store.write([*feeds, feed_at(2.5, "7", source="kraken")])
    got = await store.feeds_between("BTC/USD", at(1), at(4))
    assert [(f.timestamp, f.price) for f in got] == [
        (at(1), Decimal("101")),
        (at(2), Decimal("102")),
        (at(2.5), Decimal("7")),
        (at(3), Decimal("103")),
    ]
    only = await store.feeds_between("BTC/USD", at(0), at(10), source="kraken")
    assert [f.price for f in only] == [Decimal("7")]
    limited = await store.feeds_between("BTC/USD", at(0), at(10), limit=2)
    assert [f.timestamp for f in limited] == [at(0), at(1)]
    assert await store.feeds_between("ETH/USD", at(0), at(10)) == []


def candle(start: datetime, o: str, h: str, lo: str, c: str, v: str | None, n: int) -> Candle:
    return Candle(
        timestamp=start,
        open=Decimal(o),
        high=Decimal(h),
        low=Decimal(lo),
        close=Decimal(c),
        volume=None if v is None else Decimal(v),
        num_feeds=n,
    )


async def test_candles_per_interval(store: Store) -> None:
    day = datetime(2026, 11, 20, tzinfo=UTC)
    minute = timedelta(minutes=1)

    def f(offset: timedelta, price: str, volume: str | None, source: str = "coinbase") -> Any:
        when = (day + offset - T0).total_seconds()
        return feed_at(
            when, price, source=source, volume=None if volume is None else Decimal(volume)
        )

    await store.write(
        [
            f(timedelta(seconds=5), "100.50", "10"),
            f(timedelta(seconds=20), "103.25", "11"),
            f(timedelta(seconds=40), "99.75", None),
            f(timedelta(seconds=59.999999), "101.00", "12"),
            f(minute + timedelta(seconds=1), "102", "13", source="kraken"),
            f(6 * minute, "110", "14"),
            f(timedelta(days=1, hours=2), "120", "15"),
        ]
    )
    one_minute = await store.candles("BTC/USD", day, day + timedelta(days=2), "1m")
    assert one_minute == [
        candle(day, "100.50", "103.25", "99.75", "101.00", "12", 4),
        candle(day + minute, "102", "102", "102", "102", "13", 1),
        candle(day + 6 * minute, "110", "110", "110", "110", "14", 1),
        candle(day + timedelta(days=1, hours=2), "120", "120", "120", "120", "15", 1),
    ]
    assert [decimal_text(c.open) for c in one_minute[:1]] == ["100.50"]  # scale kept
    five = await store.candles("BTC/USD", day, day + timedelta(hours=1), "5m")
    assert five == [
        candle(day, "100.50", "103.25", "99.75", "102", "13", 5),
        candle(day + 5 * minute, "110", "110", "110", "110", "14", 1),
    ]
    daily = await store.candles("BTC/USD", day, day + timedelta(days=2), "1d")
    assert [(c.timestamp, c.num_feeds, c.close) for c in daily] == [
        (day, 6, Decimal("110")),
        (day + timedelta(days=1), 1, Decimal("120")),
    ]
    kraken = await store.candles("BTC/USD", day, day + timedelta(days=2), "1h", source="kraken")
    assert kraken == [candle(day, "102", "102", "102", "102", "13", 1)]
    # Half-open: a range that starts inside a bucket takes only the feeds inside the range.
    later = await store.candles("BTC/USD", day + timedelta(seconds=30), day + minute, "1m")
    assert later == [candle(day, "99.75", "101.00", "99.75", "101.00", "12", 2)]


async def test_a_new_store_is_at_the_latest_version_and_reopening_changes_nothing(
    store: Store, target: Target
) -> None:
    latest = target.migrations()[-1].version
    assert await store.schema_version() == latest
    await store.write([make_feed(1)])
    again = target.make()
    await again.open()
    assert await again.schema_version() == latest
    await again.aclose()
    assert target.sql("SELECT COUNT(*) FROM chrono_schema_version") == [(latest,)]
    assert target.sql("SELECT COUNT(*) FROM price_feeds") == [(1,)]


async def test_pending_migrations_are_applied_and_recorded(store: Store, target: Target) -> None:
    await store.write([make_feed(1)])
    known = target.migrations()
    extra = Migration(known[-1].version + 1, "a probe table", ("CREATE TABLE probe (note TEXT)",))
    newer = target.make([*known, extra])
    await newer.open()
    assert await newer.schema_version() == extra.version
    await newer.aclose()
    versions = target.sql("SELECT version, description FROM chrono_schema_version ORDER BY 1")
    assert versions[-1] == (extra.version, "a probe table")
    assert target.sql("SELECT COUNT(*) FROM probe") == [(0,)]
    assert target.sql("SELECT COUNT(*) FROM price_feeds") == [(1,)]

    # The code that knows only the older migrations refuses the newer store.
    older = target.make(known)
    with pytest.raises(
        SchemaTooNew, match=rf"version {extra.version}, newer .* \({known[-1].version}\)"
    ):
        await older.open()
    await older.aclose()


async def test_a_store_that_is_not_there_at_start_opens_on_a_later_write(
    target: Target, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    mend: Callable[[], None]
    if target.kind == "sqlite":
        blocker = tmp_path / "not-yet"
        blocker.write_text("a file where the store's folder must be")
        missing = Target("sqlite", str(blocker / "chrono.db"))
        mend = blocker.unlink
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        name = f"later_{id(target)}"
        missing = Target("postgresql", cluster.url(name))

        def mend() -> None:
            cluster.create_database(name)

    store = missing.make()
    with trio.fail_after(30):
        with pytest.raises(StoreError):
            await store.open()
        with pytest.raises(StoreError):
            await store.write([make_feed(1)])
        with pytest.raises(StoreError):
            await store.latest(["BTC/USD"])
        mend()
        assert await store.write([make_feed(1), make_feed(2)]) == 2
        assert len(await store.latest(["BTC/USD"])) == 1
        await store.aclose()
    assert missing.sql("SELECT COUNT(*) FROM price_feeds") == [(2,)]
