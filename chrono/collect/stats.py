"""What ``/status`` and ``chrono status`` show of one collector."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import trio

from chrono.collect.freshness import Freshness, FreshnessStatistics
from chrono.feeds import Feeds
from chrono.histogram import Histogram
from chrono.model import utc_now

SAMPLES_KEPT = 5  # invalid frames kept for /status
SAMPLE_CHARS = 200


class CollectorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A collector as ``/status`` shows it (``CollectorStats.statistics()``)."""

    worker_id: str
    exchange: str
    symbols: list[str]
    state: str
    uptime_s: float | None
    connections: int
    reconnects: int
    failures_in_a_row: int  # connections that failed before any data, since the last that had some
    rotations: int
    resubscribes: int
    rate_limited: int
    feeds_collected: int
    frames_fast: int  # frames in reads the adapter's fast path took (the rest: its full path)
    last_data_at: datetime | None
    last_data_age_s: float | None
    stale_symbols: list[str]
    freshness: list[FreshnessStatistics]
    last_error: str | None
    exchange_errors: int
    invalid_frames: dict[str, int]
    skipped_ticks: dict[str, int]
    invalid_samples: list[str]


@dataclass(slots=True)
class CollectorStats:
    """Counters of one collector, across its connections (a rotation keeps them)."""

    worker_id: str
    exchange: str
    symbols: list[str]
    state: str = "starting"
    connected_at: datetime | None = None
    connections: int = 0  # connections opened
    reconnects: int = 0  # connections replaced after a failure or silence
    failures_in_a_row: int = 0  # ... that delivered nothing, since the last that did
    rotations: int = 0  # planned make-before-break replacements (age or server notice)
    resubscribes: int = 0  # stale symbols subscribed again on a live connection
    rate_limited: int = 0  # handshakes refused with 429 / Retry-After
    feeds_collected: int = 0
    frames_fast: int = 0  # frames the adapter's fast path took (chrono.exchanges.fast)
    last_data_at: datetime | None = None
    last_error: str | None = None
    exchange_errors: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    freshness: Freshness | None = None
    # exchange time -> received, per feed (/metrics: chrono_exchange_to_received_seconds)
    exchange_latency: Histogram = field(default_factory=Histogram)

    def count_feeds(self, feeds: Feeds) -> None:
        """Feeds handed to the pipeline: counted, their exchange-to-receipt latency timed."""
        self.exchange_latency.observe_all(feeds.exchange_latencies())
        self.feeds_collected += len(feeds)
        self.last_data_at = feeds.received_at[-1]

    def count_invalid(self, reason: str, frame: str | bytes) -> None:
        self.invalid[reason] += 1
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        self.samples.append(f"{reason}: {text[:SAMPLE_CHARS]}")

    def statistics(self) -> CollectorStatistics:
        now = utc_now()
        fresh = self.freshness.statistics(trio.current_time()) if self.freshness else []
        return CollectorStatistics(
            worker_id=self.worker_id,
            exchange=self.exchange,
            symbols=list(self.symbols),
            state=self.state,
            uptime_s=_age_s(self.connected_at, now),
            connections=self.connections,
            reconnects=self.reconnects,
            failures_in_a_row=self.failures_in_a_row,
            rotations=self.rotations,
            resubscribes=self.resubscribes,
            rate_limited=self.rate_limited,
            feeds_collected=self.feeds_collected,
            frames_fast=self.frames_fast,
            last_data_at=self.last_data_at,
            last_data_age_s=_age_s(self.last_data_at, now),
            stale_symbols=[entry.symbol for entry in fresh if entry.stale],
            freshness=fresh,
            last_error=self.last_error,
            exchange_errors=self.exchange_errors,
            invalid_frames=dict(self.invalid),
            skipped_ticks=dict(self.skipped),
            invalid_samples=list(self.samples),
        )


def _age_s(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)
