"""The Bybit simulator (spot and linear), spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps waiting for something to happen: tests wait for frames or
acks (the one sleep paces a client's pings, as a real client's timer would).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.errors import InvalidFrame
from chrono.exchanges.base import Exchange, FrameKind, ParsedFrame
from chrono.exchanges.bybit import EXCHANGE, LINEAR_EXCHANGE, BybitAdapter
from chrono.model import PriceFeed
from chrono.testing.simulators.base import SentTick
from chrono.testing.simulators.bybit import BybitSimulator

NATIVES = ["BTCUSDT", "ETHUSDT"]
PAIRS = ["BTC/USDT", "ETH/USDT"]
SPOT_FIELDS = [
    "symbol", "lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h",
    "turnover24h", "price24hPcnt", "usdIndexPrice",
]  # fmt: skip
LINEAR_FIELDS = [
    "symbol", "tickDirection", "price24hPcnt", "lastPrice", "prevPrice24h", "highPrice24h",
    "lowPrice24h", "prevPrice1h", "markPrice", "indexPrice", "openInterest", "openInterestValue",
    "turnover24h", "volume24h", "nextFundingTime", "fundingRate", "bid1Price", "bid1Size",
    "ask1Price", "ask1Size",
]  # fmt: skip
PRICE_FIELDS = {"lastPrice", "bid1Price", "ask1Price"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> BybitSimulator:
    simulator = BybitSimulator(**options)
    port = await nursery.start(simulator.serve)
    assert simulator.url == f"ws://127.0.0.1:{port}"
    return simulator


def adapter_for(entry: Exchange, pairs: list[str] = PAIRS) -> BybitAdapter:
    adapter = entry.adapter(entry.symbol_map(pairs), "w")
    assert isinstance(adapter, BybitAdapter)
    return adapter


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def drain(ws: ClientConnection) -> None:
    """Receive until the connection ends, then raise what ``recv`` raised."""
    while True:
        await ws.recv()


async def subscribe(
    ws: ClientConnection, adapter: BybitAdapter, pairs: list[str], *, resubscribe: bool = False
) -> None:
    for message in adapter.subscribe_messages(pairs, resubscribe=resubscribe):
        await ws.send(message)


def ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def as_tick(feed: PriceFeed) -> tuple[str, str, datetime]:
    return feed.metadata["native_symbol"], str(feed.price), feed.timestamp


def sent(sim: BybitSimulator) -> set[tuple[str, str, datetime | None]]:
    return {(tick.native, tick.price, tick.time) for tick in sim.ticks}


def test_endpoints_are_the_exchange_paths() -> None:
    sim = BybitSimulator()
    sim.url = "ws://127.0.0.1:1"
    assert sim.endpoint == "ws://127.0.0.1:1/v5/public/spot"
    assert sim.endpoint_for("linear") == "ws://127.0.0.1:1/v5/public/linear"
    assert BybitSimulator.exchange is EXCHANGE


async def test_spot_ack_snapshots_and_tickers(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        adapter = adapter_for(EXCHANGE)
        async with connect(sim.endpoint, compression=None) as ws:
            [message] = adapter.subscribe_messages(PAIRS)
            await ws.send(message)
            ack = await receive(ws)
            assert list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
            assert (ack["success"], ack["ret_msg"], ack["req_id"]) == (True, "subscribe", "1")
            parsed = adapter.parse(json.dumps(ack), NOW)
            assert (parsed.kind, parsed.symbols) == (FrameKind.ACK, PAIRS)
            frames = [await receive(ws) for _ in range(12)]
        for frame in frames:
            assert list(frame) == ["topic", "ts", "type", "cs", "data"]
            assert list(frame["data"]) == SPOT_FIELDS
            [feed] = adapter.parse(json.dumps(frame), NOW).feeds
            assert feed.symbol == f"{frame['data']['symbol'][:3]}/USDT"
            assert str(feed.price) == frame["data"]["lastPrice"]
            assert feed.timestamp == ms_time(frame["ts"])
            assert (feed.bid, feed.ask) == (None, None)
            assert as_tick(feed) in sent(sim)
        assert [frame["data"]["symbol"] for frame in frames[:2]] == NATIVES  # the snapshots
        assert sim.subscribe_requests == [json.loads(message)]


async def test_linear_snapshot_then_deltas_of_changes(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        adapter = adapter_for(LINEAR_EXCHANGE)
        async with connect(sim.endpoint_for("linear"), compression=None) as ws:
            await subscribe(ws, adapter, PAIRS)
            ack = await receive(ws)
            assert ack | {"conn_id": ""} == {
                "success": True, "ret_msg": "", "conn_id": "", "req_id": "1", "op": "subscribe",
            }  # fmt: skip
            assert adapter.parse(json.dumps(ack), NOW).symbols == PAIRS
            frames = [await receive(ws) for _ in range(30)]
        check_linear(frames, adapter, sim)


def check_linear(frames: list[dict[str, Any]], adapter: BybitAdapter, sim: BybitSimulator) -> None:
    """Snapshot first per symbol, then deltas holding changed fields only; each feed is the
    merged state (worked out here) at the frame's ``ts``, and a tick the simulator sent."""
    state: dict[str, dict[str, str]] = {}
    feeds = 0
    for frame in frames:
        assert list(frame) == ["topic", "type", "data", "cs", "ts"]
        native = frame["data"]["symbol"]
        if frame["type"] == "snapshot":
            assert list(frame["data"]) == LINEAR_FIELDS
            state[native] = dict(frame["data"])
        else:
            assert frame["type"] == "delta"
            before = state[native]
            changed = {k: v for k, v in frame["data"].items() if k != "symbol"}
            assert all(before[k] != v for k, v in changed.items())
            assert set(changed) < set(LINEAR_FIELDS)
            state[native] = before | changed
        parsed = adapter.parse(json.dumps(frame), NOW)
        if frame["type"] == "delta" and not PRICE_FIELDS & set(frame["data"]):
            assert parsed.skipped == ["no_price_change"]
            continue
        [feed] = parsed.feeds
        feeds += 1
        merged = state[native]
        assert str(feed.price) == merged["lastPrice"]
        assert (str(feed.bid), str(feed.ask)) == (merged["bid1Price"], merged["ask1Price"])
        assert feed.volume == Decimal(merged["volume24h"])
        assert feed.timestamp == ms_time(frame["ts"])
        assert feed.source == "bybit_linear"
        assert as_tick(feed) in sent(sim)
    assert [f["type"] for f in frames[:2]] == ["snapshot", "snapshot"]
    assert feeds >= len(frames) // 2


