"""Staying within an exchange's limits: connection attempts per IP, messages per connection.

``ConnectBudget`` is shared by every collector of one exchange in the process (exchanges count
connection attempts per IP): an attempt past the budget waits for the window to free a slot,
so a crash loop or a mass reconnect can never storm the exchange into a ban. ``Pacer`` spaces
what one connection sends (subscribes, resubscribes, pings) to the exchange's message rate.
"""

from __future__ import annotations

from collections import deque

import trio

from chrono.exchanges.base import Limits


class ConnectBudget:
    """At most ``attempts`` connection attempts in any ``window_s`` (a sliding window)."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.waited = 0  # attempts that had to wait for the budget
        self._lock = trio.Lock()  # attempts are granted in arrival order

    @classmethod
    def for_limits(cls, limits: Limits) -> ConnectBudget:
        return cls(limits.connects, limits.connects_window_s)

    async def acquire(self) -> None:
        """Wait until an attempt fits the window, then count it."""
        async with self._lock:
            now = trio.current_time()
            while self._times and now - self._times[0] >= self.window_s:
                self._times.popleft()
            if len(self._times) >= self.attempts:
                self.waited += 1
                await trio.sleep_until(self._times[0] + self.window_s)
                self._times.popleft()
            self._times.append(trio.current_time())


class ConnectBudgets:
    """One budget per exchange, created on first use."""

    def __init__(self) -> None:
        self._budgets: dict[str, ConnectBudget] = {}

    def get(self, name: str, limits: Limits) -> ConnectBudget:
        budget = self._budgets.get(name)
        if budget is None:
            budget = self._budgets[name] = ConnectBudget.for_limits(limits)
        return budget


class WindowCap:
    """At most ``count`` units in any ``window_s``; ``try_take`` never waits."""

    def __init__(self, count: int | None, window_s: float) -> None:
        self.count = count
        self.window_s = window_s
        self._times: deque[float] = deque()

    def try_take(self, units: int) -> bool:
        if self.count is None:
            return True
        now = trio.current_time()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) + units > self.count:
            return False
        self._times.extend([now] * units)
        return True


class Pacer:
    """Spaces sends at least ``1 / messages_per_s`` apart (one connection's outgoing rate)."""

    def __init__(self, messages_per_s: float) -> None:
        self.interval_s = 1.0 / messages_per_s
        self._next = -float("inf")
        self._lock = trio.Lock()

    async def wait(self) -> None:
        """Return when the next message may go; callers send right after."""
        async with self._lock:
            now = trio.current_time()
            if now < self._next:
                await trio.sleep_until(self._next)
                now = self._next
            self._next = now + self.interval_s
