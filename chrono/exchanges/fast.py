"""What every adapter's fast path shares: checks on the exchange's own text.

An adapter may have a fast path (``FastPath``) for its common frame: it decodes a whole read's
frames into Structs of strings and hands on ``Feeds`` that keep the exchange's text for the
store: Coinbase fills its columns directly, the others build ``PriceFeed``s with their
``FeedText`` and wrap them (``Feeds.of``). It may only keep a text whose meaning is unambiguous
and already in the store's form: a plain positional decimal (``67234.56000000``, never
``6.7E+4``, ``+1`` or ``01``) and a fixed-width UTC time (``2021-04-17T16:43:30.244075Z``).
``TextRules`` checks that, together with ``FeedRules``' price rules; anything else makes the
fast path give up on the read (``None``), and the adapter's full path parses it frame by frame,
counting what is wrong. So the fast path never decides differently, only sooner
(``tests/test_fast_path.py`` replays every recorded, simulated and fuzzed frame through both).

JSON lets a key repeat; msgspec keeps the last value but checks every one against the field's
type. So every adapter's full path keeps the fields its fast path reads as text raw
(``msgspec.Raw``, typed from the last key only by ``decoding.decode`` with ``at``), and the fast
Struct reads them as plain ``str``, checked after the decode: ``plain_decimal``, or one regex
call for all of a frame's texts (``texts_pattern``). Both paths then read the last key alone.
A msgspec ``pattern`` field would cost ~1 us a field, whatever the regex; one call for a whole
frame costs about what its matching does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Final, NamedTuple, Protocol, TypeVar, runtime_checkable

import msgspec

from chrono.feeds import Feeds
from chrono.model import (
    MAX_DECIMAL_PLACES,
    MAX_DIGITS,
    FeedRules,
    decimal_text,
    fixed_time_text,
)

T = TypeVar("T")

# Plain decimals and times only: [0-9], not \d (which takes any Unicode digit).
# Hours, minutes and seconds in range; the date is checked by ``real_date`` (February 30th).
TIME_RE: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
_TIME: Final = re.compile(TIME_RE).fullmatch

# A plain decimal with at most 20 whole digits and MAX_DECIMAL_PLACES places: inside FeedRules'
# amount range without a lookahead (bigger amounts are rare enough for the full path).
PLAIN_PLACES: Final = 18
PLAIN_RE: Final = rf"(?:0|[1-9][0-9]{{0,19}})(?:\.[0-9]{{1,{PLAIN_PLACES}}})?"
PLAIN_OR_EMPTY_RE: Final = f"(?:{PLAIN_RE})?"
"""``PLAIN_RE`` or ``""`` (an exchange's "no value")."""


def texts_pattern(*parts: str) -> Callable[[str], object]:
    """``fullmatch`` of ``parts`` joined by commas: one call checks all of a frame's texts,
    given as one comma-joined string (one regex call costs what its matching does here). No
    part matches a comma, so a text holding one fails the whole match."""
    return re.compile(",".join(parts)).fullmatch


class Received(NamedTuple):
    """When a read arrived, and that time in the store's text (formatted once per read)."""

    at: datetime
    text: str

    @classmethod
    def of(cls, at: datetime) -> Received:
        return cls(at, fixed_time_text(at))


class TextRules:
    """``FeedRules`` on text: ``None`` where the full path must decide."""

    def __init__(self, rules: FeedRules) -> None:
        self._bounds = rules.bounds
        self._places = rules.max_places
        # No bounds and places no tighter than PLAIN_RE's: a plain price needs only not be 0.
        self.nonzero_is_enough = not self._bounds and self._places >= PLAIN_PLACES

    def price(self, symbol: str, text: str) -> Decimal | None:
        """The price if ``text`` is canonical and passes every price rule, else ``None``."""
        if (value := plain_decimal(text, self._places)) is None:
            return None
        return self._in_rules(symbol, value)

    def price_of_plain(self, symbol: str, text: str) -> Decimal | None:
        """``price`` of text that matched ``PLAIN_RE`` (so only the places are checked)."""
        if self._too_precise(text):
            return None
        return self._in_rules(symbol, Decimal(text))

    def price_text(self, symbol: str, text: str) -> bool:
        """Whether text that matched ``PLAIN_RE`` is a price every rule takes, without making
        its ``Decimal`` unless ``symbol`` has bounds."""
        if self._too_precise(text):
            return False
        if not text.strip("0."):
            return False  # zero: price_not_positive, for the full path to count
        return symbol not in self._bounds or self._in_rules(symbol, Decimal(text)) is not None

    def _too_precise(self, text: str) -> bool:
        """Whether plain decimal text has more places than the rules allow."""
        return (dot := text.find(".")) >= 0 and len(text) - dot - 1 > self._places

    def _in_rules(self, symbol: str, value: Decimal) -> Decimal | None:
        if not value:
            return None  # zero: price_not_positive, for the full path to count
        if (bounds := self._bounds.get(symbol)) is not None and (
            (bounds.low is not None and value < bounds.low)
            or (bounds.high is not None and value > bounds.high)
        ):
            return None
        return value


def plain_decimal(text: str, places: int = MAX_DECIMAL_PLACES) -> Decimal | None:
    """The ``Decimal`` of plain positional text (``67234.56000000``, never ``6.7E+4``, ``+1``,
    ``01`` or ``1.``) with at most ``places`` places and ``MAX_DIGITS`` digits, else ``None``.

    String methods, not a regex: a fast Struct's fields are plain ``str`` (see the module
    docstring), so this runs once per number, and ``re`` costs several times as much here.
    """
    if len(text) > MAX_DIGITS + 1 or not text.isascii():  # ASCII: isdigit() is [0-9] only
        return None
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or (whole[0] == "0" and len(whole) > 1):
        return None
    if dot:
        if not fraction.isdigit() or len(fraction) > places:
            return None
    elif len(whole) > MAX_DIGITS:
        return None
    return Decimal(text)


def amount(text: str | None) -> Decimal | None:
    """The ``Decimal`` of an optional amount whose text matched ``PLAIN_RE``."""
    return None if text is None else Decimal(text)


def plain_text(value: Decimal) -> str | None:
    """``decimal_text`` of a finite, non-negative ``Decimal`` with no exponent, at most
    ``MAX_DIGITS`` digits and ``MAX_DECIMAL_PLACES`` places (FeedRules' amount range), else
    ``None``; for exchanges that send numbers, not text. (``1E-999999999``,
    which a JSON number or ``Decimal`` text may say, written out would be a billion digits.)"""
    sign, digits, exponent = value.as_tuple()
    if sign or not isinstance(exponent, int):  # negative, NaN or infinite
        return None
    if not -MAX_DECIMAL_PLACES <= exponent <= 0 or len(digits) > MAX_DIGITS:
        return None
    return decimal_text(value)


def utc_time(text: str) -> datetime | None:
    """The time of fixed-width ``...HH:MM:SS.ffffffZ`` text, else ``None`` (bad dates too)."""
    return None if _TIME(text) is None else time_of_fixed(text)


@lru_cache(maxsize=64)
def real_date(day: str) -> bool:
    """Whether ``YYYY-MM-DD`` (``text[:10]`` of a ``TIME_RE`` text) is a date: with the
    pattern, what ``time_of_fixed`` checks, without making a ``datetime`` (a read's feeds
    share a date or two, so the answer is cached)."""
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def time_of_fixed(text: str) -> datetime | None:
    """The time of text that matched ``TIME_RE``, ``None`` if no such date (February 30th)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of an epoch second: a read's frames share a few seconds."""
    return fixed_time_text(_EPOCH + timedelta(seconds=second))[:20]


def epoch_time(value: int, unit_us: int) -> tuple[datetime, str] | None:
    """``value`` units of ``unit_us`` µs since the epoch: the UTC time and its fixed-width
    text (``fixed_time_text``, without formatting it whole), or ``None`` if out of range."""
    micros = value * unit_us
    try:
        at = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None
    second, micro = divmod(micros, 1_000_000)
    return at, f"{_second_text(second)}{micro:06d}Z"


def decode_each(decoder: msgspec.json.Decoder[T], frames: Sequence[bytes]) -> list[T] | None:
    """Every frame decoded, or ``None`` if any fails (the full path then tells why)."""
    decode = decoder.decode
    try:
        return [decode(frame) for frame in frames]
    except (msgspec.DecodeError, UnicodeError):
        return None


@runtime_checkable
class FastPath(Protocol):
    """An adapter with a fast path for its common frame."""

    def parse_fast(
        self, frames: Sequence[bytes], received: Received, rules: TextRules
    ) -> Feeds | None:
        """The feeds of ``frames``, all valid; ``None`` if any frame needs the full path.

        Frames the full path would take as heartbeats carry no feed and are passed over; any
        other kind, a skipped tick, an invalid feed or a text not in canonical form is ``None``.
        """
        ...
