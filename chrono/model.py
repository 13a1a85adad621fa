"""PriceFeed, the one shape every tick takes, and the rules a feed must pass.

A feed's identity is (source, symbol, timestamp, price): the same four arriving twice are one
feed. Prices are ``Decimal`` end to end, so they read back digit for digit as the exchange sent
them (``"67234.56000000"`` keeps its zeros).

Precision rule: the seed allowed at most 8 decimal places. Exchanges quote low-priced assets
finer than that (Kraken quotes PEPE/USD with 9-10 places), so Chrono allows up to
``MAX_DECIMAL_PLACES`` (18, configurable) and at most ``MAX_DIGITS`` significant digits, which
both stores keep exactly (SQLite as text, PostgreSQL as ``numeric``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from chrono.errors import InvalidFeed

MAX_DECIMAL_PLACES = 18
MAX_DIGITS = 38


class FeedText(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A feed's amounts and times as the store writes them (``decimal_text``,
    ``fixed_time_text``).

    An adapter's fast path has these texts from the exchange already (it checks they are in
    canonical form), so it hands them on and the writer formats nothing; every other feed gets
    them from ``feed_text``.
    """

    price: str
    volume: str | None
    bid: str | None
    ask: str | None
    timestamp: str
    received_at: str


class PriceFeed(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One normalized tick. ``timestamp`` is exchange time (UTC), ``received_at`` ours.

    ``text``, when set, is the same values as the store's text (``FeedText``): a cache, so
    equality and hashing leave it out. Untracked by the cyclic GC (``gc=False``): a feed holds
    no reference back to anything that holds it, and at 100k feeds/s the collector's passes
    over millions of feeds cost more than the parsing.
    """

    symbol: str
    price: Decimal
    timestamp: datetime
    received_at: datetime
    source: str
    worker_id: str
    volume: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    metadata: dict[str, Any] = {}
    text: FeedText | None = None

    def __eq__(self, other: object) -> bool:
        if type(other) is not PriceFeed:
            return NotImplemented
        return _values(self) == _values(other)

    def __hash__(self) -> int:
        return hash(_values(self)[:-1])  # metadata is a dict: what differs is in the key

    def key(self) -> FeedKey:
        """The identity that makes a feed a duplicate of another."""
        if (text := self.text) is not None:
            return FeedKey(self.source, self.symbol, text.timestamp, text.price)
        timestamp, price = fixed_time_text(self.timestamp), decimal_text(self.price)
        return FeedKey(self.source, self.symbol, timestamp, price)


def _values(f: PriceFeed) -> tuple[Any, ...]:
    return (f.symbol, f.price, f.timestamp, f.received_at, f.source, f.worker_id, f.volume,
            f.bid, f.ask, f.metadata)  # fmt: skip


def feed_text(feed: PriceFeed) -> FeedText:
    """The store's text of ``feed``: its own ``text`` if the adapter gave it, else formatted."""
    if feed.text is not None:
        return feed.text
    text = optional_decimal_text
    return FeedText(
        price=decimal_text(feed.price),
        volume=text(feed.volume),
        bid=text(feed.bid),
        ask=text(feed.ask),
        timestamp=fixed_time_text(feed.timestamp),
        received_at=fixed_time_text(feed.received_at),
    )


class WireFeed(msgspec.Struct, kw_only=True):
    """A feed as JSON clients see it: decimal strings in plain notation, ``Z`` times."""

    symbol: str
    price: str
    volume: str | None
    bid: str | None
    ask: str | None
    timestamp: str
    received_at: str
    source: str
    worker_id: str
    metadata: dict[str, Any]


def to_wire(feed: PriceFeed) -> WireFeed:
    text = optional_decimal_text
    return WireFeed(
        symbol=feed.symbol,
        price=decimal_text(feed.price),
        volume=text(feed.volume),
        bid=text(feed.bid),
        ask=text(feed.ask),
        timestamp=time_text(feed.timestamp),
        received_at=time_text(feed.received_at),
        source=feed.source,
        worker_id=feed.worker_id,
        metadata=feed.metadata,
    )


class FeedKey(NamedTuple):
    """A feed's identity in the store's text (``FeedText``): SQLite's unique key exactly.

    Text, not ``datetime``/``Decimal``: their hashes cost ~0.9 us a feed, a tenth of the whole
    budget at 100k feeds/s. PostgreSQL's ``numeric`` key also merges prices that differ only in
    trailing zeros (``1.50``, ``1.5``); an exchange that sent both for one trade would pass the
    fan-out twice and be stored once.
    """

    source: str
    symbol: str
    timestamp: str
    price: str


class Bounds(NamedTuple):
    """Inclusive per-symbol price bounds; ``None`` leaves that side open."""

    low: Decimal | None
    high: Decimal | None


def decimal_text(value: Decimal) -> str:
    """Plain positional text: ``str()`` would write 0.000000012345678901 as 1.2345678901E-8."""
    return format(value, "f")


def optional_decimal_text(value: Decimal | None) -> str | None:
    """``decimal_text`` of an amount a feed may lack (volume, bid, ask)."""
    return None if value is None else decimal_text(value)


def time_text(value: datetime) -> str:
    """ISO 8601 UTC with ``Z``, as on the wire."""
    return value.isoformat().replace("+00:00", "Z")


def fixed_time_text(value: datetime) -> str:
    """Fixed-width UTC text (``2024-12-07T18:00:00.542551Z``), so text order is time order:
    how SQLite stores times, and the form an adapter's fast path checks exchange times for."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_symbol(base: str, quote: str) -> str:
    """Canonical ``BASE/QUOTE``."""
    return f"{base.upper()}/{quote.upper()}"


def is_canonical_symbol(symbol: str) -> bool:
    base, sep, quote = symbol.partition("/")
    return bool(sep and base and quote and base.isalnum() and quote.isalnum()) and (
        symbol == symbol.upper()
    )


def check_price(
    price: Decimal, *, max_places: int = MAX_DECIMAL_PLACES, bounds: Bounds | None = None
) -> None:
    """Raise ``InvalidFeed`` unless ``price`` is positive, finite, precise enough and in bounds."""
    if not price.is_finite():
        raise InvalidFeed("price_not_finite", str(price))
    if price <= 0:
        raise InvalidFeed("price_not_positive", str(price))
    _, digits, exponent = price.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > max_places:
        raise InvalidFeed("price_too_precise", str(price))
    if len(digits) > MAX_DIGITS:
        raise InvalidFeed("price_too_many_digits", str(price))
    if bounds is not None:
        if bounds.low is not None and price < bounds.low:
            raise InvalidFeed("price_below_bound", f"{price} < {bounds.low}")
        if bounds.high is not None and price > bounds.high:
            raise InvalidFeed("price_above_bound", f"{price} > {bounds.high}")


def check_amount(name: str, value: Decimal | None, max_places: int = MAX_DECIMAL_PLACES) -> None:
    """Raise ``InvalidFeed`` (``<name>_not_finite``, ``_negative``, ``_too_precise``,
    ``_too_many_digits``) unless an optional amount (volume, bid, ask) is absent, finite, not
    negative, and storable as plain text: ``1E+999999999`` would be a billion digits."""
    if value is None:
        return
    if not value.is_finite():
        raise InvalidFeed(f"{name}_not_finite", str(value))
    if value.is_signed():
        raise InvalidFeed(f"{name}_negative", str(value))
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > max_places:
        raise InvalidFeed(f"{name}_too_precise", f"{value} has over {max_places} places")
    if len(digits) + max(exponent, 0) > MAX_DIGITS:
        raise InvalidFeed(f"{name}_too_many_digits", f"{value} has over {MAX_DIGITS} digits")


class FeedRules:
    """Validation shared by every collector and by ingest: price rules plus time sanity."""

    def __init__(
        self,
        *,
        max_places: int = MAX_DECIMAL_PLACES,
        bounds: Mapping[str, Bounds] | None = None,
    ) -> None:
        self.max_places = max_places
        self.bounds = dict(bounds or {})
        self._good_symbols: set[str] = set()  # checked once each: the hot path is per feed

    def check(self, feed: PriceFeed) -> None:
        """Raise ``InvalidFeed`` (with a countable reason) if ``feed`` must not be stored."""
        if feed.symbol not in self._good_symbols:
            if not is_canonical_symbol(feed.symbol):
                raise InvalidFeed("bad_symbol", feed.symbol)
            self._good_symbols.add(feed.symbol)
        check_price(feed.price, max_places=self.max_places, bounds=self.bounds.get(feed.symbol))
        check_amount("volume", feed.volume)
        check_amount("bid", feed.bid)
        check_amount("ask", feed.ask)
        if feed.timestamp.tzinfo is None or feed.timestamp.utcoffset():
            raise InvalidFeed("timestamp_not_utc", feed.timestamp.isoformat())


class RecentKeys:
    """A bounded memory of feed keys seen lately, to drop a repeated feed once.

    Exchanges repeat the last tick after every (re)subscribe; the store's unique key catches
    anything older than this window. Two generations of sets: a key is remembered for at least
    ``capacity / 2`` and at most ``capacity`` later keys, for one set insert per key (an
    ordered dict costs several times that, at 100k feeds/s).
    """

    def __init__(self, capacity: int = 50_000) -> None:  # ~10 MB; minutes of a busy feed
        self._half = max(1, capacity // 2)
        self._current: set[tuple[Any, ...]] = set()
        self._previous: set[tuple[Any, ...]] = set()

    def __contains__(self, key: FeedKey) -> bool:
        """Whether ``key`` is in the window (without remembering it)."""
        return key in self._current or key in self._previous

    def forget(self, keys: Iterable[FeedKey]) -> None:
        """Remove ``keys`` from the window (feeds that were not taken after all)."""
        for key in keys:
            self._current.discard(key)
            self._previous.discard(key)

    def first_time(self, key: tuple[Any, ...]) -> bool:
        """True the first time ``key`` (a ``FeedKey``, or the plain tuple equal to it) is seen
        within the window; remembers it."""
        if key in self._current or key in self._previous:
            return False
        self._remember(key)
        return True

    def first_seen(self, keys: Sequence[tuple[Any, ...]]) -> list[int] | None:
        """Which of ``keys`` are new (a repeat within ``keys`` too), remembered now: ``None``
        if all are, else the indices of the new ones. The fan-out's check, on a read's keys as
        plain tuples (equal to their ``FeedKey``).

        The common read, all new and no generation turning over, is checked and remembered
        by set operations on all its keys at once; anything else goes key by key."""
        current, previous = self._current, self._previous
        if (
            len(current) + len(keys) < self._half
            and current.isdisjoint(keys)
            and previous.isdisjoint(keys)
        ):
            before = len(current)
            current.update(keys)
            if len(current) - before == len(keys):
                return None
            current.difference_update(keys)  # a repeat within keys: none was there before
        first_time = self.first_time
        return [i for i, key in enumerate(keys) if first_time(key)]

    def _remember(self, key: tuple[Any, ...]) -> None:
        current = self._current
        current.add(key)
        if len(current) >= self._half:
            self._previous, self._current = current, set()
