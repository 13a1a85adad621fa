"""The supervisor and the backoff it shares with the collectors, on trio's autojump clock."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from chrono.backoff import Backoff
from chrono.errors import SupervisorGaveUp, Unrecoverable
from chrono.supervise import ChildStats, RestartPolicy, supervise


class Boom(Exception):
    pass


async def test_restarts_a_crashed_child_until_it_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def child() -> None:
        starts.append(trio.current_time())
        if len(starts) < 4:
            raise Boom("crash")

    stats = ChildStats("child")
    await supervise("child", child, RestartPolicy(initial_s=1, cap_s=60), stats)
    assert len(starts) == 4
    assert stats.restarts == 3
    assert stats.state == "done"
    assert stats.last_error == "Boom: crash"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # full jitter below a doubling ceiling: 1 s, 2 s, 4 s
    for gap, ceiling in zip(gaps, [1, 2, 4], strict=True):
        assert 0 <= gap <= ceiling


async def test_gives_up_past_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    crashes = 0

    async def child() -> None:
        nonlocal crashes
        crashes += 1
        raise Boom("always")

    stats = ChildStats("bad")
    policy = RestartPolicy(initial_s=1, cap_s=2, budget=3, window_s=600)
    with pytest.raises(SupervisorGaveUp, match="bad crashed 4 times"):
        await supervise("bad", child, policy, stats)
    assert crashes == 4
    assert stats.state == "gave_up"


async def test_crashes_outside_the_window_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crashes = 0

    async def child() -> None:
        nonlocal crashes
        crashes += 1
        if crashes == 10:
            return
        await trio.sleep(100)  # each crash comes long after the previous one
        raise Boom("slow")

    policy = RestartPolicy(initial_s=1, cap_s=2, budget=2, window_s=150)
    await supervise("slow", child, policy)
    assert crashes == 10


async def test_never_swallows_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def child() -> None:
        nonlocal runs
        runs += 1
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await supervise("forever", child, RestartPolicy())
    assert scope.cancelled_caught
    assert runs == 1


async def test_cancel_during_backoff_stops_the_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def child() -> None:
        raise Boom("x")

    with trio.move_on_after(30) as scope:
        await supervise("x", child, RestartPolicy(initial_s=1, cap_s=60, budget=1000))
    assert scope.cancelled_caught


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(initial_s=1, cap_s=60, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(delays[8:]) > 30  # past 2**6 the ceiling is the cap
    assert len(set(delays)) == len(delays)  # jitter: no two alike


async def test_backoff_resets_after_a_healthy_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial_s=1, cap_s=60, healthy_after_s=60, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.failures == 6
    backoff.mark_start()
    await trio.sleep(61)
    assert backoff.next_delay() <= 1
    assert backoff.failures == 1


async def test_an_unrecoverable_failure_is_passed_on_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def child() -> None:
        nonlocal runs
        runs += 1
        raise Unrecoverable("port in use")

    stats = ChildStats("http")
    with pytest.raises(Unrecoverable, match="port in use"):
        await supervise("http", child, RestartPolicy(), stats)
    assert runs == 1
    assert stats.state == "failed"
    assert trio.current_time() == 0
