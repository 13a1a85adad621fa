"""Every registered exchange, through the real collector, against its simulator on loopback.

The registry test checks that each exchange has its adapter, simulator, frames (recorded in
tests/captures or built from docs/exchanges.md) and test modules. The collector tests run per
exchange and wire version: trades arrive with canonical symbols, prices digit for digit and the
exchange's UTC time; garbage is counted without a reconnect; a drop reconnects and resubscribes;
the exchange's reconnect notice rotates make-before-break.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

import chrono.exchanges
from chrono.collect import CollectorStats, run_collector
from chrono.config import CollectorConfig
from chrono.errors import InvalidFrame
from chrono.exchanges import EXCHANGES, Exchange
from chrono.model import FeedRules, PriceFeed, utc_now
from chrono.testing.simulators import SIMULATORS, Simulator
from tests.recorded import CAPTURES, received
from tests.waiting import wait_until

TESTS = Path(__file__).resolve().parent

# Frames per exchange: a recording in tests/captures, or frames from docs/exchanges.md.
RECORDED = {
    "coinbase": ["coinbase-ticker"],
    "binance": ["binance-bookticker"],
    "binance_us": ["binance-us-bookticker"],
    "kraken": ["kraken-v1-ticker"],
    "okx": ["okx-tickers"],
}
DOCUMENTED = {  # (wire version, symbols, frame) from docs/exchanges.md where nothing was recorded
    "bitstamp": (
        None,
        ["ETH/USD"],
        '{"data":{"id":216000477,"timestamp":"1641343699","amount":0.0792,"amount_str":'
        '"0.07920000","price":3805.44,"price_str":"3805.44","type":0,"microtimestamp":'
        '"1641343699596000","buy_order_id":1443875737346049,"sell_order_id":1443875731320832},'
        '"channel":"live_trades_ethusd","event":"trade"}',
    ),
    "gemini": (
        None,
        ["BTC/USD"],
        '{"u":12345678,"E":1759240000123456789,"s":"btcusd","b":"109876.12","B":"0.5",'
        '"a":"109876.45","A":"1.25","c":"109876.30","C":"0.01"}',
    ),
    "bybit": (
        None,
        ["BTC/USDT"],
        '{"topic":"tickers.BTCUSDT","ts":1673853746003,"type":"snapshot","cs":2588407389,'
        '"data":{"symbol":"BTCUSDT","lastPrice":"21109.77","highPrice24h":"21426.99",'
        '"lowPrice24h":"20575","prevPrice24h":"20704.93","volume24h":"6780.866843",'
        '"turnover24h":"141946527.22907118","price24hPcnt":"0.0196",'
        '"usdIndexPrice":"21120.2400136"}}',
    ),
}


def versions() -> list[tuple[str, str | None]]:
    """(registry name, wire version) for every default entry and every other version."""
    out: list[tuple[str, str | None]] = []
    for name, entry in EXCHANGES.items():
        out.append((name, None))
        out.extend((name, version) for version in entry.protocols)
    return out


def symbols_for(name: str) -> list[str]:
    return SIMULATORS[name].sample_symbols()


def module_of(entry: Exchange) -> str:
    """The ``chrono.exchanges`` module that defines this registry entry."""
    for info in pkgutil.iter_modules(chrono.exchanges.__path__):
        module = importlib.import_module(f"chrono.exchanges.{info.name}")
        if any(value is entry for value in vars(module).values()):
            return info.name
    raise AssertionError(f"{entry.name}: no module in chrono.exchanges defines it")


@pytest.mark.parametrize("name", sorted(EXCHANGES))
def test_every_exchange_has_adapter_simulator_frames_and_tests(name: str) -> None:
    entry = EXCHANGES[name]
    module = module_of(entry)
    assert SIMULATORS[name].exchange is entry
    assert SIMULATORS[name].__module__ == f"chrono.testing.simulators.{module}"
    for kind in ("adapter", "simulator"):
        assert (TESTS / f"test_{module}_{kind}.py").is_file(), f"no tests for {module} {kind}"
    assert name in RECORDED or name in DOCUMENTED, f"{name}: no frames to replay"


def test_every_recording_belongs_to_an_exchange() -> None:
    claimed = {capture for captures in RECORDED.values() for capture in captures}
    assert {path.stem for path in CAPTURES.glob("*.jsonl")} == claimed
    assert set(RECORDED) <= set(EXCHANGES)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_frames_parse_into_feeds(name: str) -> None:
    version, symbols, frame = DOCUMENTED[name]
    exchange = EXCHANGES[name].protocol(version)
    adapter = exchange.adapter(exchange.symbol_map(symbols), "w")
    [feed] = adapter.parse(frame, utc_now()).feeds
    assert feed.symbol == symbols[0]
    assert feed.source == exchange.name


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recordings_replay_without_crashing(name: str) -> None:
    """The exact expectations live in each adapter's tests; here: nothing escapes ``parse``."""
    for capture in RECORDED[name]:
        entry = EXCHANGES[name]
        for exchange in (entry, *entry.protocols.values()):
            adapter = exchange.adapter(exchange.symbol_map(["BTC/USD"]), "w")
            for frame in received(capture):
                with contextlib.suppress(InvalidFrame):  # anything else fails the test
                    adapter.parse(frame, utc_now())


