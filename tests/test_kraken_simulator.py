"""The Kraken simulator (v2 at ``/v2``, v1 at ``/``), spoken to by a plain ``websockets`` client.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps: tests wait for frames, acks or heartbeats, never for time.
Frames are read with the real adapters; v2 feeds must equal ``sim.ticks`` (symbol, price text,
time), v1 feeds carry no exchange time, so they are compared on symbol and ``Decimal`` price.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.exchanges.base import Adapter, FrameKind, ParsedFrame
from chrono.exchanges.kraken import EXCHANGE
from chrono.model import PriceFeed
from chrono.testing.simulators.kraken import KrakenSimulator

PAIRS = ["BTC/USD", "ETH/USD"]
VERSIONS = ["v1", "v2"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> KrakenSimulator:
    simulator = KrakenSimulator(**options)
    await nursery.start(simulator.serve)
    return simulator


def adapter(version: str, symbols: list[str] = PAIRS) -> Adapter:
    exchange = EXCHANGE.protocol(version)
    return exchange.adapter(exchange.symbol_map(symbols), f"w-{version}")


class Link:
    """One client connection read through the real adapter."""

    def __init__(self, ws: ClientConnection, version: str, symbols: list[str] = PAIRS) -> None:
        self.ws = ws
        self.adapter = adapter(version, symbols)

    async def next(self) -> ParsedFrame:
        return self.adapter.parse(await self.ws.recv(), NOW)

    async def until(self, kind: FrameKind) -> ParsedFrame:
        """The next frame of ``kind``, skipping the others."""
        while (parsed := await self.next()).kind is not kind:
            pass
        return parsed

    async def feeds(self, count: int) -> list[PriceFeed]:
        """Frames until ``count`` feeds have arrived."""
        feeds: list[PriceFeed] = []
        while len(feeds) < count:
            feeds += (await self.next()).feeds
        return feeds

    async def subscribe(self, symbols: list[str], *, resubscribe: bool = False) -> None:
        for message in self.adapter.subscribe_messages(symbols, resubscribe=resubscribe):
            await self.ws.send(message)


def ticked(sim: KrakenSimulator, feed: PriceFeed, version: str) -> bool:
    """Whether ``feed`` is one of the simulator's trades, as far as ``version`` spells it."""
    if version == "v2":
        return (feed.symbol, str(feed.price), feed.timestamp) in {
            (tick.native, tick.price, tick.time) for tick in sim.ticks
        }
    assert feed.timestamp == feed.received_at == NOW
    return (feed.symbol, feed.price) in {(tick.native, Decimal(tick.price)) for tick in sim.ticks}


def test_endpoints_serve_both_versions_on_one_port() -> None:
    sim = KrakenSimulator()
    sim.url = "ws://127.0.0.1:9"
    assert sim.endpoint == "ws://127.0.0.1:9/v2"
    assert sim.endpoint_for("v2") == "ws://127.0.0.1:9/v2"
    assert sim.endpoint_for("v1") == "ws://127.0.0.1:9"
    assert KrakenSimulator(symbols=["XBT/USD", "XDG/EUR"]).markets.keys() == {"BTC/USD", "DOGE/EUR"}
    assert sim.send_notice() is False  # Kraken has no reconnect notice


@pytest.mark.parametrize("version", VERSIONS)
async def test_status_acks_snapshots_ticks_and_heartbeats(
    nursery: trio.Nursery, version: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.05)
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            assert (await link.next()).kind is FrameKind.INFO  # the status frame on connect
            await link.subscribe(PAIRS)
            feeds: list[PriceFeed] = []
            acked: list[str] = []
            beats = 0
            while len(acked) < 2 or len(feeds) < 10 or beats < 2:
                parsed = await link.next()
                assert parsed.kind is not FrameKind.ERROR, parsed.message
                acked += parsed.symbols if parsed.kind is FrameKind.ACK else []
                beats += parsed.kind is FrameKind.HEARTBEAT
                assert parsed.skipped == []
                feeds += parsed.feeds
        assert acked == PAIRS
        assert {feed.symbol for feed in feeds} == set(PAIRS)
        for feed in feeds:
            assert ticked(sim, feed, version)
            assert feed.source == "kraken"
        assert len(sim.subscribe_requests) == 1


