"""The PostgreSQL writer's two paths, on a real throwaway cluster: a batch of new feeds is
COPYd straight into ``price_feeds`` (the direct path); a batch that meets a stored feed, or holds
one feed twice, rolls back to its savepoint and goes through the staging table. Both add
exactly the new feeds, say how many, keep every digit, and are all or nothing; each in binary
COPY and, for feeds that carry their texts (``PriceFeed.text``), in text COPY."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from chrono.errors import StoreError
from chrono.feeds import COLUMNS, Feeds
from chrono.model import PriceFeed, decimal_text, feed_text
from chrono.store import PostgresStore
from chrono.testing.postgres import PostgresCluster
from tests.feeds import T0, make_feed

# How a batch comes: objects without texts (binary COPY), with texts (an adapter's fast path,
# text COPY), or the pipeline's columns with no object made (text COPY from the columns).
pytestmark = pytest.mark.parametrize(
    "texts", [False, True, "columns"], ids=["binary", "text", "columns"]
)

TRICKY_PRICES = [
    "67234.56000000",
    "0.000000012345678901",
    "1000",
    "99999999999999.99",
    "0.10",
    "12345678901234567890.123456789012345678",
]
END = T0.replace(year=T0.year + 1)


def feeds_of(feeds: Sequence[PriceFeed], texts: bool | str) -> Sequence[PriceFeed]:
    """The feeds as the ``texts`` mode (``pytestmark``) hands them on."""
    if texts == "columns":
        return Feeds(*(list(getattr(Feeds.of(feeds), name)) for name in COLUMNS))
    if not texts:
        return list(feeds)
    return [msgspec.structs.replace(f, text=feed_text(f)) for f in feeds]


def batch(indexes: Sequence[int], texts: bool | str, **fields: Any) -> Sequence[PriceFeed]:
    feeds = [make_feed(i) for i in indexes]
    if fields:
        feeds = [msgspec.structs.replace(f, **fields) for f in feeds]
    return feeds_of(feeds, texts)


def rows(url: str, query: str = "SELECT count(*) FROM price_feeds") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def stored(url: str) -> int:
    count: int = rows(url)[0][0]
    return count


def paths(pg_store: PostgresStore) -> tuple[int, int]:
    return pg_store.direct_batches, pg_store.staged_batches


async def read_all(pg_store: PostgresStore) -> list[PriceFeed]:
    return await pg_store.feeds_between("BTC/USD", T0, END)


async def test_a_fresh_batch_goes_straight_in(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    feeds = batch(range(200), texts)
    with trio.fail_after(30):
        assert await pg_store.write(feeds) == 200
        assert paths(pg_store) == (1, 0)
        assert await read_all(pg_store) == feeds
    assert stored(pg_url) == 200
    stats = pg_store.statistics()
    assert (stats.rows_written, stats.batches_written) == (200, 1)


async def test_a_batch_with_a_stored_feed_is_staged_and_adds_only_the_new(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    with trio.fail_after(30):
        assert await pg_store.write(batch(range(5), texts)) == 5
        mixed = batch([10, 11, 3, 12, 13], texts)  # feed 3 is stored already
        assert await pg_store.write(mixed) == 4
        assert paths(pg_store) == (1, 1)
        assert await read_all(pg_store) == [make_feed(i) for i in (0, 1, 2, 3, 4, 10, 11, 12, 13)]
        assert await pg_store.write(batch([20, 21], texts)) == 2  # and the next goes direct again
        assert paths(pg_store) == (2, 1)
    assert stored(pg_url) == 11
    assert pg_store.statistics().rows_written == 11


async def test_a_feed_twice_in_one_batch_is_stored_once(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    with trio.fail_after(30):
        assert await pg_store.write(batch([0, 1, 1, 2, 0], texts)) == 3
        assert paths(pg_store) == (0, 1)
        assert await read_all(pg_store) == [make_feed(i) for i in (0, 1, 2)]
    assert stored(pg_url) == 3


async def test_a_batch_written_again_adds_nothing(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    feeds = batch(range(50), texts)
    with trio.fail_after(30):
        assert await pg_store.write(feeds) == 50
        assert await pg_store.write(feeds) == 0  # committed, answer lost, written again
        assert await pg_store.write(list(reversed(feeds))) == 0
        assert paths(pg_store) == (1, 2)
    assert stored(pg_url) == 50
    assert pg_store.statistics().rows_written == 50


async def test_values_read_back_digit_for_digit_on_both_paths(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    first = [msgspec.structs.replace(make_feed(i), price=Decimal(p), volume=Decimal(p),
                                     bid=Decimal(p), ask=Decimal(p))
             for i, p in enumerate(TRICKY_PRICES)]  # fmt: skip
    # The same prices at other times, behind a stored feed: the staging path.
    second = [msgspec.structs.replace(f, timestamp=f.timestamp.replace(second=30)) for f in first]
    with trio.fail_after(30):
        assert await pg_store.write(feeds_of(first, texts)) == len(first)
        assert await pg_store.write(feeds_of([first[0], *second], texts)) == len(second)
        assert paths(pg_store) == (1, 1)
        back = await read_all(pg_store)
    assert back == first + second
    expected = TRICKY_PRICES * 2
    for feed, text in zip(back, expected, strict=True):
        amounts = (feed.price, feed.volume, feed.bid, feed.ask)
        assert [decimal_text(v) for v in amounts if v is not None] == [text] * 4
    as_text = rows(pg_url, "SELECT price::text, volume::text FROM price_feeds ORDER BY id")
    assert as_text == [(p, p) for p in expected]
    times = rows(pg_url, "SELECT timestamp, received_at FROM price_feeds ORDER BY id LIMIT 1")
    assert times == [(first[0].timestamp, first[0].received_at)]  # to the microsecond


async def test_missing_volume_bid_ask_are_null_on_both_paths(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    bare = batch(range(3), texts, volume=None, bid=None, ask=None)
    with trio.fail_after(30):
        assert await pg_store.write(bare) == 3
        assert await pg_store.write(batch([2, 3, 4], texts, volume=None, bid=None, ask=None)) == 2
        assert paths(pg_store) == (1, 1)
        back = await read_all(pg_store)
    assert [(f.volume, f.bid, f.ask) for f in back] == [(None, None, None)] * 5
    nulls = "SELECT count(*) FROM price_feeds WHERE volume IS NULL AND bid IS NULL AND ask IS NULL"
    assert rows(pg_url, nulls) == [(5,)]


async def test_strings_and_metadata_survive_copy(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    """Text COPY escapes what needs it (tab, newline, backslash), as binary needs none."""
    odd = {"note": "tab\tnew\nline back\\slash \u00e9\u20ac", "n": [1, None, True], "x": 1.5}
    feeds = batch(range(2), texts, worker_id="w\t1\\", metadata=odd)
    with trio.fail_after(30):
        assert await pg_store.write(feeds) == 2
        assert await pg_store.write(batch([1, 2], texts, worker_id="w\t1\\", metadata=odd)) == 1
        back = await read_all(pg_store)
    assert [(f.worker_id, f.metadata) for f in back] == [("w\t1\\", odd)] * 3


async def test_a_batch_is_all_or_nothing_on_both_paths(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    """A row the server refuses fails the whole batch, whichever path it was on: the direct
    COPY, or the staging one after the direct COPY met a stored feed (the server checks the key
    as it flushes its buffered rows, every 1000 at most: the refused row comes later)."""
    bad = msgspec.structs.replace(make_feed(9999), metadata={"nul": "\x00"})  # jsonb refuses
    with trio.fail_after(30):
        assert await pg_store.write(batch([0], texts)) == 1
        with pytest.raises(StoreError, match=r"COPY price_feeds, line 3"):
            await pg_store.write(feeds_of([make_feed(1), make_feed(2), bad], texts))
        staged = feeds_of([make_feed(0), *(make_feed(i) for i in range(1, 1500)), bad], texts)
        with pytest.raises(StoreError, match=r"COPY price_feeds_incoming, line 1501"):
            await pg_store.write(staged)
        assert paths(pg_store) == (1, 0)
        assert await read_all(pg_store) == [make_feed(0)]
        assert await pg_store.write(batch([1, 2], texts)) == 2  # the session is fine afterwards
    assert stored(pg_url) == 3
    assert pg_store.statistics().rows_written == 3


async def test_a_batch_of_feeds_with_and_without_texts(
    pg_store: PostgresStore, pg_url: str, texts: bool | str
) -> None:
    """One feed without texts: the batch goes in binary; the values are the same."""
    mixed = [*batch([0, 1], texts), make_feed(2)]
    with trio.fail_after(30):
        assert await pg_store.write(mixed) == 3
        assert await pg_store.write([make_feed(1), *batch([3], texts)]) == 1
        assert paths(pg_store) == (1, 1)
        assert await read_all(pg_store) == [make_feed(i) for i in range(4)]


# --- TimescaleDB: the same paths on a hypertable, where the server has the extension ------


@pytest.fixture
def timescale_cluster(pg_url: str) -> Iterator[PostgresCluster]:
    """A cluster of its own that preloads TimescaleDB; a skip where it is not installed."""
    if not rows(pg_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        pytest.skip("TimescaleDB is not installed on this machine's PostgreSQL")
    cluster = PostgresCluster()
    try:
        cluster.init()
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'timescaledb'\n")
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


async def test_a_hypertable_takes_both_paths(
    timescale_cluster: PostgresCluster, texts: bool | str
) -> None:
    url = timescale_cluster.create_database("hyper")
    pg_store = PostgresStore(url)
    try:
        with trio.fail_after(60):
            await pg_store.open()
            assert pg_store.timescale.active, pg_store.timescale.detail
            assert await pg_store.write(batch(range(5), texts)) == 5
            assert await pg_store.write(batch([3, 4, 5, 5, 6], texts)) == 2
            assert await pg_store.write(batch(range(7), texts)) == 0
            assert paths(pg_store) == (1, 2)
            assert await read_all(pg_store) == [make_feed(i) for i in range(7)]
    finally:
        await pg_store.aclose()
    assert stored(url) == 7
