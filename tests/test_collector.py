"""The collector against the Coinbase simulator on loopback: real WebSockets, real protocol."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import trio

from chrono.collect import CollectorStats, run_collector
from chrono.config import CollectorConfig
from chrono.model import Bounds, FeedRules, PriceFeed
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.daemon import free_port
from tests.waiting import wait_until

SYMBOLS = ["BTC/USD", "ETH/USD"]


class Harness:
    """A simulator and one collector pointed at it; feeds land in ``self.feeds``."""

    def __init__(self, sim: CoinbaseSimulator, stats: CollectorStats) -> None:
        self.sim = sim
        self.stats = stats
        self.feeds: list[PriceFeed] = []

    async def drain(self, receive: trio.MemoryReceiveChannel[list[PriceFeed]]) -> None:
        async for feeds in receive:
            self.feeds.extend(feeds)


async def start(
    nursery: trio.Nursery,
    *,
    symbols: list[str] = SYMBOLS,
    rules: FeedRules | None = None,
    sim: CoinbaseSimulator | None = None,
    **collector: Any,
) -> Harness:
    sim = sim or CoinbaseSimulator(symbols=[s.replace("/", "-") for s in symbols])
    await nursery.start(sim.serve)
    config = CollectorConfig(
        exchange="coinbase",
        symbols=symbols,
        url=sim.endpoint,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        **collector,
    )
    stats = CollectorStats(config.worker_id, config.exchange, symbols)
    harness = Harness(sim, stats)
    send, receive = trio.open_memory_channel[list[PriceFeed]](1000)
    nursery.start_soon(run_collector, config, rules or FeedRules(), send, stats)
    nursery.start_soon(harness.drain, receive)
    return harness


async def test_subscribes_with_per_channel_lists_and_collects(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        h = await start(nursery)
        await h.sim.wait_subscribed()
        await wait_until(lambda: len(h.feeds) >= 10)
    products = ["BTC-USD", "ETH-USD"]
    assert h.sim.subscribe_requests == [
        {
            "type": "subscribe",
            "channels": [
                {"name": "ticker", "product_ids": products},
                {"name": "heartbeat", "product_ids": products},
            ],
        }
    ]
    assert h.stats.state == "streaming"
    assert h.stats.feeds_collected == len(h.feeds)
    sent = {(t.native.replace("-", "/"), t.price, t.time) for t in h.sim.ticks}
    for feed in h.feeds:
        assert feed.source == "coinbase"
        assert feed.worker_id == "coinbase"
        assert (feed.symbol, str(feed.price), feed.timestamp) in sent


async def test_reconnects_and_resubscribes_after_an_abrupt_close(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        h = await start(nursery)
        await h.sim.wait_subscribed()
        await wait_until(lambda: len(h.feeds) >= 4)
        h.sim.drop_connections()
        await h.sim.wait_subscribed(2)
        before = len(h.feeds)
        await wait_until(lambda: len(h.feeds) >= before + 4)
    assert h.stats.reconnects == 1
    assert h.stats.failures_in_a_row == 0  # the lost connection had delivered data
    assert h.sim.connections_total == 2
    assert h.sim.subscribe_requests[0] == h.sim.subscribe_requests[1]
    assert "1006" in (h.stats.last_error or "")
    assert h.stats.state == "streaming"


async def test_silence_without_data_reconnects_even_with_heartbeats(
    nursery: trio.Nursery,
) -> None:
    sim = CoinbaseSimulator(heartbeat_interval_s=0.05)
    with trio.fail_after(10):
        h = await start(nursery, sim=sim, silence_timeout_s=0.5, stale_floor_s=0.5)
        await sim.wait_subscribed()
        await wait_until(lambda: len(h.feeds) >= 2)
        sim.set_silent(True)  # heartbeats keep coming: the link is fine, the data is not
        await sim.wait_subscribed(2)
    assert h.stats.reconnects >= 1
    assert h.stats.last_error == "no data for 0.5 s"


async def test_garbage_is_counted_and_the_connection_kept(nursery: trio.Nursery) -> None:
    garbage: list[str | bytes] = [
        "not json",
        b"\xff\xfe",
        json.dumps({"type": "ticker", "product_id": "BTC-USD"}),
        json.dumps({"type": "ticker", "product_id": "BTC-USD", "price": "abc", "time": "x"}),
        json.dumps({"type": "status", "products": []}),
    ]
    with trio.fail_after(10):
        h = await start(nursery)
        await h.sim.wait_subscribed()
        await wait_until(lambda: len(h.feeds) >= 2)
        h.sim.inject(garbage)
        await wait_until(lambda: sum(h.stats.invalid.values()) == len(garbage))
        before = len(h.feeds)
        await wait_until(lambda: len(h.feeds) >= before + 4)
    assert h.stats.invalid == {"malformed": 2, "schema": 2, "unknown_type": 1}
    assert h.sim.connections_total == 1
    assert h.stats.reconnects == 0
    assert len(h.stats.samples) == len(garbage)


async def test_untraded_products_and_invalid_prices_are_counted(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(symbols=["BTC-USD"], untraded=["HBAR-USD"])
    rules = FeedRules(bounds={"BTC/USD": Bounds(None, Decimal(1))})  # every BTC price is above
    with trio.fail_after(10):
        h = await start(nursery, sim=sim, symbols=["BTC/USD", "HBAR/USD"], rules=rules)
        await sim.wait_subscribed()
        await wait_until(lambda: h.stats.invalid["price_above_bound"] >= 3)
    assert h.stats.skipped["untraded"] >= 1
    assert h.feeds == []
    assert h.stats.reconnects == 0


async def test_an_unreachable_exchange_is_retried_with_backoff(nursery: trio.Nursery) -> None:
    port = await free_port()  # nothing listens there: connection refused
    config = CollectorConfig(
        exchange="coinbase",
        symbols=SYMBOLS,
        url=f"ws://127.0.0.1:{port}",
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    stats = CollectorStats("coinbase", "coinbase", SYMBOLS)
    send, _receive = trio.open_memory_channel[list[PriceFeed]](1)
    with trio.fail_after(10):
        nursery.start_soon(run_collector, config, FeedRules(), send, stats)
        await wait_until(lambda: stats.reconnects >= 3)
    assert "cannot connect" in (stats.last_error or "")
    assert stats.failures_in_a_row >= 3  # what the collector_failing alert counts
