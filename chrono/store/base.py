"""The Store seam: what the ingest writer and the API need from a database.

Every implementation keeps ARCHITECTURE.md's table ``price_feeds``: prices digit for digit,
times in UTC with microseconds, and one row per (source, symbol, timestamp, price) however
often a feed is written. Blocking calls run in worker threads; methods are safe to cancel
(a cancelled write is either committed or not, never half).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from chrono.model import PriceFeed


class Store(Protocol):
    async def open(self) -> None:
        """Connect and create the schema if missing; raise ``StoreError`` if impossible."""
        ...

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        """Insert a batch in one transaction; return rows added (repeats add none)."""
        ...

    async def latest(self, symbols: Sequence[str]) -> list[PriceFeed]:
        """The newest stored feed of each symbol that has one."""
        ...

    async def aclose(self) -> None: ...

    def statistics(self) -> dict[str, Any]: ...
