"""Restart a crashed child with backoff; give up past a restart budget.

A child is an async callable that runs until cancelled or until its input ends. Returning
normally ends supervision (a drained pipeline stage). Raising an ``Exception`` restarts it after
a jittered, capped delay; more than ``budget`` crashes within ``window_s`` raises
``SupervisorGaveUp``, so the process exits 1 and systemd restarts it clean. ``Unrecoverable``
is passed on at once, and ``trio.Cancelled`` (a ``BaseException``) always passes through.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(slots=True)
class ChildStats:
    name: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


async def supervise(
    name: str,
    child: Callable[[], Awaitable[None]],
    policy: RestartPolicy,
    stats: ChildStats | None = None,
) -> None:
    """Run ``child`` until it returns; restart it on crash; raise past the budget."""
    stats = stats or ChildStats(name)
    backoff = Backoff(
        initial_s=policy.initial_s, cap_s=policy.cap_s, healthy_after_s=policy.healthy_after_s
    )
    while True:
        backoff.mark_start()
        stats.state = "running"
        try:
            await child()
        except Unrecoverable:
            stats.state = "failed"
            raise
        except Exception as exc:
            _count_crash(name, exc, stats, policy)
        else:
            stats.state = "done"
            return
        stats.state = "backoff"
        delay = backoff.next_delay()
        log.warning("%s crashed; restarting", name, extra={"data": {"delay_s": round(delay, 3)}})
        await trio.sleep(delay)


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
