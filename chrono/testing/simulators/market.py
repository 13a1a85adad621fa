"""Exchange-neutral markets for the simulators: a random walk per symbol and its trades.

Each ``Market`` is shared by every client of a simulator, so one trade is broadcast to all its
subscribers, as on an exchange. Simulators format a ``Trade`` their exchange's way and record
each as the ``SentTick`` that tests compare stored feeds with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time_ns
from typing import Final, NamedTuple

_START_UNITS: Final = {"BTC": 67_234_56, "XBT": 67_234_56, "ETH": 3_456_78, "SOL": 145_67}


@dataclass(frozen=True, slots=True)
class SentTick:
    """One generated trade as its data frame spelled it.

    ``time`` is the exchange time the frame carries (UTC, at the exchange's resolution), or
    ``None`` where the exchange sends none (Kraken v1: the collector stamps receipt time).
    """

    native: str
    price: str
    time: datetime | None
    trade_id: int


class Trade(NamedTuple):
    """One trade on a market, in integer units; simulators format it their exchange's way.

    A tuple, not a frozen dataclass: one is made per frame, and a frozen dataclass's
    ``__init__`` (a ``object.__setattr__`` per field) cost more than the rest of ``trade()``."""

    cents: int  # price in 1/100 of the quote
    bid_cents: int
    ask_cents: int
    size: int  # base amount in 1e-8
    volume: int  # rolling 24 h base volume in 1e-8
    open_cents: int
    high_cents: int
    low_cents: int
    time_us: int  # exchange time, µs since the epoch
    trade_id: int
    sequence: int
    buy: bool

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_us // 1_000_000, UTC).replace(
            microsecond=self.time_us % 1_000_000
        )


def fixed(units: int, places: int) -> str:
    """``units`` (not negative) of 10**-places as a decimal string with exactly ``places``
    digits. Slices of ``str(units)``: a simulator writes ten of these a frame, and this is
    half the cost of ``divmod`` and a nested format spec."""
    if units < 0:
        raise ValueError(f"fixed() of a negative amount: {units}")
    text = str(units)
    if not places:
        return text
    if len(text) <= places:
        text = "0" * (places + 1 - len(text)) + text
    return f"{text[:-places]}.{text[-places:]}"


def scaled(cents: int, places: int) -> str:
    """A price in cents written with ``places`` decimals (``places`` >= 2)."""
    return fixed(cents * 10 ** (places - 2), places)


def now_us() -> int:
    return time_ns() // 1000


class Market:
    """One native symbol's book, shared by every client: the source of its trades."""

    def __init__(
        self, native: str, base: str, rng: random.Random, *, resolution_us: int = 1
    ) -> None:
        self.native = native
        self._random = rng.random
        self._resolution_us = resolution_us
        self._cents = self._open = self._low = self._high = _START_UNITS.get(base.upper(), 10_000)
        self._step = max(1, self._cents // 20_000)  # a price step is about 0.005 %
        self._volume = 0
        self.sequence = rng.randint(10**8, 9 * 10**8)
        self.trade_id = rng.randint(10**5, 9 * 10**5)
        self._time_us = 0
        self.last: Trade | None = None

    def rescale(self, factor: float) -> None:
        """Move the price to ``factor`` times what it is (a source that lies, for tests)."""
        self._cents = max(1, round(self._cents * factor))
        self._step = max(1, self._cents // 20_000)

    def trade(self) -> Trade:
        """A new trade: the price walks one step; ``trade_id`` and time strictly increase."""
        r, step = self._random, self._step
        cents = self._cents = max(1, self._cents + round((2 * r() - 1) * step))
        self._low, self._high = min(self._low, cents), max(self._high, cents)
        size = 1 + int(r() * 10**8)
        self._volume += size
        self.trade_id += 1
        self.sequence += 1 + int(r() * 20)
        res = self._resolution_us
        self._time_us = max(now_us() // res * res, self._time_us + res)
        bid = max(1, cents - int(r() * step))
        self.last = Trade(
            cents=cents,
            bid_cents=bid,
            ask_cents=max(bid + 1, cents),
            size=size,
            volume=self._volume,
            open_cents=self._open,
            high_cents=self._high,
            low_cents=self._low,
            time_us=self._time_us,
            trade_id=self.trade_id,
            sequence=self.sequence,
            buy=r() < 0.5,
        )
        return self.last
