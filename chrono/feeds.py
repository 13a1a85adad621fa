"""``Feeds``: the pipeline's item, feeds column by column in the store's text.

At 100,000 feeds/s a ``PriceFeed`` for every feed (four ``Decimal``s, a ``datetime``, a
``FeedText`` and a metadata dict) cost the event loop more than receiving the frames, and
almost none are needed as objects: the store takes text, the fan-out's dedupe key is text,
and only the newest feed of each symbol (latest prices), what a ``/stream`` client subscribed
to and the rare slow path need a ``PriceFeed``. So an adapter's fast path fills columns of the
texts it checked, and a ``PriceFeed`` is made from them only when one is asked for (by index or
iteration), the same digit for digit (``Decimal(text)``, ``datetime.fromisoformat``).

Every column holds one value per feed; a read's feeds share their source, worker and receive
time, so those columns are one object repeated (``[x] * n`` costs a memory copy, no object).
Times are ``fixed_time_text`` (so text order is time order) and amounts ``decimal_text``;
``metadata`` is each feed's metadata as the JSON text the store keeps. A ``Feeds`` made
``of`` existing ``PriceFeed`` objects keeps them and hands the same objects back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from typing import Any, overload

import msgspec

from chrono.model import FeedText, PriceFeed, feed_text

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])

COLUMNS = ("symbols", "prices", "volumes", "bids", "asks", "timestamps", "received_at",
           "received_texts", "sources", "worker_ids", "metadata")  # fmt: skip


def metadata_text(metadata: dict[str, Any]) -> str:
    """The JSON text the store keeps for a feed's metadata."""
    return _json_encoder.encode(metadata).decode()


