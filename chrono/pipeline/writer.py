"""The ingest writer: batches from the batcher into the store, never dropping one.

A failed write is retried with capped, jittered backoff until it lands; meanwhile ``healthy``
is false (``/health`` says degraded) and the batcher's channel fills, so backpressure reaches the
collectors. (Spooling to disk during a long outage comes with the PostgreSQL store.)
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from chrono.backoff import Backoff
from chrono.errors import StoreError
from chrono.model import PriceFeed
from chrono.pipeline.channels import with_queued
from chrono.store import Store

log = logging.getLogger(__name__)

WRITE_MAX_FEEDS = 10_000


class IngestWriter:
    def __init__(
        self,
        batches: trio.MemoryReceiveChannel[list[PriceFeed]],
        store: Store,
        *,
        retry_initial_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self._batches = batches
        self._store = store
        self._backoff = Backoff(initial_s=retry_initial_s, cap_s=retry_cap_s)
        self.healthy = True
        self.feeds_written = 0
        self.duplicates_ignored = 0
        self.write_errors = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        """Until the batcher's channel ends, every batch written.

        Batches that queued while the store was busy are written together, in one transaction
        (up to ``WRITE_MAX_FEEDS``): a store slower than the flow catches up instead of lagging.
        """
        async for first in self._batches:
            await self._write(with_queued(first, self._batches, WRITE_MAX_FEEDS))

    async def _write(self, batch: list[PriceFeed]) -> None:
        while True:
            try:
                added = await self._store.write(batch)
            except StoreError as exc:
                self.healthy = False
                self.write_errors += 1
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                log.error(
                    "store write failed; retrying",
                    extra={"data": {"error": str(exc), "feeds": len(batch), "delay_s": delay}},
                )
                await trio.sleep(delay)
            else:
                self._backoff.reset()
                self.healthy = True
                self.feeds_written += added
                self.duplicates_ignored += len(batch) - added
                return

    def statistics(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "feeds_written": self.feeds_written,
            "duplicates_ignored": self.duplicates_ignored,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
        }
