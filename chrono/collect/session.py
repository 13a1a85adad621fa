"""One exchange connection's life: subscribe, read, keep alive, resubscribe what went quiet.

A session never raises: a failure or silence ends it with ``error`` set and ``ended`` fired,
and the collector (``chrono.collect.collector``) decides what comes next. The session asks for
its own replacement (``rotate``) when it reaches ``rotate_after_s`` or the exchange announces a
close (a RECONNECT frame); the collector then opens the next one before stopping this one.

Inside, three tasks share the connection: the reader (parse, validate, hand off, the silence
watchdog), the monitor (stale symbols are resubscribed, each symbol's wait doubling per try;
the planned rotation), and, where the exchange wants application pings, the pinger. Every
message they send goes through one ``Pacer``, at the exchange's message rate.

Cancellation: ``stop`` ends reading and closes the connection politely. Feeds already parsed
are handed to the pipeline under a shield (bounded by ``HANDOFF_GRACE_S``), so a feed Chrono
received is never dropped on the way to the store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import trio

from chrono.collect.connection import FeedConnection, open_feed
from chrono.collect.freshness import Freshness
from chrono.collect.pacing import Pacer, WindowCap
from chrono.collect.stats import CollectorStats
from chrono.config import CollectorConfig
from chrono.errors import FeedConnectionError, FeedSilent, InvalidFeed, InvalidFrame
from chrono.exchanges import Adapter, Exchange, FrameKind, ParsedFrame, endpoint
from chrono.exchanges.fast import FastPath, Received, TextRules
from chrono.feeds import Feeds
from chrono.model import FeedRules, PriceFeed, utc_now

log = logging.getLogger(__name__)

HANDOFF_GRACE_S = 10.0  # at shutdown, how long a parsed batch may wait for the pipeline
WATCHDOG_REFRESH_S = 0.5
MONITOR_MAX_S = 1.0  # the monitor looks at least this often (more often with small floors)


@dataclass(slots=True)
class Link:
    """What every connection of one collector shares."""

    config: CollectorConfig
    exchange: Exchange
    adapter: Adapter
    rules: FeedRules
    intake: trio.MemorySendChannel[Feeds]
    stats: CollectorStats
    freshness: Freshness

    @property
    def worker_id(self) -> str:
        return self.config.worker_id


class Session:
    """One connection; see the module docstring. Events: ``first_data``, ``ended``, ``rotate``."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.first_data = trio.Event()
        self.ended = trio.Event()
        self.rotate = trio.Event()
        self.error: FeedConnectionError | None = None
        self.opened_at = math.inf
        self._scope = trio.CancelScope()

    def stop(self) -> None:
        """End this session (a rotation replaced it, or the collector stops)."""
        self._scope.cancel()

    def fail(self, error: FeedConnectionError) -> None:
        if self.error is None:
            self.error = error
        self._scope.cancel()

    def want_rotation(self, reason: str) -> None:
        if not self.rotate.is_set():
            log.info("%s: rotating: %s", self.link.worker_id, reason, extra=_extra(self.link))
            self.rotate.set()

    async def run(self) -> None:
        """Connect, subscribe and stream until stopped or failed; never raises those."""
        link = self.link
        try:
            with self._scope:
                url, timeout = endpoint(link.config), link.config.open_timeout_s
                async with open_feed(url, open_timeout_s=timeout) as conn:
                    await self._stream(conn)
        except FeedConnectionError as exc:
            self.error = self.error or exc
        finally:
            self.ended.set()

    async def _stream(self, conn: FeedConnection) -> None:
        link = self.link
        self.opened_at = trio.current_time()
        link.stats.connections += 1
        link.stats.connected_at = utc_now()
        link.stats.state = "subscribing"
        limits = link.exchange.limits
        pacer = Pacer(limits.messages_per_s)
        subscribes = WindowCap(limits.subscribes_per_hour, 3600.0)
        messages = link.adapter.subscribe_messages(link.config.symbols)
        subscribes.try_take(len(messages))
        await _send_all(conn, pacer, messages)
        monitor = _Monitor(self, conn, pacer, subscribes)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guard, monitor.run)
                nursery.start_soon(self._guard, conn.keepalive)
                if (interval := link.exchange.ping_interval_s) is not None:
                    nursery.start_soon(self._guard, lambda: _ping(conn, pacer, link, interval))
                await self._guard(lambda: self._read(conn))
        finally:
            if self.error is None:  # a planned stop: say goodbye (bounded by the close timeout)
                with trio.CancelScope(shield=True):
                    await conn.aclose()

    async def _guard(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except FeedConnectionError as exc:
            self.fail(exc)

    async def _read(self, conn: FeedConnection) -> None:
        link, stats, freshness = self.link, self.link.stats, self.link.freshness
        fast = link.adapter.parse_fast if isinstance(link.adapter, FastPath) else None
        text_rules = TextRules(link.rules)
        silence_s = freshness.connection_silence_s()
        # Moving a deadline costs trio a heap update, so the watchdog is re-armed at most every
        # WATCHDOG_REFRESH_S (or a quarter of the silence, if shorter): data then always moves
        # it in time, and silence is detected within silence_s plus that.
        refresh_s = min(WATCHDOG_REFRESH_S, silence_s / 4)
        refreshed = trio.current_time()
        with trio.CancelScope(deadline=refreshed + silence_s) as watchdog:
            while True:
                frames = await conn.receive()
                received = Received.of(utc_now())
                feeds = None if fast is None else fast(frames, received, text_rules)
                if feeds is not None:
                    stats.frames_fast += len(frames)
                    ticks, data = feeds.symbols, bool(feeds)
                else:
                    feeds, ticks, data = self._parse_each(frames, received.at)
                if not data:
                    continue
                now = trio.current_time()
                freshness.seen_ticks(ticks, now)
                stats.state = "streaming"
                if feeds:
                    self.first_data.set()
                    try:
                        link.intake.send_nowait(feeds)
                    except trio.WouldBlock:
                        watchdog.deadline = math.inf  # a slow pipeline is not a silent exchange
                        await _hand_off(link.intake, feeds)
                        refreshed = -math.inf
                    stats.count_feeds(feeds)
                if now - refreshed >= refresh_s:
                    silence_s = freshness.connection_silence_s()
                    refresh_s = min(WATCHDOG_REFRESH_S, silence_s / 4)
                    watchdog.deadline = now + silence_s
                    refreshed = now
        raise FeedSilent(f"no data for {silence_s:g} s")

    def _parse_each(
        self, frames: list[bytes], received_at: datetime
    ) -> tuple[Feeds, list[str], bool]:
        """The adapter's full path, frame by frame: the valid feeds, the symbol of every feed
        parsed (an invalid one still proves its symbol flows), and whether any frame carried
        data."""
        link, stats = self.link, self.link.stats
        feeds: list[PriceFeed] = []
        ticks: list[str] = []
        data = False
        for frame in frames:
            try:
                parsed = link.adapter.parse(frame, received_at)
            except InvalidFrame as exc:
                stats.count_invalid(exc.reason, frame)
                continue
            if parsed.kind is not FrameKind.DATA:
                self._note_control(parsed)
                continue
            data = True
            ticks.extend(feed.symbol for feed in parsed.feeds)
            feeds.extend(_valid_feeds(parsed, link.rules, stats, frame))
        return Feeds.of(feeds), ticks, data

    def _note_control(self, parsed: ParsedFrame) -> None:
        link, stats = self.link, self.link.stats
        if parsed.kind is FrameKind.ACK:
            link.freshness.acked(parsed.symbols)
            stats.state = "subscribed" if stats.state == "subscribing" else stats.state
            log.info("%s: subscribed %s", link.worker_id, parsed.message, extra=_extra(link))
        elif parsed.kind is FrameKind.ERROR:
            stats.exchange_errors += 1
            stats.last_error = parsed.message
            log.warning(
                "%s: exchange error: %s", link.worker_id, parsed.message, extra=_extra(link)
            )
        elif parsed.kind is FrameKind.RECONNECT:
            self.want_rotation(f"the exchange asked: {parsed.message or 'reconnect'}")


class _Monitor:
    """Resubscribes stale symbols (each try doubles that symbol's wait) and asks for rotation."""

    def __init__(
        self, session: Session, conn: FeedConnection, pacer: Pacer, subscribes: WindowCap
    ) -> None:
        self.session, self.conn, self.pacer, self.subscribes = session, conn, pacer, subscribes
        start = trio.current_time()
        self.since = dict.fromkeys(session.link.config.symbols, start)  # last (re)subscribe
        self.tries = dict.fromkeys(session.link.config.symbols, 0)

    async def run(self) -> None:
        link = self.session.link
        rotate_after_s = link.config.rotate_after_s or link.exchange.rotate_after_s
        check_s = min(MONITOR_MAX_S, link.freshness.rules.floor_s / 4)
        while True:
            await trio.sleep(check_s)
            now = trio.current_time()
            if rotate_after_s is not None and now - self.session.opened_at >= rotate_after_s:
                self.session.want_rotation(f"connection age {rotate_after_s:g} s")
            due = self._due(now)
            if due:
                await self._resubscribe(due)

    def _due(self, now: float) -> list[str]:
        freshness = self.session.link.freshness
        due = []
        for symbol, since in self.since.items():
            entry = freshness.symbols[symbol]
            if entry.last_data is not None and entry.last_data > since:
                self.tries[symbol] = 0  # it delivered since the last try
            if freshness.is_stale(symbol, now, since, patience=2.0 ** self.tries[symbol]):
                due.append(symbol)
        return due

    async def _resubscribe(self, symbols: list[str]) -> None:
        """Subscribe ``symbols`` again; within the hourly cap, else only the wait grows."""
        link = self.session.link
        messages = link.adapter.subscribe_messages(symbols, resubscribe=True)
        allowed = self.subscribes.try_take(len(messages))
        log.warning(
            "%s: no data for %s: %s", link.worker_id, ", ".join(symbols),
            "resubscribing" if allowed else "resubscribe deferred (hourly cap)",
            extra=_extra(link),
        )  # fmt: skip
        now = trio.current_time()
        for symbol in symbols:
            self.since[symbol] = now
            self.tries[symbol] += 1
        if not allowed:
            return
        for symbol in symbols:
            link.freshness.symbols[symbol].resubscribes += 1
        link.stats.resubscribes += len(symbols)
        await _send_all(self.conn, self.pacer, messages)


async def _send_all(conn: FeedConnection, pacer: Pacer, messages: Sequence[str]) -> None:
    for message in messages:
        await pacer.wait()
        await conn.send(message)


async def _ping(conn: FeedConnection, pacer: Pacer, link: Link, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        message = link.adapter.ping_message()
        if message is not None:
            await pacer.wait()
            await conn.send(message)


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


def _extra(link: Link) -> dict[str, str]:
    return {"worker_id": link.worker_id}


async def _hand_off(intake: trio.MemorySendChannel[Feeds], feeds: Feeds) -> None:
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
