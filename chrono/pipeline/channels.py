"""Taking everything a channel holds in one wake-up.

A Trio memory channel costs a task switch per item; a stage that wakes up for one item and then
takes what else is queued pays it once per burst instead of once per item.
"""

from __future__ import annotations

import trio

from chrono.feeds import Feeds


def with_queued(first: Feeds, channel: trio.MemoryReceiveChannel[Feeds], limit: int) -> Feeds:
    """``first`` plus the items queued in ``channel`` now, until ``limit`` feeds or none left.

    No item is changed (its sender may still read it): several are joined into a new one. An
    ended channel stops the taking; the caller's next receive sees the end.
    """
    parts, total = [first], len(first)
    while total < limit:
        try:
            more = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        parts.append(more)
        total += len(more)
    return Feeds.join(parts)
