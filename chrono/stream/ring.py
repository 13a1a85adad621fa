"""The replay ring: the hub's recent updates by ``seq``, so a client that reconnects with
``since_seq`` gets exactly what it missed.

Price updates are kept as the pipeline's own ``Feeds`` items (one entry per item, seq
``first .. first + len - 1``, no copy and no encoding: most are never replayed), with each
symbol's previous seq as it was before the item, so a replayed update is the very message a live
client got. Consensus and status updates are kept as their encoded messages. Bounded by count
(``max_updates``, whole entries) and by age (``max_age_s``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from chrono.feeds import Feeds


@dataclass(frozen=True, slots=True)
class FeedsEntry:
    first: int  # the seq of feeds[0]
    feeds: Feeds
    prev: dict[str, int | None]  # each symbol's last seq before this item
    at: float  # trio.current_time() when published

    @property
    def last(self) -> int:
        return self.first + len(self.feeds) - 1


@dataclass(frozen=True, slots=True)
class MessageEntry:
    first: int  # its seq
    channel: str
    subject: str  # the symbol, or a status event's subject
    message: str  # encoded once, as every live client got it
    at: float
    price: float | None = None  # a consensus's, for a deviation throttle catching up

    @property
    def last(self) -> int:
        return self.first


Entry = FeedsEntry | MessageEntry


class ReplayRing:
    def __init__(self, max_updates: int, max_age_s: float) -> None:
        self.max_updates = max_updates
        self.max_age_s = max_age_s
        self._entries: deque[Entry] = deque()
        self._count = 0

    def __len__(self) -> int:
        """Updates held."""
        return self._count

    @property
    def first_seq(self) -> int | None:
        """The oldest seq held (None: empty)."""
        return self._entries[0].first if self._entries else None

    def add(self, entry: Entry) -> None:
        self._entries.append(entry)
        self._count += entry.last - entry.first + 1
        self.trim(entry.at)

    def trim(self, now: float) -> None:
        entries, oldest = self._entries, now - self.max_age_s
        while entries and (self._count > self.max_updates or entries[0].at < oldest):
            gone = entries.popleft()
            self._count -= gone.last - gone.first + 1

    def after(self, seq: int) -> Iterator[Entry]:
        """The entries holding any update past ``seq``, oldest first."""
        for entry in self._entries:
            if entry.last > seq:
                yield entry
