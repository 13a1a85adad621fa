"""Restart a crashed child with backoff; give up past a restart budget.

A child is an async callable that runs until cancelled or until its input ends. Returning
normally ends supervision (a drained pipeline stage). Raising an ``Exception`` restarts it after
a jittered, capped delay; more than ``budget`` crashes within ``window_s`` raises
``SupervisorGaveUp``, so the process exits 1 and systemd restarts it clean. ``Unrecoverable``
is passed on at once, also when it comes from a task inside the child's own nursery (then it
arrives in an exception group: the ``Unrecoverable`` itself is raised, not the group, and wins
over any other error beside it, which is logged). ``trio.Cancelled`` (a ``BaseException``)
always passes through.

Readiness follows trio's own convention: ``nursery.start_soon(supervise, ...)`` runs the child
as ``child()``; ``await nursery.start(supervise, ...)`` runs it as
``child(task_status=...)``, so only a child that takes ``task_status`` (with the usual
``trio.TASK_STATUS_IGNORED`` default) may be started that way, and a child that cannot be called
so is a bug that raises at once, not a crash to retry. ``nursery.start`` returns once the child
*first* calls ``task_status.started(value)``, with that value (the HTTP server: its port).
Every run gets a fresh ``task_status`` of its own, so a restarted child reports again without
error; ``ChildStats.started_value`` keeps the value of the latest report. A child that crashes
before it ever reported is restarted like any other: the caller of ``nursery.start`` waits
until a run reports, and an ``Unrecoverable`` or ``SupervisorGaveUp`` ends the wait by coming
out of ``nursery.start``; a child that returns without reporting is trio's ``RuntimeError``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import trio

from chrono.backoff import Backoff
from chrono.errors import SupervisorGaveUp, Unrecoverable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_s: float = 1.0
    cap_s: float = 60.0
    healthy_after_s: float = 60.0
    budget: int = 10
    window_s: float = 600.0


class ChildStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A supervised component."""

    name: str
    state: str  # starting | running | backoff | done | failed | gave_up
    restarts: int
    last_error: str | None


@dataclass(slots=True)
class ChildStats:
    name: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)
    started_value: Any = None  # what the latest run passed to task_status.started()

    def statistics(self) -> ChildStatistics:
        return ChildStatistics(name=self.name, state=self.state, restarts=self.restarts,
                               last_error=self.last_error)  # fmt: skip


class _RunStatus:
    """The ``task_status`` of one run: records the value; the first report of the supervision
    goes on to the caller's ``task_status`` (what ``nursery.start`` returns)."""

    def __init__(self, stats: ChildStats, caller: trio.TaskStatus[Any] | None) -> None:
        self._stats = stats
        self._caller = caller
        self.reported = False

    def started(self, value: Any = None) -> None:
        if self.reported:
            raise RuntimeError("called 'started' twice on the same task status")
        self.reported = True
        self._stats.started_value = value
        if self._caller is not None:
            self._caller.started(value)


async def supervise(
    name: str,
    child: Callable[[], Awaitable[None]],
    policy: RestartPolicy,
    stats: ChildStats | None = None,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``child`` until it returns; restart it on crash; raise past the budget. Started
    with ``nursery.start``, report the child's first ``task_status.started`` value."""
    stats = stats or ChildStats(name)
    backoff = Backoff(
        initial_s=policy.initial_s, cap_s=policy.cap_s, healthy_after_s=policy.healthy_after_s
    )
    startable = task_status is not trio.TASK_STATUS_IGNORED
    caller: trio.TaskStatus[Any] | None = task_status if startable else None
    while True:
        status = _RunStatus(stats, caller) if startable else None
        # Called outside the ``try``: a child that does not take these arguments is a bug.
        running = child() if status is None else cast("Any", child)(task_status=status)
        backoff.mark_start()
        stats.state = "running"
        fatal: Unrecoverable | None = None
        try:
            await running
        except Unrecoverable as exc:
            _fail(exc, stats)
            raise
        except BaseExceptionGroup as group:
            fatal = _unrecoverable_in(name, group)
            if fatal is None:
                if not isinstance(group, Exception):
                    raise  # Cancelled or KeyboardInterrupt among them: not a crash
                _count_crash(name, group, stats, policy)
        except Exception as exc:
            _count_crash(name, exc, stats, policy)
        else:
            stats.state = "done"
            return
        finally:
            if status is not None and status.reported:
                caller = None  # the caller has its value: restarts only record theirs
        if fatal is not None:
            _fail(fatal, stats)
            raise fatal  # outside the ``except``: its own cause and context stay as they were
        stats.state = "backoff"
        delay = backoff.next_delay()
        log.warning("%s crashed; restarting", name, extra={"data": {"delay_s": round(delay, 3)}})
        await trio.sleep(delay)


def _fail(exc: Unrecoverable, stats: ChildStats) -> None:
    stats.state = "failed"
    stats.last_error = f"{type(exc).__name__}: {exc}"


def _unrecoverable_in(name: str, group: BaseExceptionGroup[BaseException]) -> Unrecoverable | None:
    """The first ``Unrecoverable`` anywhere in ``group``; the other errors beside it logged."""
    found, _ = group.split(Unrecoverable)
    if found is None:
        return None
    fatal = _first_leaf(found)
    _, rest = group.split(lambda exc: exc is fatal)
    others = rest.split(Exception)[0] if rest is not None else None
    if others is not None:
        log.error("%s failed: %s; other errors beside it:", name, fatal, exc_info=others)
    return fatal


def _first_leaf(group: BaseExceptionGroup[Unrecoverable]) -> Unrecoverable:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _count_crash(name: str, exc: Exception, stats: ChildStats, policy: RestartPolicy) -> None:
    now = trio.current_time()
    stats.restarts += 1
    stats.last_error = f"{type(exc).__name__}: {exc}"
    stats.crash_times.append(now)
    while stats.crash_times and now - stats.crash_times[0] > policy.window_s:
        stats.crash_times.popleft()
    log.error("%s crashed: %s", name, stats.last_error, exc_info=exc)
    if len(stats.crash_times) > policy.budget:
        stats.state = "gave_up"
        raise SupervisorGaveUp(
            f"{name} crashed {len(stats.crash_times)} times in {policy.window_s:g} s"
        ) from exc
