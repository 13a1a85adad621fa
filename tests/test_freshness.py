"""Freshness thresholds, the connection budget and the message pacer, on Trio's virtual clock."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing

from chrono.collect.freshness import Freshness, FreshnessRules, SymbolFreshness
from chrono.collect.pacing import ConnectBudget, Pacer, WindowCap

RULES = FreshnessRules(first_data_s=30.0, factor=5.0, floor_s=10.0, ceiling_s=600.0)


def paced(gaps: list[float]) -> SymbolFreshness:
    entry = SymbolFreshness("BTC/USD", "BTC-USD")
    now = 0.0
    entry.seen(now)
    for gap in gaps:
        now += gap
        entry.seen(now)
    return entry


def test_unknown_pace_uses_the_first_data_timeout() -> None:
    assert SymbolFreshness("BTC/USD", "BTC-USD").threshold_s(RULES) == 30.0
    assert paced([]).threshold_s(RULES) == 30.0  # one feed: still no gap


def test_a_busy_pair_gets_the_floor() -> None:
    assert paced([0.05] * 100).threshold_s(RULES) == 10.0


def test_a_quiet_pair_gets_a_long_threshold_of_its_own() -> None:
    quiet = paced([40.0] * 10)
    assert quiet.threshold_s(RULES) == pytest.approx(200.0)
    assert paced([400.0] * 3).threshold_s(RULES) == 600.0  # the ceiling


def test_a_lull_is_learnt_at_once_and_forgotten_slowly() -> None:
    bursty = paced([0.1] * 50 + [30.0])
    assert bursty.threshold_s(RULES) > 50.0  # one long gap lifts the estimate at once
    after = paced([0.1] * 50 + [30.0] + [0.1] * 10)
    assert after.threshold_s(RULES) > 30.0  # ten quick feeds do not undo it


def test_staleness_counts_from_the_subscription_at_the_latest() -> None:
    fresh = Freshness({"BTC/USD": "BTC-USD", "ETH/USD": "ETH-USD"}, RULES)
    fresh.seen("BTC/USD", 100.0)
    assert not fresh.is_stale("BTC/USD", now=105.0, since=0.0)
    assert fresh.is_stale("BTC/USD", now=131.0, since=0.0)
    assert not fresh.is_stale("BTC/USD", now=131.0, since=120.0)  # resubscribed at 120
    assert fresh.is_stale("ETH/USD", now=31.0, since=0.0)  # never delivered
    assert fresh.connection_silence_s() == 30.0
    status = {entry.symbol: msgspec.to_builtins(entry) for entry in fresh.statistics(110.0)}
    assert status["BTC/USD"]["age_s"] == 10.0
    assert not status["BTC/USD"]["stale"]
    assert status["ETH/USD"]["stale"]
    assert status["ETH/USD"]["age_s"] is None


async def test_connect_budget_holds_attempts_to_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = ConnectBudget(attempts=2, window_s=10.0)
    times = []
    for _ in range(5):
        await budget.acquire()
        times.append(trio.current_time())
    start = times[0]
    assert [t - start for t in times] == [0.0, 0.0, 10.0, 10.0, 20.0]
    assert budget.waited == 2  # the third and the fifth


async def test_pacer_spaces_messages(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(messages_per_s=4.0)
    times = []
    for _ in range(4):
        await pacer.wait()
        times.append(trio.current_time())
    start = times[0]
    assert [t - start for t in times] == [0.0, 0.25, 0.5, 0.75]


async def test_window_cap_refuses_past_its_count(autojump_clock: trio.testing.MockClock) -> None:
    cap = WindowCap(count=3, window_s=3600.0)
    assert cap.try_take(2)
    assert not cap.try_take(2)  # 4 > 3: refused whole, nothing taken
    assert cap.try_take(1)
    assert not cap.try_take(1)
    await trio.sleep(3600.0)
    assert cap.try_take(3)
    assert WindowCap(count=None, window_s=1.0).try_take(10**6)  # no cap
