"""Taking everything a channel holds in one wake-up.

A Trio memory channel costs a task switch per item; a stage that wakes up for one item and then
takes what else is queued pays it once per burst instead of once per item.
"""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


def with_queued(first: list[T], channel: trio.MemoryReceiveChannel[list[T]], limit: int) -> list[T]:
    """``first`` plus the lists queued in ``channel`` now, until ``limit`` items or none left.

    ``first`` itself is never changed (its sender may still read it). An ended channel stops
    the taking; the caller's next receive sees the end.
    """
    merged = first
    while len(merged) < limit:
        try:
            more = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        if merged is first:
            merged = list(first)
        merged.extend(more)
    return merged
