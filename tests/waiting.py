"""Waiting for a condition that a real peer makes true, without fixed sleeps."""

from __future__ import annotations

from collections.abc import Callable

import trio

POLL_S = 0.01


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(POLL_S)
