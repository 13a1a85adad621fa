"""PriceFeed validation and the duplicate window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrono.errors import InvalidFeed
from chrono.feeds import Feeds
from chrono.model import (
    Bounds,
    FeedRules,
    PriceFeed,
    RecentKeys,
    decimal_text,
    feed_text,
    to_wire,
)
from tests.feeds import make_feed


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("0", "price_not_positive"),
        ("-1.5", "price_not_positive"),
        ("NaN", "price_not_finite"),
        ("Infinity", "price_not_finite"),
        ("0.0000000000000000001", "price_too_precise"),  # 19 places
        ("1" * 39, "price_too_many_digits"),
    ],
)
def test_bad_prices_are_rejected_with_a_reason(price: str, reason: str) -> None:
    with pytest.raises(InvalidFeed) as info:
        FeedRules().check(make_feed(price=price))
    assert info.value.reason == reason


def test_good_prices_pass() -> None:
    for price in ("67234.56", "0.000000012345678901", "67234.56000000", "1"):
        FeedRules().check(make_feed(price=price))


def test_precision_and_bounds_are_configurable() -> None:
    rules = FeedRules(max_places=8, bounds={"BTC/USD": Bounds(Decimal(1000), Decimal(10**7))})
    rules.check(make_feed(price="67234.12345678"))
    with pytest.raises(InvalidFeed, match="price_too_precise"):
        rules.check(make_feed(price="67234.123456789"))
    with pytest.raises(InvalidFeed, match="price_below_bound"):
        rules.check(make_feed(price="999.99"))
    with pytest.raises(InvalidFeed, match="price_above_bound"):
        rules.check(make_feed(price="10000000.01"))
    rules.check(make_feed(symbol="ETH/USD", price="0.5"))  # no bounds for ETH/USD


def test_symbol_and_time_rules() -> None:
    with pytest.raises(InvalidFeed, match="bad_symbol"):
        FeedRules().check(make_feed(symbol="btc-usd"))
    feed = make_feed()
    local = msgspec.structs.replace(
        feed, timestamp=feed.timestamp.astimezone(timezone(timedelta(hours=2)))
    )
    with pytest.raises(InvalidFeed, match="timestamp_not_utc"):
        FeedRules().check(local)
    naive = msgspec.structs.replace(feed, timestamp=datetime(2026, 1, 1))
    with pytest.raises(InvalidFeed, match="timestamp_not_utc"):
        FeedRules().check(naive)


def test_recent_keys_drop_a_repeat_once_within_the_window() -> None:
    recent = RecentKeys(capacity=3)
    feeds = [make_feed(i) for i in range(4)]
    assert [recent.first_time(f.key()) for f in feeds] == [True] * 4
    assert recent.first_time(feeds[3].key()) is False
    assert recent.first_time(feeds[0].key()) is True  # fell out of the window
    assert recent.first_time(make_feed(3, price="1").key()) is True  # another price


def with_text(i: int) -> PriceFeed:
    """A feed that carries its store text, as a fast path's do (the key is read from it)."""
    feed = make_feed(i)
    return msgspec.structs.replace(feed, text=feed_text(feed))


# Reads of feeds 0..9 (text or not, repeats within a read too), into windows small enough
# that generations turn over inside a read.
READS = st.lists(
    st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=8), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 12), reads=READS)
def test_first_seen_of_a_read_is_first_time_of_each_key_in_turn(
    capacity: int, reads: list[list[tuple[int, bool]]]
) -> None:
    bulk, one_by_one = RecentKeys(capacity), RecentKeys(capacity)
    for read in reads:
        feeds = [with_text(i) if text else make_feed(i) for i, text in read]
        expected = [i for i, f in enumerate(feeds) if one_by_one.first_time(f.key())]
        fresh = bulk.first_seen(Feeds.of(feeds).keys())
        assert (list(range(len(feeds))) if fresh is None else fresh) == expected
    for i in range(10):
        assert (make_feed(i).key() in bulk) == (make_feed(i).key() in one_by_one)


def test_wire_form_keeps_digits_and_writes_z() -> None:
    wire = to_wire(make_feed(price="0.000000012345678901"))
    assert wire.price == "0.000000012345678901"
    assert wire.timestamp == "2026-11-20T12:00:00.123456Z"
    assert decimal_text(Decimal("67234.56000000")) == "67234.56000000"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("volume", "NaN", "volume_not_finite"),
        ("bid", "-0.5", "bid_negative"),
        ("ask", "1E+999999999", "ask_too_many_digits"),  # a billion digits written out
        ("volume", "1E-999999999", "volume_too_precise"),
        ("bid", "1" * 39, "bid_too_many_digits"),
    ],
)
def test_an_amount_that_cannot_be_stored_rejects_the_feed(
    field: str, value: str, reason: str
) -> None:
    feed = msgspec.structs.replace(make_feed(), **{field: Decimal(value)})
    with pytest.raises(InvalidFeed) as caught:
        FeedRules().check(feed)
    assert caught.value.reason == reason


def test_amounts_within_range_pass() -> None:
    fine = {"volume": Decimal("0"), "bid": Decimal("0." + "0" * 17 + "1"), "ask": Decimal("9" * 38)}
    FeedRules().check(msgspec.structs.replace(make_feed(), **fine))