async def test_spot_and_linear_clients_see_the_same_trades(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        spot, linear = adapter_for(EXCHANGE), adapter_for(LINEAR_EXCHANGE)
        # Each client idles while the other is read: an unbounded queue keeps its reader going,
        # else a full queue stops it reading and its close handshake waits for close_timeout.
        async with (
            connect(sim.endpoint, compression=None, max_queue=None) as spot_ws,
            connect(sim.endpoint_for("linear"), compression=None, max_queue=None) as linear_ws,
        ):
            await subscribe(spot_ws, spot, PAIRS)
            await subscribe(linear_ws, linear, PAIRS)
            await sim.wait_subscribed(2)
            spot_ticks = await feed_ticks(spot_ws, spot, 20)
            linear_ticks = await feed_ticks(linear_ws, linear, 10)
        assert set(linear_ticks) <= sent(sim)
        assert set(spot_ticks) <= sent(sim)
        latest = {native: max(t for n, _, t in spot_ticks if n == native) for native in NATIVES}
        both = {tick for tick in linear_ticks if tick[2] <= latest[tick[0]]}
        assert len(both) >= 2
        assert both <= set(spot_ticks)  # one market, one stream of trades


async def feed_ticks(
    ws: ClientConnection, adapter: BybitAdapter, count: int
) -> list[tuple[str, str, datetime]]:
    ticks: list[tuple[str, str, datetime]] = []
    while len(ticks) < count:
        ticks.extend(as_tick(feed) for feed in adapter.parse(await ws.recv(), NOW).feeds)
    return ticks


@pytest.mark.parametrize(
    ("path", "pong"),
    [
        ("", ["success", "ret_msg", "conn_id", "op"]),
        ("linear", ["success", "ret_msg", "conn_id", "req_id", "op"]),
    ],
)
async def test_ping_gets_the_categorys_pong(
    nursery: trio.Nursery, path: str, pong: list[str]
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        adapter = adapter_for(LINEAR_EXCHANGE if path else EXCHANGE)
        async with connect(sim.endpoint_for(path or None), compression=None) as ws:
            await ws.send(adapter.ping_message())
            frame = await receive(ws)
        assert list(frame) == pong
        assert (frame["success"], frame["ret_msg"], frame["op"]) == (True, "pong", "ping")
        assert frame.get("req_id", "1") == "1"
        assert adapter.parse(json.dumps(frame), NOW).kind is FrameKind.HEARTBEAT


async def error_for(
    sim: BybitSimulator, request: str, *, version: str | None = None
) -> tuple[dict[str, Any], ParsedFrame]:
    adapter = adapter_for(EXCHANGE.protocol(version), [*PAIRS, "NOPE/USDT"])
    async with connect(sim.endpoint_for(version), compression=None) as ws:
        await ws.send(request)
        frame = await receive(ws)
    return frame, adapter.parse(json.dumps(frame), NOW)


def request(*topics: str, op: str = "subscribe") -> str:
    return json.dumps({"req_id": "e1", "op": op, "args": list(topics)})


@pytest.mark.parametrize(
    ("text", "ret_msg"),
    [
        (request(*[f"tickers.C{i}USDT" for i in range(11)]), "args size >10"),
        (request("tickers.BTCUSDT", "tickers.NOPEUSDT"),
         "error:handler not found,topic:tickers.NOPEUSDT"),
        (request("invalid.topic.BTCUSDT"), "Invalid topic: invalid.topic.BTCUSDT"),
        (request("tickers."), "Invalid topic: tickers."),
        (request(), "Params Error"),
        ('{"op":"subscribe","args":"tickers.BTCUSDT"}', "Params Error"),
        (request("tickers.BTCUSDT", op="auth"), "error:invalid op"),
        ("hello", "Failed to decode incoming data"),
        ("[1]", "Failed to decode incoming data"),
    ],
)  # fmt: skip
async def test_refused_requests(nursery: trio.Nursery, text: str, ret_msg: str) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        frame, parsed = await error_for(sim, text)
        assert (frame["success"], frame["ret_msg"]) == (False, ret_msg)
        assert (parsed.kind, parsed.message) == (FrameKind.ERROR, ret_msg)
        if "NOPEUSDT" in ret_msg:
            assert parsed.symbols == ["NOPE/USDT"]
        assert sim.ticks == []  # nothing was subscribed


async def test_linear_takes_more_than_ten_args(nursery: trio.Nursery) -> None:
    natives = [f"C{i}USDT" for i in range(12)]
    with trio.fail_after(10):
        sim = await start(nursery, symbols=natives, tick_interval_s=3600)
        async with connect(sim.endpoint_for("linear"), compression=None) as ws:
            await ws.send(request(*[f"tickers.{n}" for n in natives]))
            ack = await receive(ws)
            snapshots = [await receive(ws) for _ in natives]
        assert (ack["success"], ack["req_id"]) == (True, "e1")
        assert [frame["data"]["symbol"] for frame in snapshots] == natives


async def test_duplicate_subscribe_is_refused_resubscribe_is_not(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        adapter = adapter_for(LINEAR_EXCHANGE)
        async with connect(sim.endpoint_for("linear"), compression=None) as ws:
            await subscribe(ws, adapter, PAIRS)
            kinds = [adapter.parse(await ws.recv(), NOW).kind for _ in range(3)]
            assert kinds == [FrameKind.ACK, FrameKind.DATA, FrameKind.DATA]
            await ws.send(request("tickers.BTCUSDT"))
            refused = adapter.parse(await ws.recv(), NOW)
            assert refused.message == "error:already subscribed,topic:tickers.BTCUSDT"
            await subscribe(ws, adapter, ["BTC/USDT"], resubscribe=True)  # unsubscribes first
            again = [adapter.parse(await ws.recv(), NOW) for _ in range(3)]
        assert [p.kind for p in again] == [FrameKind.INFO, FrameKind.ACK, FrameKind.DATA]
        assert again[1].symbols == ["BTC/USDT"]
        assert again[2].feeds[0].symbol == "BTC/USDT"  # a fresh snapshot


async def test_unsubscribe_stops_that_symbol(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("tickers.BTCUSDT", "tickers.ETHUSDT"))
            await ws.send(request("tickers.BTCUSDT", "tickers.SOLUSDT", op="unsubscribe"))
            while (await receive(ws)).get("op") != "unsubscribe":
                pass
            later = [await receive(ws) for _ in range(6)]
        assert {frame["data"]["symbol"] for frame in later} == {"ETHUSDT"}


async def test_linear_only_subscribers_get_trades(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint_for("linear"), compression=None) as ws:
            await ws.send(request("tickers.ETHUSDT"))
            frames = [await receive(ws) for _ in range(6)]
        assert [frame.get("type") for frame in frames] == [None, "snapshot", *["delta"] * 4]
        assert {tick.native for tick in sim.ticks} == {"ETHUSDT"}


async def test_muted_symbol_is_acked_but_silent_until_resubscribed(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        sim.mute("BTCUSDT")
        adapter = adapter_for(LINEAR_EXCHANGE)
        async with connect(sim.endpoint_for("linear"), compression=None) as ws:
            await subscribe(ws, adapter, PAIRS)
            assert adapter.parse(await ws.recv(), NOW).symbols == PAIRS
            quiet = [await receive(ws) for _ in range(6)]
            assert {frame["data"]["symbol"] for frame in quiet} == {"ETHUSDT"}
            await subscribe(ws, adapter, ["BTC/USDT"], resubscribe=True)
            symbols: set[str] = set()
            while "BTC/USDT" not in symbols:
                symbols.update(feed.symbol for feed in adapter.parse(await ws.recv(), NOW).feeds)


async def test_idle_connection_is_cut(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, idle_timeout_s=0.2)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("tickers.BTCUSDT"))
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws)
        assert caught.value.rcvd is None  # no close frame


async def test_data_or_pings_keep_a_connection(nursery: trio.Nursery) -> None:
    idle_s = 0.2
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, idle_timeout_s=idle_s)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("tickers.BTCUSDT"))
            start_at = trio.current_time()
            while trio.current_time() - start_at < 3 * idle_s:
                await ws.recv()
        sim.set_silent(True)
        adapter = adapter_for(EXCHANGE)
        async with connect(sim.endpoint, compression=None) as ws, trio.open_nursery() as pinger:
            pinger.start_soon(ping_every, ws, adapter, idle_s / 4)
            start_at, pongs = trio.current_time(), 0
            while trio.current_time() - start_at < 3 * idle_s:
                pongs += adapter.parse(await ws.recv(), NOW).kind is FrameKind.HEARTBEAT
            pinger.cancel_scope.cancel()
        assert pongs >= 4


