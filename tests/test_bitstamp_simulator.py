"""The Bitstamp simulator, spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps: tests wait for frames or acks, never for time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.exchanges.base import FrameKind
from chrono.exchanges.bitstamp import EXCHANGE, BitstampAdapter
from chrono.model import PriceFeed
from chrono.testing.simulators.base import SentTick
from chrono.testing.simulators.bitstamp import BitstampSimulator

PAIRS = ["BTC/USD", "ETH/USD"]
NATIVES = ["btcusd", "ethusd"]
PRICE = re.compile(r"^\d+\.\d{2}$")
DIGITS = re.compile(r"^\d+$")
TRADE_FIELDS = [
    "id", "timestamp", "amount", "amount_str", "price", "price_str", "type", "microtimestamp",
    "buy_order_id", "sell_order_id",
]  # fmt: skip
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BAD_JSON = {"event": "bts:error", "channel": "", "data": {"code": None, "message": "Incorrect JSON format."}}  # fmt: skip  # noqa: E501


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> BitstampSimulator:
    simulator = BitstampSimulator(**options)
    port = await nursery.start(simulator.serve)
    assert simulator.endpoint == f"ws://127.0.0.1:{port}"
    return simulator


def adapter(pairs: list[str] = PAIRS) -> BitstampAdapter:
    return BitstampAdapter(EXCHANGE.symbol_map(pairs), "w")


def subscribe(channel: str, event: str = "bts:subscribe") -> str:
    return json.dumps({"event": event, "data": {"channel": channel}})


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def subscribed(ws: ClientConnection, pairs: list[str] = PAIRS) -> list[str]:
    """Send the adapter's subscribe messages; return the channels acked, in order."""
    messages = adapter(pairs).subscribe_messages(pairs)
    for message in messages:
        await ws.send(message)
    acked: list[str] = []
    while len(acked) < len(messages):
        frame = await receive(ws)
        if frame["event"] == "bts:subscription_succeeded":
            acked.append(frame["channel"])
    return acked


async def drain(ws: ClientConnection) -> None:
    """Receive until the connection ends, then raise what ``recv`` raised."""
    while True:
        await ws.recv()


def sent(frame: dict[str, Any]) -> SentTick:
    """The tick a trade frame spells, worked out with the stdlib."""
    data = frame["data"]
    time = EPOCH + timedelta(microseconds=int(data["microtimestamp"]))
    return SentTick(
        frame["channel"].removeprefix("live_trades_"), data["price_str"], time, data["id"]
    )


