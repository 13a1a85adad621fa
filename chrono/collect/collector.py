"""The collector: one ``[[collectors]]`` entry, kept connected for as long as Chrono runs.

Each connection is a ``Session``. A session that fails or goes silent is replaced after a
delay (at least the exchange's ``Retry-After``), and every new connection subscribes afresh. The
delay rewards a link that works: a session that subscribed and delivered data starts the backoff
over and is replaced after a small jittered floor, since its loss says nothing against the next
try; a session that ended before delivering climbs the capped, jittered backoff.

A session that asks for rotation (its planned age, or the exchange's notice that it will close)
is replaced make-before-break: the next connection is opened, subscribed and delivering before
the old one is closed; the fan-out drops the feeds both received.
Every connection attempt first takes a slot from the exchange's ``ConnectBudget``, which all
collectors of that exchange share, so no failure pattern can storm an exchange.

Cancellation: the current sessions stop; feeds already parsed still reach the pipeline.
"""

from __future__ import annotations

import logging
import math
import random

import trio

from chrono.backoff import Backoff
from chrono.collect.freshness import Freshness, FreshnessRules
from chrono.collect.pacing import ConnectBudget, ConnectBudgets
from chrono.collect.session import Link, Session
from chrono.collect.stats import CollectorStats
from chrono.config import CollectorConfig
from chrono.errors import FeedConnectionError
from chrono.exchanges import EXCHANGES
from chrono.feeds import Feeds
from chrono.model import FeedRules

log = logging.getLogger(__name__)

# After a session that delivered: reconnect within [floor, 2 x floor] (never sooner, so a link
# that delivers one frame and dies cannot spin; the connect budget bounds it further).
RECONNECT_FLOOR_S = 0.25
ROTATION_TIMEOUT_S = 30.0  # a replacement that delivers nothing by then is given up


async def run_collector(
    config: CollectorConfig,
    rules: FeedRules,
    intake: trio.MemorySendChannel[Feeds],
    stats: CollectorStats,
    budgets: ConnectBudgets | None = None,
) -> None:
    """Collect until cancelled; connection failures reconnect, they never raise."""
    exchange = EXCHANGES[config.exchange].protocol(config.protocol)
    symbols = exchange.symbol_map(config.symbols, config.quote_aliases)
    freshness = Freshness({s: symbols.native(s) for s in symbols}, freshness_rules(config))
    stats.freshness = freshness
    link = Link(
        config=config,
        exchange=exchange,
        adapter=exchange.adapter(symbols, config.worker_id),
        rules=rules,
        intake=intake,
        stats=stats,
        freshness=freshness,
    )
    budget = (budgets or ConnectBudgets()).get(config.exchange, exchange.limits)
    await _Collector(link, budget).run()


class _Collector:
    def __init__(self, link: Link, budget: ConnectBudget) -> None:
        self.link = link
        self.budget = budget
        self.backoff = reconnect_backoff(link.config)
        self.rng = random.Random()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            current: Session | None = None  # the session being replaced, during a rotation
            while True:
                session = await self._start(nursery)
                if current is not None and not await self._took_over(session, current):
                    await self._retry_after(session)
                    continue
                current = None
                await _wait_any(session.ended, session.rotate)
                if not session.ended.is_set():
                    current = session  # make the next one before this one breaks
                    continue
                await self._retry_after(session)

    async def _start(self, nursery: trio.Nursery) -> Session:
        self.link.stats.state = "connecting"
        await self.budget.acquire()
        session = Session(self.link)
        nursery.start_soon(session.run)
        return session

    async def _took_over(self, new: Session, old: Session) -> bool:
        """Make before break: stop ``old`` once ``new`` delivers; False if ``new`` failed."""
        with trio.move_on_after(ROTATION_TIMEOUT_S):
            await _wait_any(new.first_data, new.ended)
        if not new.first_data.is_set():
            new.stop()
            await new.ended.wait()
            if new.error is None:
                new.error = FeedConnectionError("the replacement delivered no data in time")
            return False
        old.stop()
        self.link.stats.rotations += 1
        return True

    async def _retry_after(self, session: Session) -> None:
        """Wait out the backoff (at least the exchange's ``Retry-After``) after a failure."""
        stats, error = self.link.stats, session.error
        delay = reconnect_delay(self.backoff, session.first_data.is_set(), self.rng)
        if error is not None:
            stats.last_error = str(error)
            if error.status == 429 or error.retry_after_s is not None:
                stats.rate_limited += 1
                delay = max(delay, error.retry_after_s or 0.0)
            log.warning(
                "%s: %s; reconnecting in %.1f s", self.link.worker_id, error, delay,
                extra={"worker_id": self.link.worker_id},
            )  # fmt: skip
        stats.connected_at = None
        stats.state = "backoff"
        stats.failures_in_a_row = 0 if session.first_data.is_set() else stats.failures_in_a_row + 1
        await trio.sleep(delay)
        stats.reconnects += 1


def reconnect_backoff(config: CollectorConfig, rng: random.Random | None = None) -> Backoff:
    """A collector's backoff: only delivering resets it (``reconnect_delay``), never a long but
    silent session."""
    return Backoff(
        initial_s=config.backoff_initial_s,
        cap_s=config.backoff_max_s,
        healthy_after_s=math.inf,
        rng=rng,
    )


def reconnect_delay(backoff: Backoff, delivered: bool, rng: random.Random) -> float:
    """The wait before the next connection: a small jittered floor after a session that
    delivered data (the backoff starts over), else the backoff's next, climbing delay."""
    if not delivered:
        return backoff.next_delay()
    backoff.reset()
    floor = min(RECONNECT_FLOOR_S, backoff.initial_s)
    return rng.uniform(floor, 2 * floor)


async def _wait_any(*events: trio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


def freshness_rules(config: CollectorConfig) -> FreshnessRules:
    return FreshnessRules(
        first_data_s=config.silence_timeout_s,
        factor=config.stale_factor,
        floor_s=config.stale_floor_s,
        ceiling_s=config.stale_ceiling_s,
    )
