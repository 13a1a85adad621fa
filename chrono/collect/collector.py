"""The collector loop: connect, subscribe, read, watch for silence, reconnect.

One task per ``[[collectors]]`` entry. A malformed frame or an invalid feed is counted by reason
and skipped; it never costs the connection. The silence watchdog counts data frames only:
heartbeats prove the link, not the data. Any connection failure or silence leads to a
reconnect after a capped, jittered delay, and every connection subscribes afresh.

Cancellation: the loop stops at its next receive. Feeds already parsed are handed to the
pipeline under a shield (bounded by ``HANDOFF_GRACE_S``), so a feed Chrono received is never
dropped on the way to the store.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from chrono.backoff import Backoff
from chrono.collect.connection import FeedConnection, open_feed
from chrono.config import CollectorConfig
from chrono.errors import FeedConnectionError, FeedSilent, InvalidFeed, InvalidFrame
from chrono.exchanges import EXCHANGES, Adapter, FrameKind, ParsedFrame
from chrono.model import FeedRules, PriceFeed, utc_now

log = logging.getLogger(__name__)

HANDOFF_GRACE_S = 10.0  # at shutdown, how long a parsed batch may wait for the pipeline
WATCHDOG_REFRESH_S = 0.5
HEALTHY_CONNECTION_S = 60.0  # a connection that lived this long resets the backoff
SAMPLES_KEPT = 5  # invalid frames kept for /status
SAMPLE_CHARS = 200


@dataclass(slots=True)
class CollectorStats:
    """What ``/status`` and ``chrono status`` show of one collector."""

    worker_id: str
    exchange: str
    symbols: list[str]
    state: str = "starting"
    connected_at: datetime | None = None
    reconnects: int = 0
    feeds_collected: int = 0
    last_data_at: datetime | None = None
    last_error: str | None = None
    exchange_errors: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))

    def count_invalid(self, reason: str, frame: str | bytes) -> None:
        self.invalid[reason] += 1
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        self.samples.append(f"{reason}: {text[:SAMPLE_CHARS]}")

    def as_dict(self) -> dict[str, Any]:
        now = utc_now()
        return {
            "worker_id": self.worker_id,
            "exchange": self.exchange,
            "symbols": self.symbols,
            "state": self.state,
            "uptime_s": _age_s(self.connected_at, now),
            "reconnects": self.reconnects,
            "feeds_collected": self.feeds_collected,
            "last_data_at": self.last_data_at.isoformat() if self.last_data_at else None,
            "last_data_age_s": _age_s(self.last_data_at, now),
            "last_error": self.last_error,
            "exchange_errors": self.exchange_errors,
            "invalid_frames": dict(self.invalid),
            "skipped_ticks": dict(self.skipped),
            "invalid_samples": list(self.samples),
        }


def _age_s(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)


async def run_collector(
    config: CollectorConfig,
    rules: FeedRules,
    intake: trio.MemorySendChannel[list[PriceFeed]],
    stats: CollectorStats,
) -> None:
    """Collect until cancelled; connection failures reconnect, they never raise."""
    exchange = EXCHANGES[config.exchange].protocol(config.protocol)
    adapter = exchange.adapter(
        exchange.symbol_map(config.symbols, config.quote_aliases), config.worker_id
    )
    backoff = Backoff(
        initial_s=config.backoff_initial_s,
        cap_s=config.backoff_max_s,
        healthy_after_s=HEALTHY_CONNECTION_S,
    )
    while True:
        backoff.mark_start()
        stats.state = "connecting"
        try:
            async with open_feed(config.endpoint, open_timeout_s=config.open_timeout_s) as conn:
                stats.connected_at = utc_now()
                await _stream(conn, adapter, config, rules, intake, stats)
        except FeedConnectionError as exc:
            stats.last_error = str(exc)
            log.warning(
                "%s: %s; reconnecting", config.worker_id, exc, extra={"worker_id": config.worker_id}
            )
        stats.connected_at = None
        stats.state = "backoff"
        await backoff.wait()
        stats.reconnects += 1


async def _stream(
    conn: FeedConnection,
    adapter: Adapter,
    config: CollectorConfig,
    rules: FeedRules,
    intake: trio.MemorySendChannel[list[PriceFeed]],
    stats: CollectorStats,
) -> None:
    stats.state = "subscribing"
    for message in adapter.subscribe_messages(config.symbols):
        await conn.send(message)
    silence_s = config.silence_timeout_s
    # Moving a deadline costs trio a heap update, so the watchdog is re-armed at most every
    # WATCHDOG_REFRESH_S: silence is detected between silence_s and silence_s + that.
    refreshed = trio.current_time()
    with trio.CancelScope(deadline=refreshed + silence_s) as watchdog:
        while True:
            frame = await conn.receive()
            try:
                parsed = adapter.parse(frame, utc_now())
            except InvalidFrame as exc:
                stats.count_invalid(exc.reason, frame)
                continue
            if parsed.kind is not FrameKind.DATA:
                _note_control(parsed, config.worker_id, stats)
                continue
            stats.state = "streaming"
            feeds = _valid_feeds(parsed, rules, stats, frame)
            if feeds:
                try:
                    intake.send_nowait(feeds)
                except trio.WouldBlock:
                    watchdog.deadline = math.inf  # a slow pipeline is not a silent exchange
                    await _hand_off(intake, feeds)
                    refreshed = -math.inf
                stats.feeds_collected += len(feeds)
                stats.last_data_at = feeds[-1].received_at
            now = trio.current_time()
            if now - refreshed >= WATCHDOG_REFRESH_S:
                watchdog.deadline = now + silence_s
                refreshed = now
    raise FeedSilent(f"no data for {silence_s:g} s")


def _valid_feeds(
    parsed: ParsedFrame, rules: FeedRules, stats: CollectorStats, frame: str | bytes
) -> list[PriceFeed]:
    for reason in parsed.skipped:
        stats.skipped[reason] += 1
    valid = []
    for feed in parsed.feeds:
        try:
            rules.check(feed)
        except InvalidFeed as exc:
            stats.count_invalid(exc.reason, frame)
        else:
            valid.append(feed)
    return valid


def _note_control(parsed: ParsedFrame, worker_id: str, stats: CollectorStats) -> None:
    if parsed.kind is FrameKind.ACK:
        stats.state = "subscribed" if stats.state == "subscribing" else stats.state
        log.info("%s: subscribed %s", worker_id, parsed.message, extra={"worker_id": worker_id})
    elif parsed.kind is FrameKind.ERROR:
        stats.exchange_errors += 1
        stats.last_error = parsed.message
        log.warning(
            "%s: exchange error: %s", worker_id, parsed.message, extra={"worker_id": worker_id}
        )


async def _hand_off(
    intake: trio.MemorySendChannel[list[PriceFeed]], feeds: list[PriceFeed]
) -> None:
    """Block for the pipeline (backpressure); if cancelled meanwhile, try once more, shielded.

    A shutdown cancels the collectors while the pipeline still drains, so the shielded retry
    lands within the grace period; only a pipeline stuck past it loses these feeds (logged).
    """
    try:
        await intake.send(feeds)
    except trio.Cancelled:
        delivered = False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + HANDOFF_GRACE_S):
            try:
                await intake.send(feeds)
                delivered = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the service gave up its drain
        if not delivered:
            log.error("pipeline did not accept %d received feeds at shutdown", len(feeds))
        raise
