"""``Feeds``, the pipeline's columns: every operation agrees with the same operation on a list
of ``PriceFeed`` objects, a feed made from the columns equals the one they came from (and
keeps the store's texts), and a given object is handed back as itself."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrono.feeds import COLUMNS, Feeds, metadata_text
from chrono.model import PriceFeed, feed_text
from chrono.pipeline.latest import LatestPrices
from tests.feeds import T0, make_feed


def columns_only(feeds: Feeds) -> Feeds:
    """The same columns with no object kept: every feed read from it is made from text."""
    return Feeds(*(list(getattr(feeds, name)) for name in COLUMNS))


def varied(i: int) -> PriceFeed:
    """Feeds that differ in every column the columns keep, amounts missing too."""
    feed = make_feed(i, symbol=("BTC/USD", "ETH/EUR")[i % 2], price=f"{i + 1}.{i % 7}0",
                     source=("coinbase", "kraken")[i % 3 % 2])  # fmt: skip
    return msgspec.structs.replace(
        feed,
        volume=None if i % 4 == 0 else feed.volume,
        ask=None if i % 5 == 0 else Decimal("0.000000000000000001"),
        received_at=feed.received_at + timedelta(seconds=i % 3),
        metadata={"trade_id": i, "sequence": None, "nested": {"x": [i, "y"]}},
    )


def test_a_feed_made_from_the_columns_is_the_feed_they_came_from() -> None:
    feeds = [varied(i) for i in range(12)]
    made = columns_only(Feeds.of(feeds))
    assert list(made) == feeds
    for original, again in zip(feeds, made, strict=True):
        assert again.text == feed_text(original)
        assert str(again.price) == str(original.price)  # trailing zeros kept
        assert again.timestamp.tzinfo is not None
        assert again.timestamp == original.timestamp
        assert again.metadata == original.metadata
    assert made.metadata == [metadata_text(f.metadata) for f in feeds]
    assert made[3] is made[3]  # made once


def test_given_objects_are_handed_back_as_themselves() -> None:
    feeds = [varied(i) for i in range(6)]
    of = Feeds.of(feeds)
    assert [id(f) for f in of] == [id(f) for f in feeds]
    assert of[-1] is feeds[-1]
    assert Feeds.of(of) is of
    joined = Feeds.join([of[4:], columns_only(of)[:2], of[::2]])
    assert joined[0] is feeds[4]
    assert joined[1] is feeds[5]
    assert joined[2] is not feeds[0]
    assert joined[2] == feeds[0]
    assert [id(f) for f in joined[4:]] == [id(f) for f in feeds[::2]]
    with pytest.raises(IndexError):
        of[6]


def test_keys_are_the_feed_keys() -> None:
    feeds = [varied(i) for i in range(8)]
    assert Feeds.of(feeds).keys() == [f.key() for f in feeds]


def test_exchange_latencies_are_receive_minus_exchange_time() -> None:
    feeds = [varied(i) for i in range(10)]  # receive times of three seconds: not one read's
    one_read = [msgspec.structs.replace(f, received_at=T0 + timedelta(seconds=2)) for f in feeds]
    minutes = [  # one read's exchange times across a minute's end, and an hour's
        msgspec.structs.replace(f, timestamp=T0.replace(minute=59) + timedelta(seconds=i * 7))
        for i, f in enumerate(one_read)
    ]
    for batch in (feeds, one_read, minutes):
        expected = [(f.received_at - f.timestamp).total_seconds() for f in batch]
        assert columns_only(Feeds.of(batch)).exchange_latencies() == pytest.approx(expected)


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("slice"),
            st.integers(-3, 12),
            st.integers(-3, 12),
            st.sampled_from([None, 1, 2, 3, -1]),
        ),
        st.tuples(st.just("select"), st.lists(st.integers(0, 40), max_size=6)),
        st.tuples(st.just("join"), st.integers(0, 3)),
        st.tuples(
            st.just("columns"),
        ),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 10), ops=OPS)
def test_every_operation_agrees_with_a_list(size: int, ops: list[tuple[object, ...]]) -> None:
    model = [varied(i) for i in range(size)]
    feeds = Feeds.of(model)
    for op, *args in ops:
        if op == "slice":
            start, stop, step = args
            piece = slice(start, stop, step)  # type: ignore[arg-type]
            model, feeds = model[piece], feeds[piece]
        elif op == "select":
            indices = [i % len(model) for i in args[0]] if model else []  # type: ignore[attr-defined]
            model, feeds = [model[i] for i in indices], feeds.select(indices)
        elif op == "join":
            copies = int(args[0])  # type: ignore[call-overload]
            model = model * copies
            feeds = Feeds.join([feeds] * copies) if copies else Feeds.of([])
        else:
            feeds = columns_only(feeds)
        assert len(feeds) == len(model)
        assert feeds == model
        assert list(feeds) == model
        assert feeds.keys() == [f.key() for f in model]


def test_latest_prices_keep_the_newest_of_a_read_in_any_order() -> None:
    """A read's feeds out of time order: the newest of each (symbol, source) is held, a later
    feed winning a tie, and an older read never moves it back."""
    feeds = [make_feed(i, price=str(100 + i)) for i in (5, 9, 2, 9, 1)]
    latest = LatestPrices()
    latest.update(columns_only(Feeds.of(feeds)))
    held = latest.get("BTC/USD", "coinbase")
    assert held == feeds[3]  # the second of the two at 9
    latest.update(Feeds.of([make_feed(3, price="1")]))
    assert latest.get("BTC/USD", "coinbase") == feeds[3]
    in_order = [make_feed(i, price=str(200 + i), source=s) for i in (10, 11) for s in ("a", "b")]
    latest.update(Feeds.of(in_order))
    assert latest.by_source("BTC/USD") == {
        "coinbase": feeds[3], "a": in_order[2], "b": in_order[3]}  # fmt: skip