class Run:
    def __init__(self, name: str, version: str | None, sim: Simulator, **options: Any) -> None:
        self.exchange: Exchange = EXCHANGES[name].protocol(version)
        self.sim = sim
        self.symbols = symbols_for(name)
        self.map = self.exchange.symbol_map(self.symbols)
        options = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, **options}
        self.config = CollectorConfig(
            exchange=name, symbols=self.symbols, url=sim.endpoint_for(version),
            protocol=version, **options,
        )  # fmt: skip
        self.stats = CollectorStats(self.config.worker_id, name, self.symbols)
        self.feeds: list[PriceFeed] = []

    async def start(self, nursery: trio.Nursery) -> None:
        send, receive = trio.open_memory_channel[list[PriceFeed]](10_000)
        nursery.start_soon(run_collector, self.config, FeedRules(), send, self.stats)

        async def drain() -> None:
            async for feeds in receive:
                self.feeds.extend(feeds)

        nursery.start_soon(drain)


async def start(
    nursery: trio.Nursery, name: str, version: str | None = None, **options: Any
) -> Run:
    natives = EXCHANGES[name].protocol(version).symbol_map(symbols_for(name)).natives()
    sim = SIMULATORS[name](symbols=natives, tick_interval_s=0.02)
    await nursery.start(sim.serve)
    run = Run(name, version, sim, **options)
    await run.start(nursery)
    return run


@pytest.mark.parametrize(("name", "version"), versions())
async def test_collects_trades_with_canonical_symbols(
    nursery: trio.Nursery, name: str, version: str | None
) -> None:
    with trio.fail_after(15):
        run = await start(nursery, name, version)
        await wait_until(lambda: {f.symbol for f in run.feeds} == set(run.symbols))
        await wait_until(lambda: len(run.feeds) >= 10)
    sent = {(t.native, t.price, t.time) for t in run.sim.ticks}
    # The simulator spells its ticks the default version's way; compare those by value.
    default = EXCHANGES[name].symbol_map(run.symbols)
    by_value = {(default.to_canonical(t.native), Decimal(t.price)) for t in run.sim.ticks}
    for feed in run.feeds:
        native = run.map.native(feed.symbol)
        assert feed.source == run.exchange.name
        assert feed.metadata["native_symbol"] == native
        assert feed.timestamp.tzinfo is not None
        assert not feed.timestamp.utcoffset()
        if feed.metadata.get("price") == "mid":  # a quote feed: priced between bid and ask
            assert feed.bid is not None
            assert feed.ask is not None
            assert feed.bid <= feed.price <= feed.ask
        elif version is None:  # digit for digit, with the exchange's time
            assert (native, str(feed.price), feed.timestamp) in sent
        else:
            assert (feed.symbol, feed.price) in by_value
    assert run.stats.reconnects == 0
    assert run.stats.invalid == {}


@pytest.mark.parametrize("name", sorted(EXCHANGES))
async def test_garbage_is_counted_and_a_drop_resubscribes(nursery: trio.Nursery, name: str) -> None:
    with trio.fail_after(15):
        run = await start(nursery, name)
        await wait_until(lambda: len(run.feeds) >= 4)
        run.sim.set_garbage_ratio(1.0)  # a truncated frame after every data frame
        await wait_until(lambda: sum(run.stats.invalid.values()) >= 5)
        run.sim.set_garbage_ratio(0.0)
        assert run.sim.connections_total == 1
        run.sim.drop_connections()
        await wait_until(lambda: run.sim.connections_total == 2)
        before = len(run.feeds)
        await wait_until(lambda: len(run.feeds) >= before + 4)
    assert set(run.stats.invalid) == {"malformed"}
    assert run.stats.reconnects == 1


@pytest.mark.parametrize("name", sorted(n for n in EXCHANGES if SIMULATORS[n]().notice()))
async def test_the_exchanges_reconnect_notice_rotates_without_a_gap(
    nursery: trio.Nursery, name: str
) -> None:
    with trio.fail_after(15):
        run = await start(nursery, name)
        await wait_until(lambda: len(run.feeds) >= 4)
        assert run.sim.send_notice()
        await wait_until(lambda: run.stats.rotations == 1)
        await wait_until(lambda: len(run.sim.clients) == 1)  # the old link is closed
        before = len(run.feeds)
        await wait_until(lambda: len(run.feeds) >= before + 4)
    assert run.sim.connections_total == 2
    assert run.stats.reconnects == 0
