"""Capped exponential backoff with full jitter, reset after a healthy period.

Shared by the supervisor (crashed children) and the collectors (lost connections), so both
spread their retries the same way and never storm a peer.
"""

from __future__ import annotations

import random

import trio


class Backoff:
    """Delay ``n`` is uniform in ``[0, min(cap, initial * 2**n)]`` (AWS "full jitter").

    Call ``mark_start()`` when an attempt begins; ``wait()`` after it fails sleeps the next delay,
    first resetting the sequence if the attempt lasted ``healthy_after_s`` or longer.
    """

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        cap_s: float = 60.0,
        healthy_after_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.healthy_after_s = healthy_after_s
        self.failures = 0
        self._rng = rng or random.Random()
        self._started_at: float | None = None

    def mark_start(self) -> None:
        self._started_at = trio.current_time()

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """The ceiling grows with each failure; the delay is drawn below it."""
        if (
            self._started_at is not None
            and trio.current_time() - self._started_at >= self.healthy_after_s
        ):
            self.failures = 0
        ceiling = min(self.cap_s, self.initial_s * 2.0**self.failures)
        self.failures += 1
        return self._rng.uniform(0.0, ceiling)

    async def wait(self) -> float:
        delay = self.next_delay()
        await trio.sleep(delay)
        return delay