class Feeds(Sequence[PriceFeed]):
    """Feeds as columns (module docstring); a ``Sequence`` of ``PriceFeed`` to any reader that
    wants objects. Not changed once handed on: a sender may still hold it."""

    __slots__ = (*COLUMNS, "_made")

    symbols: list[str]
    prices: list[str]
    volumes: list[str | None]
    bids: list[str | None]
    asks: list[str | None]
    timestamps: list[str]
    received_at: list[datetime]
    received_texts: list[str]
    sources: list[str]
    worker_ids: list[str]
    metadata: list[str]
    _made: dict[int, PriceFeed]

    def __init__(
        self,
        symbols: list[str],
        prices: list[str],
        volumes: list[str | None],
        bids: list[str | None],
        asks: list[str | None],
        timestamps: list[str],
        received_at: list[datetime],
        received_texts: list[str],
        sources: list[str],
        worker_ids: list[str],
        metadata: list[str],
        *,
        made: dict[int, PriceFeed] | None = None,
    ) -> None:
        self.symbols, self.prices, self.volumes, self.bids, self.asks = (
            symbols, prices, volumes, bids, asks)  # fmt: skip
        self.timestamps, self.received_at, self.received_texts = (
            timestamps, received_at, received_texts)  # fmt: skip
        self.sources, self.worker_ids, self.metadata = sources, worker_ids, metadata
        self._made = {} if made is None else made  # by index: the objects made or given

    @classmethod
    def of_read(
        cls,
        source: str,
        worker_id: str,
        received_at: datetime,
        received_text: str,
        columns: tuple[list[str], list[str], list[str | None], list[str | None],
                       list[str | None], list[str], list[str]],
    ) -> Feeds:  # fmt: skip
        """One read's feeds: ``columns`` are symbols, prices, volumes, bids, asks, timestamps
        and metadata texts, already checked (``chrono.exchanges.fast``)."""
        symbols, prices, volumes, bids, asks, timestamps, metadata = columns
        n = len(symbols)
        return cls(symbols, prices, volumes, bids, asks, timestamps, [received_at] * n,
                   [received_text] * n, [source] * n, [worker_id] * n, metadata)  # fmt: skip

    @classmethod
    def of(cls, feeds: Iterable[PriceFeed]) -> Feeds:
        """``feeds`` as columns (their texts formatted once, ``feed_text``), keeping the
        objects themselves to hand back."""
        if isinstance(feeds, Feeds):
            return feeds
        objects = list(feeds)
        texts = [feed_text(f) for f in objects]
        return cls(
            [f.symbol for f in objects],
            [t.price for t in texts],
            [t.volume for t in texts],
            [t.bid for t in texts],
            [t.ask for t in texts],
            [t.timestamp for t in texts],
            [f.received_at for f in objects],
            [t.received_at for t in texts],
            [f.source for f in objects],
            [f.worker_id for f in objects],
            [metadata_text(f.metadata) for f in objects],
            made=dict(enumerate(objects)),
        )

    @classmethod
    def join(cls, parts: Sequence[Feeds]) -> Feeds:
        """``parts`` one after another, as one ``Feeds`` (a part alone is itself)."""
        if len(parts) == 1:
            return parts[0]
        columns = [list(chain.from_iterable(getattr(p, name) for p in parts)) for name in COLUMNS]
        made: dict[int, PriceFeed] = {}
        offset = 0
        for part in parts:
            made.update((offset + i, feed) for i, feed in part._made.items())
            offset += len(part)
        return cls(*columns, made=made)

    def __len__(self) -> int:
        return len(self.symbols)

    @overload
    def __getitem__(self, index: int) -> PriceFeed: ...

    @overload
    def __getitem__(self, index: slice) -> Feeds: ...

    def __getitem__(self, index: int | slice) -> PriceFeed | Feeds:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.symbols))
            made: dict[int, PriceFeed] = {}
            if self._made:
                made = {(i - start) // step: feed for i, feed in self._made.items()
                        if i in range(start, stop, step)}  # fmt: skip
            return Feeds(*(getattr(self, name)[index] for name in COLUMNS), made=made)
        if index < 0:
            index += len(self.symbols)
        if not 0 <= index < len(self.symbols):
            raise IndexError("Feeds index out of range")
        feed = self._made.get(index)
        if feed is None:
            feed = self._made[index] = self._make(index)
        return feed

    def __iter__(self) -> Iterator[PriceFeed]:
        for index in range(len(self.symbols)):
            yield self[index]

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same feeds, in order (``PriceFeed`` equality)."""
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Feeds({list(self)!r})"

    def select(self, indices: Sequence[int]) -> Feeds:
        """The feeds at ``indices``, in that order."""
        columns = [_pick(getattr(self, name), indices) for name in COLUMNS]
        made: dict[int, PriceFeed] = {}
        if self._made:
            made = {at: feed for at, i in enumerate(indices) if (feed := self._made.get(i))}
        return Feeds(*columns, made=made)

    def row_columns(self) -> list[list[Any]]:
        """The columns of the store's rows, in ``price_feeds`` order (symbol, price, volume,
        bid, ask, timestamp, received_at, source, worker_id, metadata): what both stores write
        (SQLite adds ``ingested_at``)."""
        return [self.symbols, self.prices, self.volumes, self.bids, self.asks, self.timestamps,
                self.received_texts, self.sources, self.worker_ids, self.metadata]  # fmt: skip

    def keys(self) -> list[tuple[str, str, str, str]]:
        """Every feed's ``FeedKey`` as a plain tuple (equal to it): source, symbol, time, price."""
        return list(zip(self.sources, self.symbols, self.timestamps, self.prices, strict=True))

    def texts(self, i: int) -> FeedText:
        """The store's texts of the feed at index ``i``."""
        return FeedText(self.prices[i], self.volumes[i], self.bids[i], self.asks[i],
                        self.timestamps[i], self.received_texts[i])  # fmt: skip

    def _make(self, i: int) -> PriceFeed:
        volume, bid, ask = self.volumes[i], self.bids[i], self.asks[i]
        return PriceFeed(
            symbol=self.symbols[i],
            price=Decimal(self.prices[i]),
            timestamp=datetime.fromisoformat(self.timestamps[i]),
            received_at=self.received_at[i],
            source=self.sources[i],
            worker_id=self.worker_ids[i],
            volume=None if volume is None else Decimal(volume),
            bid=None if bid is None else Decimal(bid),
            ask=None if ask is None else Decimal(ask),
            metadata=_metadata(self.metadata[i]),
            text=self.texts(i),
        )

    def exchange_latencies(self) -> list[float]:
        """Every feed's receive time minus its exchange time, in seconds, from the texts.

        The common case, one read (one receive time) of exchange times within one minute
        (found by the least and greatest text: fixed-width text sorts as time), takes one
        ``float`` of each text's seconds; anything else goes second by second, in whole
        microseconds."""
        received, times = self.received_at, self.timestamps
        if not times:
            return []
        if received.count(received[0]) == len(received) and (
            (least := min(times))[:16] == max(times)[:16]
        ):
            base = (_micros(received[0]) - _second_micros(least[:16] + ":00")) / 1e6
            return [base - float(t[17:26]) for t in times]
        return [(_micros(r) - _second_micros(t[:19]) - int(t[20:26])) / 1e6
                for r, t in zip(received, times, strict=True)]  # fmt: skip


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


@lru_cache(maxsize=256)
def _second_micros(second: str) -> int:
    """Epoch microseconds of ``YYYY-MM-DDTHH:MM:SS`` (UTC)."""
    return _micros(datetime.fromisoformat(second + "+00:00"))


def _pick(column: list[Any], indices: Sequence[int]) -> list[Any]:
    return [column[i] for i in indices]


def _metadata(text: str) -> dict[str, Any]:
    value: dict[str, Any] = _json_decoder.decode(text)
    return value
