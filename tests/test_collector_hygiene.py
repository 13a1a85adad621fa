"""Feed hygiene against a simulator on loopback: acks that lie, quiet pairs, 429s, rotation.

Testing policy: real WebSockets on 127.0.0.1, simulators on port 0, ``fail_after`` on every
test; waits are for events in the feed, never for time.
"""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from chrono.collect import CollectorStats, run_collector
from chrono.config import CollectorConfig
from chrono.model import FeedRules, PriceFeed
from chrono.testing.simulators import CoinbaseSimulator
from tests.waiting import wait_until

SYMBOLS = ["BTC/USD", "ETH/USD"]


class Run:
    """One collector against ``sim``; feeds land in ``self.feeds``."""

    def __init__(self, sim: CoinbaseSimulator, config: CollectorConfig) -> None:
        self.sim = sim
        self.config = config
        self.stats = CollectorStats(config.worker_id, config.exchange, list(config.symbols))
        self.feeds: list[PriceFeed] = []

    def of(self, symbol: str) -> list[PriceFeed]:
        return [feed for feed in self.feeds if feed.symbol == symbol]

    def freshness(self, symbol: str) -> dict[str, Any]:
        [entry] = [msgspec.to_builtins(e) for e in self.stats.statistics().freshness
                   if e.symbol == symbol]  # fmt: skip
        return entry

    async def collect(self, nursery: trio.Nursery) -> None:
        send, receive = trio.open_memory_channel[list[PriceFeed]](1000)
        nursery.start_soon(run_collector, self.config, FeedRules(), send, self.stats)

        async def drain() -> None:
            async for feeds in receive:
                self.feeds.extend(feeds)

        nursery.start_soon(drain)


async def start(nursery: trio.Nursery, sim: CoinbaseSimulator, **options: Any) -> Run:
    if not sim.url:
        await nursery.start(sim.serve)
    options = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, **options}
    config = CollectorConfig(exchange="coinbase", symbols=SYMBOLS, url=sim.endpoint, **options)
    run = Run(sim, config)
    await run.collect(nursery)
    await wait_until(lambda: run.stats.freshness is not None)
    return run


def quick(**options: Any) -> dict[str, Any]:
    """Thresholds short enough for a test: unknown pace 0.3 s, floor 0.2 s."""
    return {"silence_timeout_s": 0.3, "stale_floor_s": 0.2, "stale_ceiling_s": 5.0, **options}


async def test_an_acked_symbol_that_never_delivers_is_resubscribed(
    nursery: trio.Nursery,
) -> None:
    sim = CoinbaseSimulator(symbols=["BTC-USD", "ETH-USD"], tick_interval_s=0.02)
    sim.mute("ETH-USD")  # the first subscription of ETH-USD is acked, then nothing comes
    with trio.fail_after(10):
        run = await start(nursery, sim, **quick())
        await wait_until(lambda: len(run.of("BTC/USD")) >= 5)
        assert run.of("ETH/USD") == []
        assert run.freshness("ETH/USD")["acked"]
        await wait_until(lambda: len(run.of("ETH/USD")) >= 3)
    assert run.stats.resubscribes >= 1
    assert run.freshness("ETH/USD")["resubscribes"] >= 1
    assert sim.connections_total == 1  # resubscribed on the live connection, no reconnect
    assert run.stats.reconnects == 0


async def test_a_quiet_pair_does_not_restart_the_connection(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(symbols=["BTC-USD", "ETH-USD"], tick_interval_s=0.02)
    sim.mute("ETH-USD", count=1000)  # ETH never trades while BTC does
    with trio.fail_after(10):
        run = await start(nursery, sim, **quick())
        await wait_until(lambda: run.freshness("ETH/USD")["resubscribes"] >= 3)
        await wait_until(lambda: run.stats.statistics().stale_symbols == ["ETH/USD"])
    assert sim.connections_total == 1
    assert run.stats.reconnects == 0
    assert not run.freshness("BTC/USD")["stale"]
    # Each try doubles the wait: tries come at 0.3, 0.6, 1.2 s ... not every check.
    assert run.freshness("ETH/USD")["resubscribes"] <= 5


async def test_all_symbols_silent_means_a_new_connection(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(symbols=["BTC-USD", "ETH-USD"], tick_interval_s=0.02)
    with trio.fail_after(10):
        run = await start(nursery, sim, **quick())
        await wait_until(lambda: len(run.feeds) >= 10)
        sim.set_silent(True)  # heartbeats go on; data stops for every symbol
        await wait_until(lambda: sim.connections_total >= 2)
        sim.set_silent(False)
        await wait_until(lambda: run.stats.state == "streaming")
    assert run.stats.reconnects >= 1
    assert (run.stats.last_error or "").startswith("no data for")


async def test_429_on_connect_honours_retry_after(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.02)
    await nursery.start(sim.serve)
    sim.reject_connections(2, status=429, retry_after_s=0.5)
    with trio.fail_after(10):
        started = trio.current_time()
        run = await start(nursery, sim, backoff_initial_s=0.01, backoff_max_s=0.01)
        await wait_until(lambda: len(run.feeds) >= 1)
        elapsed = trio.current_time() - started
    assert sim.rejected_total == 2
    assert run.stats.rate_limited == 2
    assert "HTTP 429" in (run.stats.last_error or "")
    assert elapsed >= 1.0  # two refusals, each honoured for its Retry-After of 0.5 s


async def test_rotation_is_make_before_break_and_loses_nothing(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(symbols=["BTC-USD", "ETH-USD"], tick_interval_s=0.01)
    with trio.fail_after(15):
        run = await start(nursery, sim, rotate_after_s=0.5, **quick())
        await wait_until(lambda: run.stats.rotations >= 3)
        sim.set_silent(True)
        await wait_until(lambda: len(sim.clients) == 1)  # the replaced links are closed
        count = len(sim.ticks)
        await wait_until(lambda: len({f.key() for f in run.feeds}) >= count)
    sent = {(t.native.replace("-", "/"), t.price, t.time) for t in sim.ticks}
    got = {(f.symbol, str(f.price), f.timestamp) for f in run.feeds}
    assert got == sent  # every trade of every connection, none lost at a switch
    assert sim.connections_total == run.stats.rotations + 1
    assert run.stats.reconnects == 0
