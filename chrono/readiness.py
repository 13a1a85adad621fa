"""Readiness: whether Chrono is serving prices it can stand behind, check by check.

``/health`` says whether the parts run; ``/ready`` (``chrono.api.ops``) says whether the data is
good, so a load balancer or an FTSO provider stops routing to a node that would answer stale
prices (an oracle that says "OK" while serving stale data is the failure this prevents). Ready
means all of:

- **store**: writable, or down/replaying but spooling with room (below ``SPOOL_ROOM`` full);
- **collectors**: at least one collector streams data younger than ``max_age`` (a node with no
  collectors, fed only by ingest, passes this check and relies on the next);
- **symbols**: every configured symbol has a source whose newest feed is younger than
  ``max_age`` (``[consensus] max_age_ms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from chrono.collect.stats import CollectorStats
from chrono.pipeline.latest import LatestPrices
from chrono.pipeline.writer import IngestWriter

SPOOL_ROOM = 0.95  # a spool fuller than this will soon block the pipeline: not ready


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ok: bool
    detail: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    ready: bool
    checks: list[Check]


def readiness(
    *,
    writer: IngestWriter,
    collectors: Sequence[CollectorStats],
    latest: LatestPrices,
    symbols: Sequence[str],
    max_age: timedelta,
    now: datetime,
) -> Readiness:
    checks = [
        _store(writer),
        _collectors(collectors, max_age, now),
        _symbols(latest, symbols, max_age, now),
    ]
    return Readiness(ready=all(c.ok for c in checks), checks=checks)


def _store(writer: IngestWriter) -> Check:
    state = writer.state()
    if writer.healthy:
        return Check(name="store", ok=True, detail="writable")
    fill = writer.spool.fill()
    ok = fill < SPOOL_ROOM
    room = "with room" if ok else "nearly full"
    return Check(name="store", ok=ok, detail=f"{state}: spooling, {fill:.0%} full, {room}")


def _collectors(collectors: Sequence[CollectorStats], max_age: timedelta, now: datetime) -> Check:
    if not collectors:
        return Check(name="collectors", ok=True, detail="no collectors configured")
    fresh = sorted(
        c.worker_id
        for c in collectors
        if c.state == "streaming" and c.last_data_at is not None and now - c.last_data_at <= max_age
    )
    if fresh:
        return Check(name="collectors", ok=True, detail=f"streaming fresh data: {', '.join(fresh)}")
    states = ", ".join(f"{c.worker_id} {c.state}" for c in collectors)
    return Check(name="collectors", ok=False, detail=f"none streams fresh data ({states})")


def _symbols(
    latest: LatestPrices, symbols: Sequence[str], max_age: timedelta, now: datetime
) -> Check:
    stale = [
        s
        for s in symbols
        if not any(now - f.timestamp <= max_age for f in latest.by_source(s).values())
    ]
    if stale:
        return Check(name="symbols", ok=False, detail=f"no fresh source: {', '.join(stale)}")
    return Check(name="symbols", ok=True, detail=f"{len(symbols)} symbols have a fresh source")
