"""Reconnecting on flaky links: a session that delivered data is replaced after a small floor and
starts the backoff over; one that died before delivering climbs it. On trio's autojump clock for
the policy, and against the Coinbase simulator dropping every connection every 3 s."""

from __future__ import annotations

import math
import random

import trio
import trio.testing

from chrono.backoff import Backoff
from chrono.collect import CollectorStats, run_collector
from chrono.collect.collector import RECONNECT_FLOOR_S, reconnect_backoff, reconnect_delay
from chrono.collect.pacing import ConnectBudgets
from chrono.config import CollectorConfig
from chrono.model import FeedRules, PriceFeed
from chrono.testing.simulators import CoinbaseSimulator
from chrono.testing.simulators.base import Chaos

SESSION_S = 3.0  # each delivering session lives this long before the link drops it


def collector_backoff() -> Backoff:
    defaults = CollectorConfig(exchange="coinbase", symbols=["BTC/USD"])
    return reconnect_backoff(defaults, random.Random(1))


async def test_delivering_sessions_reconnect_at_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff, rng = collector_backoff(), random.Random(2)
    waits = []
    for _ in range(100):  # 100 sessions that each delivered for 3 s, then dropped
        await trio.sleep(SESSION_S)
        waits.append(reconnect_delay(backoff, True, rng))
        await trio.sleep(waits[-1])
    assert all(RECONNECT_FLOOR_S <= wait <= 2 * RECONNECT_FLOOR_S for wait in waits)
    assert len(set(waits)) == len(waits)  # jittered: collectors dropped together spread out
    streaming = 100 * SESSION_S / trio.current_time()
    assert streaming > 0.88  # of the time the link was up, not waiting


async def test_sessions_that_deliver_nothing_climb_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff, rng = collector_backoff(), random.Random(3)
    waits = []
    for _ in range(12):  # each connected, lived 3 s (a silent subscription) and delivered nothing
        await trio.sleep(SESSION_S)
        waits.append(reconnect_delay(backoff, False, rng))
        await trio.sleep(waits[-1])
    assert backoff.failures == 12  # however long each lived: only delivering resets
    assert max(waits[:3]) <= 4.0  # ceilings 1, 2, 4 s
    assert max(waits[7:]) > 20.0  # the ceiling reached the 60 s cap
    assert all(wait <= 60.0 for wait in waits)
    # One session that delivers starts it over.
    assert reconnect_delay(backoff, True, rng) <= 2 * RECONNECT_FLOOR_S
    assert backoff.failures == 0
    assert reconnect_delay(backoff, False, rng) <= 1.0


async def test_a_link_that_drops_every_3_s_keeps_its_data(nursery: trio.Nursery) -> None:
    """The default backoff (1 s, cap 60 s) against drops every 3 s: >= 80 % of every trade the
    exchange made is collected, with no more connections than its budget allows."""
    run_s = 13.0
    sim = CoinbaseSimulator(tick_interval_s=0.02, trade_unwatched=True)
    await nursery.start(sim.serve)
    config = CollectorConfig(exchange="coinbase", symbols=["BTC/USD", "ETH/USD"], url=sim.url)
    stats = CollectorStats(config.worker_id, config.exchange, config.symbols)
    budgets = ConnectBudgets()
    send, receive = trio.open_memory_channel[list[PriceFeed]](10_000)
    feeds: list[PriceFeed] = []

    async def drain() -> None:
        async for batch in receive:
            feeds.extend(batch)

    with trio.move_on_after(run_s):
        async with trio.open_nursery() as inner:
            inner.start_soon(drain)
            inner.start_soon(run_collector, config, FeedRules(), send, stats, budgets)
            await sim.wait_subscribed()
            sim.ticks.clear()  # count from the first subscription on
            inner.start_soon(sim.run_chaos, Chaos(drop_every_s=SESSION_S))
    sent = {(t.native.replace("-", "/"), t.price, t.time) for t in sim.ticks}
    got = {(f.symbol, str(f.price), f.timestamp) for f in feeds}
    kept = len(got & sent) / len(sent)
    assert stats.reconnects >= 3  # the link really dropped, again and again
    assert kept >= 0.80, f"kept {kept:.0%} of {len(sent)} trades over {stats.reconnects} drops"
    budget = budgets.get("coinbase", CoinbaseSimulator.exchange.limits)
    assert stats.connections <= budget.attempts * math.ceil(run_s / budget.window_s)
    assert budget.waited == 0  # the floor alone kept it within the exchange's budget