async def test_subscribe_ack_and_feeds_match_ticks(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            acked = await subscribed(ws)
            assert acked == [f"{c}_{n}" for n in NATIVES for c in ("order_book", "live_trades")]
            frames = [await ws.recv() for _ in range(40)]
        feeds = []
        for frame in frames:
            parsed = parser.parse(frame, NOW)
            assert parsed.kind is FrameKind.DATA
            feeds += parsed.feeds
        assert len(feeds) >= 10
        by_native = {tick.native: tick for tick in sim.ticks}
        expected = {(t.native, t.price, t.time, t.trade_id) for t in sim.ticks}
        for feed in feeds:
            native = feed.metadata["native_symbol"]
            assert feed.symbol == PAIRS[NATIVES.index(native)]
            key = (native, str(feed.price), feed.timestamp, feed.metadata["trade_id"])
            assert key in expected
            assert feed.bid is not None
            assert feed.ask is not None
            assert feed.bid <= feed.price <= feed.ask
        assert set(by_native) == set(NATIVES)
        assert sim.subscribe_requests == [
            json.loads(m) for m in adapter().subscribe_messages(PAIRS)
        ]


async def test_frames_spell_the_exchange_way(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await subscribed(ws, ["BTC/USD"])
            frames = [await receive(ws) for _ in range(10)]
        last_id = 0
        for book, trade in zip(frames[::2], frames[1::2], strict=True):
            assert (book["event"], book["channel"]) == ("data", "order_book_btcusd")
            assert (trade["event"], trade["channel"]) == ("trade", "live_trades_btcusd")
            data = trade["data"]
            assert list(data) == TRADE_FIELDS
            assert PRICE.match(data["price_str"])
            assert data["price"] == float(data["price_str"])
            assert DIGITS.match(data["microtimestamp"])
            assert DIGITS.match(data["timestamp"])
            assert int(data["microtimestamp"]) // 1_000_000 == int(data["timestamp"])
            assert data["type"] in (0, 1)
            assert data["id"] > last_id
            last_id = data["id"]
            levels = book["data"]
            assert list(levels) == ["timestamp", "microtimestamp", "bids", "asks"]
            assert levels["microtimestamp"] == data["microtimestamp"]
            assert len(levels["bids"]) == len(levels["asks"]) == 5
            bids = [Decimal(price) for price, _ in levels["bids"]]
            asks = [Decimal(price) for price, _ in levels["asks"]]
            assert bids == sorted(bids, reverse=True)
            assert asks == sorted(asks)
            assert bids[0] <= Decimal(data["price_str"]) <= asks[0]
            assert sent(trade) in sim.ticks


async def test_book_snapshot_on_subscribe_but_no_trade(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        await sim.send_burst(1)  # btcusd trades once, with nobody listening
        [tick] = sim.ticks
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(subscribe("live_trades_btcusd"))
            await ws.send(subscribe("order_book_btcusd"))
            await ws.send(subscribe("order_book_ethusd"))  # never traded: no book yet
            await ws.send('{"event":"bts:heartbeat"}')
            frames = [await receive(ws) for _ in range(5)]
        assert [(f["event"], f["channel"]) for f in frames] == [
            ("bts:subscription_succeeded", "live_trades_btcusd"),
            ("bts:subscription_succeeded", "order_book_btcusd"),
            ("data", "order_book_btcusd"),
            ("bts:subscription_succeeded", "order_book_ethusd"),
            ("bts:heartbeat", ""),
        ]
        book = frames[2]["data"]
        assert tick.time is not None
        assert book["microtimestamp"] == str((tick.time - EPOCH) // timedelta(microseconds=1))
        assert Decimal(book["bids"][0][0]) <= Decimal(tick.price) <= Decimal(book["asks"][0][0])


async def test_silence_sends_no_book_snapshot(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        await sim.send_burst(1)
        sim.set_silent(True)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(subscribe("order_book_btcusd"))
            await ws.send('{"event":"bts:heartbeat"}')
            frames = [await receive(ws) for _ in range(2)]
        assert [f["event"] for f in frames] == ["bts:subscription_succeeded", "bts:heartbeat"]


@pytest.mark.parametrize(
    "channel", ["live_trades_xyzusd", "ticker_btcusd", "order_book_", "live_trades", ""]
)
async def test_bad_subscription_gets_an_error(nursery: trio.Nursery, channel: str) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(subscribe(channel))
            error = await receive(ws)
            assert error == {
                "event": "bts:error",
                "channel": channel,
                "data": {"code": None, "message": "Bad subscription string."},
            }
            parsed = adapter().parse(json.dumps(error), NOW)
            assert (parsed.kind, parsed.message) == (FrameKind.ERROR, "Bad subscription string.")
            await ws.send(subscribe("live_trades_ethusd"))
            assert (await receive(ws))["event"] == "bts:subscription_succeeded"
        assert sim.subscribe_requests == [json.loads(subscribe("live_trades_ethusd"))]


@pytest.mark.parametrize(
    "request_text",
    [
        "{not json",
        "[]",
        '{"event":"bts:subscribe"}',
        '{"event":"bts:dance","data":{"channel":"x"}}',
    ],
)
async def test_malformed_request_gets_the_json_error(
    nursery: trio.Nursery, request_text: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request_text)
            assert await receive(ws) == BAD_JSON
        assert sim.subscribe_requests == []


async def test_heartbeat_is_answered(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(adapter().ping_message())
            reply = await ws.recv()
        assert json.loads(reply) == {
            "event": "bts:heartbeat",
            "channel": "",
            "data": {"status": "success"},
        }
        assert adapter().parse(reply, NOW).kind is FrameKind.HEARTBEAT


async def test_unsubscribe_stops_trades_and_is_info(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await subscribed(ws)
            await ws.send(subscribe("live_trades_btcusd", "bts:unsubscribe"))
            frame = await receive(ws)
            while frame["event"] != "bts:unsubscription_succeeded":
                frame = await receive(ws)
            assert adapter().parse(json.dumps(frame), NOW).kind is FrameKind.INFO
            later = [await receive(ws) for _ in range(10)]
        assert ("trade", "live_trades_btcusd") not in {(f["event"], f["channel"]) for f in later}
        assert ("trade", "live_trades_ethusd") in {(f["event"], f["channel"]) for f in later}


async def test_resubscribe_is_acked_again(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await subscribed(ws, ["BTC/USD"])
            assert await subscribed(ws, ["BTC/USD"]) == ["order_book_btcusd", "live_trades_btcusd"]
            trades: list[SentTick] = []
            while len(trades) < 4:
                frame = await receive(ws)
                if frame["event"] == "trade":
                    trades.append(sent(frame))
        assert len(set(trades)) == len(trades)  # still one subscription: no doubled trades


async def test_mute_acks_but_sends_no_trades(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        sim.mute("btcusd")
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            acked = await subscribed(ws)
            assert len(acked) == 4
            feeds: list[PriceFeed] = []
            while len(feeds) < 5:
                feeds += parser.parse(await ws.recv(), NOW).feeds
        assert {feed.symbol for feed in feeds} == {"ETH/USD"}
        assert {tick.native for tick in sim.ticks} == {"ethusd"}


async def test_notice_is_reconnect(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await subscribed(ws, ["BTC/USD"])
            assert sim.send_notice()
            frame = await ws.recv()
        assert json.loads(frame) == {"event": "bts:request_reconnect", "channel": "", "data": {}}
        assert adapter().parse(frame, NOW).kind is FrameKind.RECONNECT


async def test_send_burst_delivers_every_tick_in_order(nursery: trio.Nursery) -> None:
    count = 2_000
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws, trio.open_nursery() as inner:
            await subscribed(ws)
            inner.start_soon(sim.send_burst, count)
            burst: list[SentTick] = []
            while len(burst) < count:
                frame = await receive(ws)
                if frame["event"] == "trade":
                    burst.append(sent(frame))
        assert burst == sim.ticks


async def test_connection_age_cap_drops_the_connection(nursery: trio.Nursery) -> None:
    """Bitstamp's 90-day cap, shrunk: the connection ends without a close frame."""
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, max_connection_age_s=0.05)
        async with connect(sim.endpoint, compression=None) as ws:
            await subscribed(ws, ["BTC/USD"])
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws)
        assert caught.value.rcvd is None
