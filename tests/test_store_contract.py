"""One contract for every store, run on SQLite and on a throwaway PostgreSQL cluster: rows read
back digit for digit, each feed once, the read side (latest, as-of consensus inputs, ranges and
their keyset pages, candles and their pages), migrations, and a store that is not there at
start opening on a later write. tests/test_store_history.py reuses the fixtures."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
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
from chrono.store import INTERVALS, Candle, FeedPage, PostgresStore, RowKey, SQLiteStore, Store
from chrono.store import postgres as pg_module
from chrono.store import sqlite as sqlite_module
from chrono.store.candles import candles_of
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


async def test_latest_by_source_as_of_a_time(store: Store) -> None:
    """``until`` is inclusive: each source's newest feed at or before it, the window's start
    still applies, and of two feeds at one time the one inserted last wins (not the higher
    price)."""
    await store.write(
        [
            feed_at(0, "1.0"),
            feed_at(10, "1.1"),
            feed_at(20, "1.2"),  # after the as-of time
            feed_at(5, "2.0", source="kraken"),
            feed_at(10, "2.1", source="kraken"),  # at the as-of time exactly
            feed_at(12, "9", source="bitstamp"),  # only after it
            feed_at(1, "0.5", source="okx"),  # before the window
            feed_at(8, "50", symbol="ETH/USD", source="okx"),
        ]
    )
    await store.write([feed_at(10, "1.05"), feed_at(10, "2.2", source="kraken")])  # later ties

    found = await store.latest_by_source(["BTC/USD", "ETH/USD"], since=at(2), until=at(10))
    assert sorted((f.symbol, f.source, f.price) for f in found) == [
        ("BTC/USD", "coinbase", Decimal("1.05")),
        ("BTC/USD", "kraken", Decimal("2.2")),
        ("ETH/USD", "okx", Decimal("50")),
    ]
    assert found[0] == feed_at(10, "1.05")  # the whole feed, as written

    just_before = await store.latest_by_source(["BTC/USD"], since=at(2), until=at(9.999999))
    assert sorted((f.source, f.price) for f in just_before) == [
        ("kraken", Decimal("2.0")),
    ]
    unbounded = await store.latest_by_source(["BTC/USD"], since=at(2))
    assert sorted((f.source, f.price) for f in unbounded) == [
        ("bitstamp", Decimal("9")),
        ("coinbase", Decimal("1.2")),
        ("kraken", Decimal("2.2")),
    ]
    assert await store.latest_by_source(["BTC/USD"], since=at(11), until=at(11)) == []


async def walk(store: Store, limit: int, **kw: Any) -> list[FeedPage]:
    """Every page of ``BTC/USD`` in ``[at(0), at(9))``, following ``next``."""
    pages = [await store.feeds_page("BTC/USD", at(0), at(9), limit=limit, **kw)]
    while pages[-1].next is not None:
        after = pages[-1].next
        pages.append(
            await store.feeds_page("BTC/USD", at(0), at(9), limit=limit, after=after, **kw)
        )
        assert len(pages) < 100
    return pages


async def test_feeds_page_walks_a_range_once_in_key_order(store: Store) -> None:
    # 25 feeds, three to a timestamp, written one by one in a shuffled order: among feeds at
    # one time, the order is the order of writing (the row id).
    feeds = [
        feed_at(i // 3, f"{100 + i}", source="kraken" if i % 4 == 0 else "coinbase")
        for i in range(25)
    ]
    order = list(range(25))
    random.Random(7).shuffle(order)
    for i in order:
        await store.write([feeds[i]])
    outside = [feed_at(-0.000001, "1"), feed_at(9, "2"), feed_at(1, "3", symbol="ETH/USD")]
    await store.write(outside)
    expected = sorted(feeds, key=lambda f: (f.timestamp, order.index(feeds.index(f))))

    pages = await walk(store, 7)
    assert [len(p.feeds) for p in pages] == [7, 7, 7, 4]
    assert [f for p in pages for f in p.feeds] == expected
    keys = [p.next for p in pages[:-1]]
    assert all(key is not None for key in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert [k.timestamp for k in keys if k] == [p.feeds[-1].timestamp for p in pages[:-1]]

    # A range that fills its last page exactly ends there: no empty page after it.
    assert [len(p.feeds) for p in await walk(store, 5)] == [5, 5, 5, 5, 5]
    assert [f for p in await walk(store, 25) for f in p.feeds] == expected
    assert (await store.feeds_page("BTC/USD", at(0), at(9), limit=1000)).next is None

    kraken = await walk(store, 2, source="kraken")
    assert [f for p in kraken for f in p.feeds] == [f for f in expected if f.source == "kraken"]
    assert [len(p.feeds) for p in kraken] == [2, 2, 2, 1]

    # Keys, not offsets: a feed that arrives behind the cursor does not shift the next page.
    first = await store.feeds_page("BTC/USD", at(0), at(9), limit=7)
    await store.write([feed_at(0, "0.5")])
    second = await store.feeds_page("BTC/USD", at(0), at(9), limit=7, after=first.next)
    assert second.feeds == expected[7:14]

    empty = await store.feeds_page("ETH/USD", at(2), at(9), limit=7)
    assert empty == FeedPage(feeds=[], next=None)
    beyond = RowKey(at(8), 2**62)
    assert await store.feeds_page("BTC/USD", at(0), at(9), limit=7, after=beyond) == empty
    with pytest.raises(ValueError, match="limit"):
        await store.feeds_page("BTC/USD", at(0), at(9), limit=0)


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


async def test_candles_with_a_limit_are_the_first_of_all_and_page_on(store: Store) -> None:
    day = datetime(2026, 11, 20, tzinfo=UTC)
    rng = random.Random(11)
    feeds = [
        feed_at(
            (day - T0).total_seconds() + rng.randrange(0, 6 * 3600 * 10) / 10,
            f"{rng.randrange(9_000, 11_000)}.{rng.randrange(100):02d}",
            source=rng.choice(["coinbase", "kraken"]),
            volume=Decimal(rng.randrange(1, 99)) if rng.random() < 0.8 else None,
        )
        for _ in range(400)
    ]
    await store.write(feeds)
    end = day + timedelta(hours=6)
    for interval, source in (("1m", None), ("15m", None), ("1h", "kraken")):
        every = await store.candles("BTC/USD", day, end, interval, source=source)
        assert len(every) > 3
        for limit in (1, 2, 3, len(every), len(every) + 5):
            got = await store.candles("BTC/USD", day, end, interval, source=source, limit=limit)
            assert got == every[:limit], (interval, limit)
        # Paging: ask again from the bucket after the last one returned.
        paged: list[Candle] = []
        start = day
        while page := await store.candles("BTC/USD", start, end, interval, source=source, limit=3):
            paged += page
            start = page[-1].timestamp + timedelta(seconds=INTERVALS[interval])
        assert paged == every
    with pytest.raises(ValueError, match="limit"):
        await store.candles("BTC/USD", day, end, "1m", limit=0)


def test_candles_with_a_limit_read_only_the_rows_they_need() -> None:
    """SQLite's candles come from its rows in Python: with a limit the rows are read up to the
    first of the bucket after the last one wanted, not to the end of the range."""
    read: list[str] = []

    def rows() -> Iterator[tuple[str, str, str | None]]:
        for minute in range(10_000):
            for second in (0, 30):
                read.append(sqlite_module.format_time(at(60 * minute + second)))
                yield read[-1], str(minute), None

    parse = sqlite_module.parse_time
    first_three = candles_of(rows(), 60, parse, limit=3)
    assert [c.num_feeds for c in first_three] == [2, 2, 2]
    assert len(read) == 7  # three buckets' rows and the row that starts a fourth
    assert candles_of(rows(), 60, parse, limit=3) == candles_of(rows(), 60, parse)[:3]


async def test_a_new_store_is_at_the_latest_version_and_reopening_changes_nothing(
    store: Store, target: Target
) -> None:
    latest = target.migrations()[-1].version
    assert latest == (3 if target.kind == "sqlite" else 2)
    assert await store.schema_version() == latest
    await store.write([make_feed(1)])
    again = target.make()
    await again.open()
    assert await again.schema_version() == latest
    await again.aclose()
    assert target.sql("SELECT COUNT(*) FROM chrono_schema_version") == [(latest,)]
    assert target.sql("SELECT COUNT(*) FROM price_feeds") == [(1,)]


async def test_a_store_at_version_1_migrates_to_2_keeping_its_rows(target: Target) -> None:
    old = target.make(target.migrations()[:1])
    await old.open()
    feeds = [make_feed(i, price=p) for i, p in enumerate(TRICKY_PRICES)]
    await old.write(feeds)
    assert await old.schema_version() == 1
    await old.aclose()

    store = target.make()
    with trio.fail_after(30):
        await store.open()
        assert await store.schema_version() == target.migrations()[-1].version
        assert await store.feeds_between("BTC/USD", T0, at(1)) == feeds
        await store.aclose()
    versions = target.sql("SELECT version, description FROM chrono_schema_version ORDER BY 1")
    assert [v for v, _ in versions] == [m.version for m in target.migrations()]
    assert "aggregated_prices" in versions[1][1]
    assert target.sql("SELECT COUNT(*) FROM aggregated_prices") == [(0,)]
    assert target.sql("SELECT COUNT(*) FROM ftso_rounds") == [(0,)]


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
