"""``StatusReport``: what ``GET /status`` encodes, ``chrono status`` decodes and ``/metrics``
reads, built from every component's own ``statistics()`` (frozen msgspec Structs, as trio's
``MemoryChannelStatistics``), so no reader indexes strings into an untyped dict.

Times are RFC 3339 UTC with ``Z``, as everywhere else on the wire.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from chrono.alerts.engine import AlertsStatistics
from chrono.collect.stats import CollectorStatistics
from chrono.consensus.snapshots import SnapshotStatistics
from chrono.pipeline.batcher import BatcherStatistics
from chrono.pipeline.fanout import FanOutStatistics
from chrono.pipeline.latest import LatestStatistics
from chrono.pipeline.writer import WriterStatistics
from chrono.store.base import StoreStatistics
from chrono.stream.hub import StreamStatistics
from chrono.supervise import ChildStatistics


class ServiceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    state: str  # starting | running | draining | stopping
    started_at: datetime
    uptime_s: float


class ExchangeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One exchange, summed over its collectors."""

    feeds_collected: int
    invalid_frames: dict[str, int]  # by reason


class PipelineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    intake_queued: int  # feed lists waiting for the fan-out
    fanout: FanOutStatistics
    batcher: BatcherStatistics
    writer: WriterStatistics
    latest: LatestStatistics
    stream: StreamStatistics


class ConsensusStatistics(msgspec.Struct, frozen=True, kw_only=True):
    computed: int
    guarded: int
    snapshots: SnapshotStatistics


class LimiterStats(msgspec.Struct, frozen=True):
    """The API's rate limiter (``chrono.api.limits``)."""

    rate_limited: dict[str, int]  # refused requests by role: internal, public, admin, unkeyed
    streams_open: int  # /stream connections holding a slot
    streams_refused: int  # refused for stream_per_key or stream_total
    address_buckets: int


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    service: ServiceStatistics
    collectors: list[CollectorStatistics]
    exchanges: dict[str, ExchangeStatistics]
    pipeline: PipelineStatistics
    consensus: ConsensusStatistics
    store: StoreStatistics
    limits: LimiterStats
    supervisor: list[ChildStatistics]
    alerts: AlertsStatistics


_decoder = msgspec.json.Decoder(StatusReport)


def decode_status(body: bytes) -> StatusReport:
    """``GET /status``'s body as a ``StatusReport``; ``msgspec.ValidationError`` if it is not."""
    return _decoder.decode(body)
