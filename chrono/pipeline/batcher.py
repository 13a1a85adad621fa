"""The batcher: group feeds for the store, flushing at a count, an age or a size.

Whichever ``[batch]`` limit comes first flushes: ``max_feeds``, ``max_interval_ms`` after the
first feed of the batch, or ``max_bytes`` of the feeds' JSON (estimated per list). At end of
input the rest is flushed and the writer's input closed, so a drain writes everything.
"""

from __future__ import annotations

import math

import msgspec
import trio

from chrono.config import BatchConfig
from chrono.feeds import Feeds
from chrono.histogram import SIZE_BUCKETS, Histogram

_encoder = msgspec.json.Encoder()


class BatcherStatistics(msgspec.Struct, frozen=True, kw_only=True):
    pending: int  # feeds in the batch being made
    flushes: dict[str, int]  # by reason: count, interval, bytes, drain


class Batcher:
    def __init__(
        self,
        feeds: trio.MemoryReceiveChannel[Feeds],
        batches: trio.MemorySendChannel[Feeds],
        limits: BatchConfig,
    ) -> None:
        self._feeds = feeds
        self._batches = batches
        self._limits = limits
        # Pending state lives on the instance, so a restarted run() keeps what it held.
        self._pending: list[Feeds] = []  # joined into one batch when it is flushed
        self._count = 0  # feeds in _pending
        self._pending_bytes = 0
        self._deadline = math.inf
        self.flushes: dict[str, int] = {"count": 0, "interval": 0, "bytes": 0, "drain": 0}
        self.sizes = Histogram(SIZE_BUCKETS)  # feeds per batch

    async def run(self) -> None:
        while True:
            try:
                feeds: Feeds | None = await self._next()
            except trio.EndOfChannel:
                break
            if feeds is None:
                await self._flush("interval")
            else:
                await self._add(feeds)
        await self._flush("drain")
        await self._batches.aclose()

    async def _next(self) -> Feeds | None:
        """The next feed list, or ``None`` once the pending batch is due; only the wait is
        timed, never a flush (a cancelled send would lose a batch)."""
        if trio.current_time() >= self._deadline:
            return None  # due, even if more feeds are queued
        try:
            return self._feeds.receive_nowait()  # under load: no timer to arm
        except trio.WouldBlock:
            pass
        with trio.move_on_at(self._deadline):
            return await self._feeds.receive()
        return None

    async def _add(self, feeds: Feeds) -> None:
        """Take ``feeds`` into batches, flushing each that reaches a limit: slices, not a step
        per feed. Sizes are estimated from the list's first feed, encoded once: feeds of one
        read are alike, and ``max_bytes`` is a bound on a batch's order of size."""
        if not feeds:
            return
        limits = self._limits
        feed_bytes = max(1, len(_encoder.encode(feeds[0])))
        start, total = 0, len(feeds)
        while start < total:
            if not self._count:
                self._deadline = trio.current_time() + limits.max_interval_ms / 1000
            room = min(
                limits.max_feeds - self._count,
                max(1, -(-(limits.max_bytes - self._pending_bytes) // feed_bytes)),
            )
            taken = feeds if start == 0 and room >= total else feeds[start : start + room]
            start += len(taken)
            self._pending.append(taken)
            self._count += len(taken)
            self._pending_bytes += feed_bytes * len(taken)
            if self._count >= limits.max_feeds:
                await self._flush("count")
            elif self._pending_bytes >= limits.max_bytes:
                await self._flush("bytes")

    async def _flush(self, why: str) -> None:
        self._deadline = math.inf
        if not self._count:
            return
        batch = Feeds.join(self._pending)
        self._pending, self._count, self._pending_bytes = [], 0, 0
        self.flushes[why] += 1
        self.sizes.observe(len(batch))
        await self._batches.send(batch)

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(pending=self._count, flushes=dict(self.flushes))