async def test_v2_feeds_equal_the_sent_ticks_in_order(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, heartbeat_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            link = Link(ws, "v2")
            await link.subscribe(PAIRS)
            feeds = await link.feeds(2)  # the snapshots, before the burst overtakes them
            await sim.send_burst(40)
            feeds += await link.feeds(40)
        assert [(f.symbol, str(f.price), f.timestamp) for f in feeds] == [
            (tick.native, tick.price, tick.time) for tick in sim.ticks
        ]
        assert all(tick.price == str(Decimal(tick.price)) for tick in sim.ticks)


async def test_v2_prices_are_json_numbers_without_trailing_zeros(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(adapter("v2").subscribe_messages(PAIRS)[0])
            frames: list[dict[str, Any]] = []
            while len(frames) < 20:
                frame = json.loads(await ws.recv(), parse_float=Decimal)
                if frame.get("channel") == "ticker":
                    frames.append(frame)
        for frame in frames:
            [data] = frame["data"]
            for key in ("last", "bid", "ask", "volume", "bid_qty", "change_pct"):
                assert isinstance(data[key], Decimal)
                text = str(data[key])
                assert not text.endswith("0") or text.endswith(".0"), text
            assert data["timestamp"].endswith("Z")
            assert frame["type"] in {"snapshot", "update"}


async def test_v1_frames_are_arrays_of_strings_without_time(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        # No ticks of its own: the ticker read is the subscribe snapshot, sim.ticks' only entry.
        sim = await start(nursery, symbols=["XBT/USD"], tick_interval_s=3600)
        async with connect(sim.endpoint_for("v1"), compression=None) as ws:
            status = json.loads(await ws.recv())
            assert status["event"] == "systemStatus"
            assert status["connectionID"] > 2**63
            await ws.send(adapter("v1", ["BTC/USD"]).subscribe_messages(["BTC/USD"])[0])
            ack = json.loads(await ws.recv())
            assert (ack["event"], ack["pair"], ack["status"]) == (
                "subscriptionStatus",
                "XBT/USD",
                "subscribed",
            )
            channel_id, payload, name, pair = json.loads(await ws.recv())
        assert (channel_id, name, pair) == (ack["channelID"], "ticker", "XBT/USD")
        assert set(payload) == {"a", "b", "c", "v", "p", "t", "l", "h", "o"}
        assert len(payload["c"][0].partition(".")[2]) == 5
        assert isinstance(payload["a"][1], int)
        [tick] = sim.ticks
        assert Decimal(payload["c"][0]) == Decimal(tick.price)


@pytest.mark.parametrize(
    ("version", "request_text", "expected"),
    [
        (
            "v2",
            '{"method":"subscribe","params":{"channel":"ticker","symbol":["XBT/USD"]},"req_id":7}',
            "subscribe XBT/USD: Currency pair not supported XBT/USD",
        ),
        (
            "v2",
            '{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"]}}',
            "subscribe: Channel book not supported",
        ),
        (
            "v2",
            '{"method":"unsubscribe","params":{"channel":"ticker","symbol":["BTC/USD"]}}',
            "unsubscribe BTC/USD: Subscription Not Found",
        ),
        ("v2", "{not json", "Malformed request"),
        ("v2", '{"method":"subscribe","params":{"channel":"ticker"}}', "Malformed request"),
        (
            "v1",
            '{"event":"subscribe","pair":["XBT-USD"],"subscription":{"name":"ticker"}}',
            "XBT-USD: Currency pair not in ISO 4217-A3 format XBT-USD",
        ),
        (
            "v1",
            '{"event":"subscribe","pair":["BTC/USD"],"subscription":{"name":"ticker"},"reqid":3}',
            "BTC/USD: Currency pair not supported BTC/USD",
        ),
        (
            "v1",
            '{"event":"subscribe","pair":["XBT/USD"],"subscription":{"name":"tickers"}}',
            "XBT/USD: Subscription name invalid",
        ),
        (
            "v1",
            '{"event":"unsubscribe","pair":["XBT/USD"],"subscription":{"name":"ticker"}}',
            "XBT/USD: Subscription Not Found",
        ),
        ("v1", "[]", "Malformed request"),
        ("v1", '{"event":"subscribe","pair":[]}', "Malformed request"),
    ],
)
async def test_bad_requests_get_errors_in_the_versions_shape(
    nursery: trio.Nursery, version: str, request_text: str, expected: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            await link.next()  # status
            await ws.send(request_text)
            error = await link.next()
            assert (error.kind, error.message) == (FrameKind.ERROR, expected)
            await link.subscribe(["ETH/USD"])  # the link is still usable
            assert (await link.until(FrameKind.ACK)).symbols == ["ETH/USD"]


@pytest.mark.parametrize(
    ("version", "refusal"), [("v2", "Already subscribed"), ("v1", "Subscription already exists")]
)
async def test_duplicate_subscribe_is_refused_and_resubscribe_works(
    nursery: trio.Nursery, version: str, refusal: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, heartbeat_interval_s=3600)
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            await link.subscribe(PAIRS)
            await sim.wait_subscribed(2)
            await link.subscribe(PAIRS)  # a plain subscribe again: refused twice
            errors = [await link.until(FrameKind.ERROR) for _ in PAIRS]
            assert [(e.symbols, e.message.endswith(refusal)) for e in errors] == [
                (["BTC/USD"], True),
                (["ETH/USD"], True),
            ]
            await link.subscribe(["BTC/USD"], resubscribe=True)  # unsubscribe first
            assert (await link.until(FrameKind.INFO)).message.startswith("unsubscribed")
            assert (await link.until(FrameKind.ACK)).symbols == ["BTC/USD"]
            snapshot = await link.next()
        assert snapshot.kind is FrameKind.DATA
        if version == "v2":  # the repeat has the trade's own time: the pipeline drops it
            assert [f.symbol for f in snapshot.feeds] == ["BTC/USD"]
        else:  # no time on v1: the adapter skips the repeat
            assert (snapshot.feeds, snapshot.skipped) == ([], ["repeat"])
        assert sim.connections_total == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_mute_acks_but_sends_nothing_until_resubscribed(
    nursery: trio.Nursery, version: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=3600)
        sim.mute("XBT/USD" if version == "v1" else "BTC/USD")
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            await link.subscribe(PAIRS)
            acked: list[str] = []
            feeds: list[PriceFeed] = []
            while len(acked) < 2 or len(feeds) < 10:
                parsed = await link.next()
                acked += parsed.symbols if parsed.kind is FrameKind.ACK else []
                feeds += parsed.feeds
            assert sorted(acked) == PAIRS
            assert {feed.symbol for feed in feeds} == {"ETH/USD"}
            await link.subscribe(["BTC/USD"], resubscribe=True)
            while not any(f.symbol == "BTC/USD" for f in (await link.next()).feeds):
                pass


@pytest.mark.parametrize("version", VERSIONS)
async def test_ping_pong_and_heartbeats_only_with_a_subscription(
    nursery: trio.Nursery, version: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, heartbeat_interval_s=0.01)
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            assert (await link.next()).kind is FrameKind.INFO
            for _ in range(3):  # heartbeats run every 10 ms: none arrive before each pong
                ping = link.adapter.ping_message()
                assert ping is not None
                await ws.send(ping)
                pong = await link.next()
                assert (pong.kind, pong.message) == (FrameKind.HEARTBEAT, "pong")
            await link.subscribe(["ETH/USD"])
            beat = await link.until(FrameKind.HEARTBEAT)
            assert beat.message == "heartbeat"


@pytest.mark.parametrize("version", VERSIONS)
async def test_message_rate_cut(nursery: trio.Nursery, version: str) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, max_messages_per_s=2)
        async with connect(sim.endpoint_for(version), compression=None) as ws:
            link = Link(ws, version)
            await link.next()
            for symbol in ["BTC/USD", "ETH/USD", "BTC/USD"]:
                await ws.send(adapter(version, [symbol]).subscribe_messages([symbol])[0])
            error = await link.until(FrameKind.ERROR)
        assert "Exceeded msg rate" in error.message
        assert len(sim.subscribe_requests) == 2  # the third was lost


async def test_client_without_subscribe_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, subscribe_timeout_s=0.1)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.recv()  # status
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        assert caught.value.rcvd is not None
        assert caught.value.rcvd.code == 1008


async def test_unknown_path_is_dropped(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.url + "/v3", compression=None) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        assert caught.value.rcvd is None


async def test_one_trade_reaches_v1_and_v2_clients(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(
            nursery, symbols=["BTC/USD"], tick_interval_s=3600, heartbeat_interval_s=3600
        )
        async with (
            connect(sim.endpoint_for("v1"), compression=None) as ws1,
            connect(sim.endpoint_for("v2"), compression=None) as ws2,
        ):
            links = [Link(ws1, "v1", ["BTC/USD"]), Link(ws2, "v2", ["BTC/USD"])]
            seen = []
            for link in links:
                await link.subscribe(["BTC/USD"])
                seen.append(await link.feeds(1))  # the snapshot: one trade made on demand
            await sim.send_burst(3)
            for link, feeds in zip(links, seen, strict=True):
                feeds += await link.feeds(3)
        prices = [[feed.price for feed in feeds] for feeds in seen]
        assert prices[0] == prices[1]  # equal as Decimals: "67234.50000" == 67234.5
        assert [str(p) for p in prices[1]] == [tick.price for tick in sim.ticks]
        assert len(sim.ticks) == 4
