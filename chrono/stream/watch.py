"""The consensus and status channels' publishers, run by ``StreamHub.run``.

The consensus of every symbol some client watches is computed every ``consensus_check_ms`` and
published when it is new, when ``consensus_interval_ms`` has passed since the last one, when its
state changed, or when its price moved ``consensus_deviation_bps`` from the last one published:
the update model of push oracles, so a quiet market costs one update per interval. The states
(source up/down, symbol fresh/stale, store up/down) are read every ``status_check_ms``; the hub
publishes the changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from chrono.config import StreamConfig
from chrono.errors import ChronoError
from chrono.stream.client import CONSENSUS

if TYPE_CHECKING:
    from chrono.stream.hub import ConsensusSource, StreamHub

log = logging.getLogger(__name__)


def moved(price: float | None, before: float | None, bps: float) -> bool:
    """Has ``price`` moved ``bps`` from ``before`` (appearing or vanishing counts)?"""
    if price is None or before is None or before == 0:
        return price != before
    return abs(price - before) * 10_000 >= abs(before) * bps


async def publish_consensus(hub: StreamHub, compute: ConsensusSource, config: StreamConfig) -> None:
    """Until cancelled: the watched symbols' consensus, published by the rules above."""
    last: dict[str, tuple[float, float | None, str]] = {}  # symbol -> (when, price, state)
    interval_s = config.consensus_interval_ms / 1000
    while True:
        await trio.sleep(config.consensus_check_ms / 1000)
        symbols = hub.watched(CONSENSUS)
        if not symbols:
            last.clear()
            continue
        try:
            values = await compute(symbols)
        except ChronoError as exc:  # a rate it needs is in a store that is down: next time
            log.debug("stream consensus not computed: %s", exc)
            continue
        now = trio.current_time()
        for value in values:
            before = last.get(value.symbol)
            if (
                before is None
                or now - before[0] >= interval_s
                or value.state != before[2]
                or moved(value.price, before[1], config.consensus_deviation_bps)
            ):
                hub.publish_message(CONSENSUS, value.symbol, value.payload, value.price)
                last[value.symbol] = (now, value.price, value.state)


async def publish_status(
    hub: StreamHub, states: Callable[[], dict[str, str]], config: StreamConfig
) -> None:
    """Until cancelled: the states, read every ``status_check_ms``; the hub sends the changes."""
    while True:
        hub.update_states(states())
        await trio.sleep(config.status_check_ms / 1000)
