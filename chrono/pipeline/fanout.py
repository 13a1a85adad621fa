"""Fan-out: every ``Feeds`` from the intake goes to the latest prices, the stream hub and the
batcher, once. A repeated feed (same source, symbol, timestamp, price) is dropped and counted.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import trio

from chrono.feeds import Feeds
from chrono.model import FeedKey, RecentKeys
from chrono.pipeline.channels import with_queued
from chrono.pipeline.latest import LatestPrices
from chrono.stream.hub import StreamHub


class FanOutStatistics(msgspec.Struct, frozen=True, kw_only=True):
    feeds_in: int
    duplicates_dropped: int
    duplicates_by_source: dict[str, int]


MERGE_MAX_FEEDS = 1000  # feeds taken in one wake-up: amortizes the per-item channel cost


class FanOut:
    """Owns the intake's receive end and the batcher's send end (closed at end of input)."""

    def __init__(
        self,
        intake: trio.MemoryReceiveChannel[Feeds],
        to_batcher: trio.MemorySendChannel[Feeds],
        latest: LatestPrices,
        hub: StreamHub,
    ) -> None:
        self._intake = intake
        self._to_batcher = to_batcher
        self._latest = latest
        self._hub = hub
        self._recent = RecentKeys()  # lives on the instance, so it survives a restart of run()
        self.feeds_in = 0
        self.duplicates = 0
        self._by_source: Counter[str] = Counter()  # duplicates by source

    async def run(self) -> None:
        """Until the intake ends; then closes the batcher's input so it drains."""
        recent = self._recent
        async for first in self._intake:
            feeds = with_queued(first, self._intake, MERGE_MAX_FEEDS)
            self.feeds_in += len(feeds)
            if (kept := recent.first_seen(feeds.keys())) is not None:  # rare: some repeat
                repeats = set(range(len(feeds))).difference(kept)
                self.duplicates += len(repeats)
                self._by_source.update(feeds.sources[i] for i in repeats)
                fresh = feeds.select(kept)
            else:
                fresh = feeds
            if not fresh:
                continue
            self._latest.update(fresh)
            self._hub.publish(fresh)
            await self._to_batcher.send(fresh)
        await self._to_batcher.aclose()

    def seen(self, key: FeedKey) -> bool:
        """Whether a feed with ``key`` passed lately (ingest counts it as a duplicate)."""
        return key in self._recent

    def statistics(self) -> FanOutStatistics:
        return FanOutStatistics(
            feeds_in=self.feeds_in,
            duplicates_dropped=self.duplicates,
            duplicates_by_source=dict(self._by_source),
        )
