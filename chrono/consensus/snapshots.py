"""Consensus snapshots into ``aggregated_prices``, every ``[consensus] snapshot_interval_s``.

A snapshot at ``T`` (a multiple of the interval since the UTC epoch: the FTSO voting epochs
are 90 s) is the consensus *as of T* recomputed from stored feeds (``Aggregator.at``), taken
once the feeds of ``T`` have had time to be written (``settle_s``, the batcher's interval and a
margin). So it equals what ``/aggregates/consensus?timestamp=T`` recomputes, digest and all.

Nothing is lost when the store is down: the feeds a snapshot reads are spooled durably by the
ingest writer, and a snapshot is only taken while the writer is healthy (the store up, its
spool replayed: ``stored_up``), so it never reads a store that still misses feeds of ``T``. One
that could not be taken or written is retried, with backoff, for the same ``T``; the ones due
meanwhile follow in order (at most ``CATCH_UP``, 24 h, behind: older ones are skipped with a
warning). A restart catches up from the newest snapshot
in the store within that horizon. The recent-deviation guard needs the live history, so
snapshots are never guarded (their status is ``ok`` or ``insufficient_sources``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec
import trio

from chrono.backoff import Backoff
from chrono.consensus.engine import to_json
from chrono.consensus.sources import Aggregator
from chrono.errors import StoreError
from chrono.model import time_text, utc_now
from chrono.store import Snapshot, StoreReader, StoreWriter
from chrono.store.candles import bucket_start

log = logging.getLogger(__name__)

CATCH_UP = timedelta(hours=24)  # the furthest back a missed snapshot is still taken
RESUME_ROWS = 10_000  # snapshots read back at a start to find the newest


class SnapshotStatistics(msgspec.Struct, frozen=True, kw_only=True):
    symbols: int
    interval_s: int
    written: int
    failures: int  # attempts that could not be taken or written (retried)
    skipped: int  # boundaries older than CATCH_UP, given up
    last_at: datetime | None
    next_at: datetime | None
    last_error: str | None


class SnapshotTaker:
    def __init__(
        self,
        aggregator: Aggregator,
        reader: StoreReader,
        writer: StoreWriter,
        symbols: Sequence[str],
        *,
        stored_up: Callable[[], bool],
        interval_s: int,
        settle_s: float,
        retry_initial_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self._aggregator = aggregator
        self._reader = reader
        self._writer = writer
        self.symbols = list(dict.fromkeys(symbols))
        self._stored_up = stored_up
        self.interval = timedelta(seconds=interval_s)
        self.settle = timedelta(seconds=settle_s)
        self._backoff = Backoff(initial_s=retry_initial_s, cap_s=retry_cap_s)
        self._next: datetime | None = None
        self.written = 0
        self.failures = 0
        self.skipped = 0
        self.last_at: datetime | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        """Forever (until cancelled): wait for each boundary to settle, then snapshot it."""
        if not self.symbols:
            return
        if self._next is None:  # not on a supervisor's restart: it keeps its place
            self._next = await self._resume_from()
        while True:
            due = self._next
            wait = (due + self.settle - utc_now()).total_seconds()
            if wait > 0:
                await trio.sleep(wait)
            horizon = bucket_start(utc_now() - CATCH_UP, self._seconds)
            if due < horizon:
                self.skipped += (horizon - due) // self.interval
                log.warning("snapshots from %s to %s skipped: over %s behind",
                            time_text(due), time_text(horizon), CATCH_UP)  # fmt: skip
                self._next = horizon
                continue
            try:
                if not self._stored_up():
                    raise StoreError("the store is down or replaying its spool")
                await self._take(due)
            except StoreError as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                log.warning("snapshot at %s not taken (%s); retrying in %.1f s",
                            time_text(due), exc, delay)  # fmt: skip
                await trio.sleep(delay)
                continue
            self._backoff.reset()
            self._next = due + self.interval

    @property
    def _seconds(self) -> int:
        return int(self.interval.total_seconds())

    async def _resume_from(self) -> datetime:
        """The boundary after the newest stored snapshot (within the horizon), else the next."""
        now = utc_now()
        upcoming = bucket_start(now, self._seconds) + self.interval
        since = now - min(CATCH_UP, self.interval * RESUME_ROWS)  # one page holds them all
        try:
            stored = await self._reader.snapshots_between(
                self.symbols[0], since, now, limit=RESUME_ROWS
            )
        except StoreError as exc:
            log.warning("cannot read the last snapshot (%s): starting at the next boundary", exc)
            return upcoming
        return stored[-1].timestamp + self.interval if stored else upcoming

    async def _take(self, at: datetime) -> None:
        found = await self._aggregator.at(self.symbols, at)
        snapshots = [
            Snapshot(
                symbol=c.symbol,
                timestamp=at,
                price=c.price,
                status=c.status,
                method=c.method,
                num_sources=c.num_sources,
                inputs_digest=c.inputs_digest,
                body=msgspec.json.encode(to_json(c)),
            )
            for c in found
        ]
        self.written += await self._writer.write_snapshots(snapshots)
        self.last_at = at

    def statistics(self) -> SnapshotStatistics:
        return SnapshotStatistics(
            symbols=len(self.symbols),
            interval_s=self._seconds,
            written=self.written,
            failures=self.failures,
            skipped=self.skipped,
            last_at=self.last_at,
            next_at=self._next,
            last_error=self.last_error,
        )