async def ping_every(ws: ClientConnection, adapter: BybitAdapter, interval_s: float) -> None:
    while True:
        await ws.send(adapter.ping_message())
        await trio.sleep(interval_s)


async def test_unknown_path_is_cut(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.url + "/v5/public/option", compression=None) as ws:
            with pytest.raises(ConnectionClosed):
                await drain(ws)


async def test_send_burst_reaches_both_categories(nursery: trio.Nursery) -> None:
    count = 400
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        spot, linear = adapter_for(EXCHANGE), adapter_for(LINEAR_EXCHANGE)
        async with (
            connect(sim.endpoint, compression=None) as spot_ws,
            connect(sim.endpoint_for("linear"), compression=None) as linear_ws,
        ):
            await subscribe(spot_ws, spot, PAIRS)
            await subscribe(linear_ws, linear, PAIRS)
            await sim.wait_subscribed(2)
            for ws, adapter in ((spot_ws, spot), (linear_ws, linear)):
                for _ in range(3):  # ack and two snapshots (the linear state)
                    adapter.parse(await ws.recv(), NOW)
            await sim.send_burst(count)
            spot_ticks = await feed_ticks(spot_ws, spot, count)
            linear_frames = [await receive(linear_ws) for _ in range(count)]
        expected = [(t.native, t.price, t.time) for t in sim.ticks[2:]]
        assert spot_ticks == expected
        linear_ticks: list[tuple[str, str, datetime]] = []
        for frame in linear_frames:
            linear_ticks.extend(
                as_tick(feed) for feed in linear.parse(json.dumps(frame), NOW).feeds
            )
        assert set(linear_ticks) <= set(expected)
        assert len(linear_ticks) == sum(bool(PRICE_FIELDS & set(f["data"])) for f in linear_frames)


