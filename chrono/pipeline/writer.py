"""The ingest writer: batches from the batcher into the store; a store outage costs no feed.

Two tasks share the work. The taker writes each batch straight to the store while the spool
is empty; when a write fails, that batch and every later one go to the spool (durable, in
order: ``chrono.store.spool``). The replayer writes the spool back, oldest first, several
batches per transaction (up to ``WRITE_MAX_FEEDS``), retrying with capped, jittered backoff,
and removes batches once the store has them; when the spool is empty the taker writes
directly again. So batches reach the store in the order they were made, and the store's feed
key makes a batch written twice (it committed, but the answer was lost) count once.

While the store fails or the spool is not empty, ``healthy`` is false and ``/health`` says
degraded. At the end of input (a drain) the taker spools what it cannot write, and the
replayer stops at its first failure: what is left stays in the spool for the next start.
"""

from __future__ import annotations

import logging
from collections import Counter
from itertools import groupby

import msgspec
import trio

from chrono.backoff import Backoff
from chrono.errors import BatchRefused, SpoolError, StoreError
from chrono.feeds import Feeds
from chrono.histogram import Histogram
from chrono.model import utc_now
from chrono.pipeline.channels import with_queued
from chrono.store import Store
from chrono.store.spool import Spool, SpoolStatistics

log = logging.getLogger(__name__)

WRITE_MAX_FEEDS = 10_000  # batches queued while the store was busy go in one transaction


class WriterStatistics(msgspec.Struct, frozen=True, kw_only=True):
    healthy: bool  # the store up and the spool empty
    store: str  # up | down | replaying
    feeds_written: int
    feeds_replayed: int
    duplicates_ignored: int
    write_errors: int
    spool_errors: int
    feeds_refused: int  # in batches the store refused (an edge's central: a 4xx), skipped
    last_error: str | None
    spool: SpoolStatistics
    written_by_source: dict[str, int]  # feeds in committed batches (the store's repeats too)


class IngestWriter:
    def __init__(
        self,
        batches: trio.MemoryReceiveChannel[Feeds],
        store: Store,
        spool: Spool,
        *,
        retry_initial_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self._batches = batches
        self._store = store
        self.spool = spool
        self._backoff = Backoff(initial_s=retry_initial_s, cap_s=retry_cap_s)
        self._spool_backoff = Backoff(initial_s=retry_initial_s, cap_s=retry_cap_s)
        self._wake = trio.Event()  # the taker spooled a batch
        self._ended = trio.Event()  # the input ended: replay what the store takes, then stop
        self.store_up = True
        self.feeds_written = 0
        self.feeds_replayed = 0
        self.duplicates_ignored = 0
        self.write_errors = 0
        self.spool_errors = 0
        self.feeds_refused = 0  # in batches the store refused (BatchRefused): skipped
        self.last_error: str | None = None
        self.write_seconds = Histogram()  # one store transaction
        self.stored_latency = Histogram()  # received -> committed, per feed
        self._written_by_source: Counter[str] = Counter()  # feeds in committed batches

    @property
    def healthy(self) -> bool:
        return self.store_up and self.spool.is_empty()

    async def run(self) -> None:
        """Until the batcher's channel ends: every batch in the store or in the spool."""
        await self.spool.open()
        self._ended = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._replay)
            async for first in self._batches:
                await self._take(with_queued(first, self._batches, WRITE_MAX_FEEDS))
            self._ended.set()
            self._wake.set()

    async def _take(self, batch: Feeds) -> None:
        """Into the store if nothing waits before it, else into the spool; retried until one
        of them holds it."""
        while True:
            if self.spool.is_empty() and await self._write(batch):
                return
            try:
                await self.spool.append(batch)
            except SpoolError as exc:
                self.spool_errors += 1
                delay = self._spool_backoff.next_delay()
                log.error("cannot spool a batch: %s; retrying in %.1f s", exc, delay)
                await trio.sleep(delay)
                continue
            self._spool_backoff.reset()
            self._wake.set()
            return

    async def _replay(self) -> None:
        while True:
            try:
                feeds, count = await self.spool.oldest(WRITE_MAX_FEEDS)
            except SpoolError as exc:
                log.error("cannot read the spool: %s", exc)
                if not await self._pause():
                    return
                continue
            if not count:
                if self._ended.is_set():
                    return
                await self._wake.wait()
                self._wake = trio.Event()
            elif await self._write(Feeds.of(feeds)):
                self.feeds_replayed += len(feeds)
                await self.spool.pop(count)
            elif not await self._pause():
                return

    async def _pause(self) -> bool:
        """Back off before the next try; ``False`` once input has ended (stop trying)."""
        if self._ended.is_set():
            return False
        with trio.move_on_after(self._backoff.next_delay()):
            await self._ended.wait()  # a drain makes one last try at once
        return True

    async def _write(self, batch: Feeds) -> bool:
        started = trio.current_time()
        try:
            added = await self._store.write(batch)
        except BatchRefused as exc:
            self.feeds_refused += len(batch)
            self.last_error = str(exc)
            log.warning("the store refused a batch of %d feeds: %s; skipped", len(batch), exc)
            return True  # done with it: the same feeds would be refused again
        except StoreError as exc:
            self.write_errors += 1
            self.last_error = str(exc)
            if self.store_up:
                log.error("store write failed: %s; spooling batches until it is back", exc)
            else:
                log.warning("store still failing: %s", exc)
            self.store_up = False
            return False
        if not self.store_up:
            log.info("store is back", extra={"data": {"spooled_batches": len(self.spool)}})
        self.store_up = True
        self._backoff.reset()
        self.write_seconds.observe(trio.current_time() - started)
        now = utc_now()
        observe, by_source = self.stored_latency.observe, self._written_by_source
        # Feeds of one read share one source and one receive time: one step per such run.
        runs = groupby(zip(batch.sources, batch.received_at, strict=True))
        for (source, received_at), run in runs:
            count = sum(1 for _ in run)
            observe((now - received_at).total_seconds(), count)
            by_source[source] += count
        self.feeds_written += added
        self.duplicates_ignored += len(batch) - added
        return True

    def store_down(self, error: str) -> None:
        """The store failed outside a write (at start): degraded until a write succeeds."""
        self.store_up = False
        self.last_error = error

    def state(self) -> str:
        """``up``, ``down``, or ``replaying`` (up, with spooled batches still to write)."""
        if not self.store_up:
            return "down"
        return "up" if self.spool.is_empty() else "replaying"

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            healthy=self.healthy,
            store=self.state(),
            feeds_written=self.feeds_written,
            feeds_replayed=self.feeds_replayed,
            duplicates_ignored=self.duplicates_ignored,
            write_errors=self.write_errors,
            spool_errors=self.spool_errors,
            feeds_refused=self.feeds_refused,
            last_error=self.last_error,
            spool=self.spool.statistics(),
            written_by_source=dict(self._written_by_source),
        )
