"""The supervisor and the backoff it shares with the collectors, on trio's autojump clock;
readiness through ``nursery.start``; an ``Unrecoverable`` from inside a child's nursery, in
``supervise`` and in ``chrono run`` (a store down at start that comes back newer than the code).
"""

from __future__ import annotations

import itertools
import logging
import random
import sqlite3
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from chrono.backoff import Backoff
from chrono.errors import SchemaTooNew, SupervisorGaveUp, Unrecoverable
from chrono.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from chrono.store.sqlite import SQLiteStore
from chrono.supervise import ChildStats, RestartPolicy, supervise
from chrono.testing.process import open_chrono
from chrono.testing.simulators import CoinbaseSimulator
from tests.daemon import SQLITE_STORAGE, write_config
from tests.waiting import wait_until


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


async def test_start_returns_the_value_the_child_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(3)  # binding takes a while: start waits for it
        task_status.started(8080)
        await trio.sleep_forever()

    stats = ChildStats("http")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(supervise, "http", serve, RestartPolicy(), stats)
        assert port == 8080
        assert trio.current_time() == 3
        assert stats.started_value == 8080
        assert stats.state == "running"
        nursery.cancel_scope.cancel()


async def test_a_restarted_child_reports_again_and_its_latest_value_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started(9000 + runs)  # port 0: a new port on every start
        if runs < 3:
            await trio.sleep(10)
            raise Boom("lost the socket")
        await trio.sleep_forever()

    stats = ChildStats("http")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(supervise, "http", serve, RestartPolicy(), stats)
        assert port == 9001
        await wait_until(lambda: runs == 3, timeout_s=600)
        assert stats.started_value == 9003
        assert stats.restarts == 2
        assert stats.state == "running"
        nursery.cancel_scope.cancel()


async def test_start_waits_through_crashes_before_the_first_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise Boom("not yet")
        task_status.started(runs)
        await trio.sleep_forever()

    stats = ChildStats("late")
    async with trio.open_nursery() as nursery:
        assert await nursery.start(supervise, "late", serve, RestartPolicy(), stats) == 3
        assert stats.restarts == 2
        nursery.cancel_scope.cancel()


async def test_a_child_that_never_reports_ends_start_with_the_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("never")

    policy = RestartPolicy(initial_s=1, cap_s=2, budget=2)
    async with trio.open_nursery() as nursery:
        with pytest.raises(SupervisorGaveUp, match="never crashed 3 times"):
            await nursery.start(supervise, "never", serve, policy)


async def test_start_on_a_child_without_task_status_is_a_bug_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def child() -> None:
        await trio.sleep_forever()

    stats = ChildStats("plain")
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match="task_status"):
            await nursery.start(supervise, "plain", child, RestartPolicy(), stats)
    assert stats.restarts == 0


async def test_cancellation_passes_through_a_started_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as inner:  # its tasks' Cancelled come out as a group
            inner.start_soon(trio.sleep_forever)
            inner.start_soon(trio.sleep_forever)
            task_status.started()
            await trio.sleep_forever()

    stats = ChildStats("forever")
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "forever", serve, RestartPolicy(), stats)
    assert scope.cancelled_caught
    assert runs == 1
    assert stats.restarts == 0


async def test_an_error_group_from_the_child_is_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def child() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(_raise, Boom("inner")))

    stats = ChildStats("grouped")
    await supervise("grouped", child, RestartPolicy(), stats)
    assert runs == 2
    assert stats.restarts == 1
    assert stats.state == "done"


async def _raise(exc: BaseException) -> None:
    raise exc


SCHEMA_TOO_NEW = "the schema is at version 99, newer than this Chrono knows"


async def test_an_unrecoverable_from_inside_the_childs_nursery_is_passed_on_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def writer() -> None:  # as IngestWriter.run: a replayer task beside the taker
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as inner:
            inner.start_soon(partial(_raise, SchemaTooNew(SCHEMA_TOO_NEW)))
            await trio.sleep_forever()

    stats = ChildStats("writer")
    with pytest.raises(SchemaTooNew) as raised:  # the error itself, not a group
        await supervise("writer", writer, RestartPolicy(), stats)
    assert str(raised.value) == SCHEMA_TOO_NEW
    assert runs == 1
    assert stats.state == "failed"
    assert stats.last_error == f"SchemaTooNew: {SCHEMA_TOO_NEW}"
    assert stats.restarts == 0
    assert trio.current_time() == 0


async def test_an_unrecoverable_after_the_report_comes_out_of_the_nursery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(1)
        async with trio.open_nursery() as inner:
            inner.start_soon(partial(_raise, Unrecoverable("gone for good")))

    stats = ChildStats("http")
    with pytest.RaisesGroup(pytest.RaisesExc(Unrecoverable, match=r"^gone for good$")):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(supervise, "http", serve, RestartPolicy(), stats) == 1
    assert stats.state == "failed"


async def test_the_unrecoverable_wins_over_the_other_errors_of_a_group(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def child() -> None:
        async with trio.open_nursery() as inner:  # both raise before either can be cancelled
            inner.start_soon(partial(_raise, Boom("beside it")))
            inner.start_soon(_nested_unrecoverable)

    stats = ChildStats("mixed")
    with (
        caplog.at_level(logging.ERROR, "chrono.supervise"),
        pytest.raises(Unrecoverable, match=r"^deep down$"),
    ):
        await supervise("mixed", child, RestartPolicy(), stats)
    assert stats.state == "failed"
    assert stats.restarts == 0
    [record] = caplog.records
    assert record.getMessage() == "mixed failed: deep down; other errors beside it:"
    assert record.exc_info is not None
    others = record.exc_info[1]
    assert isinstance(others, ExceptionGroup)
    assert [str(e) for e in others.exceptions] == ["beside it"]


async def _nested_unrecoverable() -> None:
    async with trio.open_nursery() as deeper:
        deeper.start_soon(partial(_raise, Unrecoverable("deep down")))


async def test_chrono_run_exits_1_when_a_store_down_at_start_comes_back_too_new(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The writer meets ``SchemaTooNew`` in its replayer task, inside its own nursery: the
    process ends at once with the store's message, not after the restart budget."""
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    db = tmp_path / "data" / "chrono.db"
    db.mkdir(parents=True)  # SQLite cannot open a folder: the store is down at start
    newer = tmp_path / "newer.db"
    store = SQLiteStore(str(newer))
    await store.open()
    await store.aclose()
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO chrono_schema_version VALUES (99, 'future', '2030-01-01')")
    conn.close()
    storage = SQLITE_STORAGE + "\nretry_initial_s = 0.05\nretry_max_s = 0.2"
    config = await write_config(tmp_path, sim.url, storage=storage)
    with trio.fail_after(30):
        async with open_chrono(config) as daemon:
            assert any(m.startswith("store unavailable at start") for m in daemon.messages())
            await wait_until(lambda: any("store still failing" in m for m in daemon.messages()))
            db.rmdir()
            newer.rename(db)  # the store is back, migrated by a newer Chrono
            assert await daemon.wait_exit() == 1
    messages = daemon.messages()
    stopped = [m for m in messages if m.startswith("chrono stopped: ")]
    known = SQLITE_MIGRATIONS[-1].version
    assert stopped == [f"chrono stopped: {db}: {SCHEMA_TOO_NEW} ({known}); upgrade Chrono, or "
                       "point storage.url at another database"], daemon.tail()  # fmt: skip
    assert not any("crashed" in m for m in messages), daemon.tail()