async def test_injected_garbage_is_invalid(nursery: trio.Nursery) -> None:
    garbage: list[str | bytes] = ["garbage", b"\x00\xff", '{"topic":"orderbook.1.BTCUSDT"}']
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("tickers.BTCUSDT"))
            await sim.wait_subscribed()
            sim.inject(garbage)
            received: list[str | bytes] = []
            while len(received) < len(garbage):
                frame = await ws.recv()
                if frame in garbage:
                    received.append(frame)
        reasons = []
        for frame in received:
            with pytest.raises(InvalidFrame) as caught:
                adapter_for(EXCHANGE).parse(frame, NOW)
            reasons.append(caught.value.reason)
        assert reasons == ["malformed", "malformed", "unknown_type"]


def test_sent_tick_spells_the_adapters_price() -> None:
    sim = BybitSimulator(symbols=["BTCUSDT"])
    market = sim.markets["BTCUSDT"]
    trade = market.trade()
    tick = sim.sent_tick(market, trade)
    (_, spot_frame), (_, delta) = sim.render(market, trade)
    linear_frame = delta.replace(b'"delta"', b'"snapshot"')  # a first delta holds every field
    for entry, frame in ((EXCHANGE, spot_frame), (LINEAR_EXCHANGE, linear_frame)):
        [feed] = adapter_for(entry).parse(frame, NOW).feeds
        assert tick == SentTick("BTCUSDT", str(feed.price), feed.timestamp, trade.trade_id)
