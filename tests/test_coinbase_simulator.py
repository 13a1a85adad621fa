"""The Coinbase simulator, spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps: tests wait for frames, acks or heartbeats, never for time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.errors import InvalidFrame
from chrono.exchanges import EXCHANGES
from chrono.exchanges.coinbase import CoinbaseAdapter
from chrono.testing.simulators import SIMULATORS, CoinbaseSimulator, SentTick
from chrono.testing.simulators.coinbase import stamp
from chrono.testing.simulators.market import fixed

PRODUCTS = ["BTC-USD", "ETH-USD"]
PAIRS = ["BTC/USD", "ETH/USD"]
PRICE = re.compile(r"^\d+\.\d{2}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TICKER_FIELDS = {
    "type", "sequence", "product_id", "price", "open_24h", "volume_24h", "low_24h", "high_24h",
    "volume_30d", "best_bid", "best_bid_size", "best_ask", "best_ask_size", "side", "time",
    "trade_id", "last_size",
}  # fmt: skip
NOW = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> CoinbaseSimulator:
    simulator = CoinbaseSimulator(**options)
    port = await nursery.start(simulator.serve)
    assert simulator.url == f"ws://127.0.0.1:{port}"
    return simulator


def subscribe(channels: Any = ("ticker", "heartbeat"), products: Any = PRODUCTS) -> str:
    specs = [{"name": name, "product_ids": list(products)} for name in channels]
    return json.dumps({"type": "subscribe", "channels": specs})


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def drain(ws: ClientConnection) -> None:
    """Receive until the connection ends, then raise what ``recv`` raised."""
    while True:
        await ws.recv()


def sent(frame: dict[str, Any]) -> SentTick:
    time = datetime.fromisoformat(frame["time"])
    return SentTick(frame["product_id"], frame["price"], time, frame["trade_id"])


def test_registry_has_a_simulator_per_exchange() -> None:
    assert SIMULATORS["coinbase"] is CoinbaseSimulator
    assert set(SIMULATORS) == set(EXCHANGES)


async def test_ack_snapshot_ticks_and_heartbeats(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.05)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(
                CoinbaseAdapter(EXCHANGES["coinbase"].symbol_map(PAIRS), "w").subscribe_messages(
                    PAIRS
                )[0]
            )
            assert await receive(ws) == {
                "type": "subscriptions",
                "channels": [
                    {"name": "ticker", "product_ids": PRODUCTS},
                    {"name": "heartbeat", "product_ids": PRODUCTS},
                ],
            }
            snapshots = [await receive(ws), await receive(ws)]
            assert [s["product_id"] for s in snapshots] == PRODUCTS
            tickers, beats = await collect(ws, tickers=6, beats=2)
        check_tickers(snapshots + tickers, sim)
        for beat in beats:
            assert set(beat) == {"type", "sequence", "last_trade_id", "product_id", "time"}
            assert TIME.match(beat["time"])
        assert sim.subscribe_requests == [json.loads(subscribe())]
        assert sim.connections_total == 1


async def collect(
    ws: ClientConnection, *, tickers: int, beats: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frames until ``tickers`` tickers and ``beats`` heartbeats per product have arrived."""
    seen: dict[str, list[dict[str, Any]]] = {"ticker": [], "heartbeat": []}
    wanted = {"ticker": tickers, "heartbeat": beats}
    while not all(
        sum(f["product_id"] == p for f in seen[kind]) >= wanted[kind]
        for kind in wanted
        for p in PRODUCTS
    ):
        frame = await receive(ws)
        seen[frame["type"]].append(frame)
    return seen["ticker"], seen["heartbeat"]


def check_tickers(tickers: list[dict[str, Any]], sim: CoinbaseSimulator) -> None:
    """Real fields and spelling; trade ids and times strictly increase per product."""
    adapter = CoinbaseAdapter(EXCHANGES["coinbase"].symbol_map(PAIRS), "w")
    last: dict[str, dict[str, Any]] = {}
    for frame in tickers:
        assert set(frame) == TICKER_FIELDS
        assert PRICE.match(frame["price"])
        assert TIME.match(frame["time"])
        assert sent(frame) in sim.ticks
        [feed] = adapter.parse(json.dumps(frame), NOW).feeds
        assert str(feed.price) == frame["price"]
        before = last.get(frame["product_id"])
        if before is not None:
            assert frame["trade_id"] > before["trade_id"]
            assert frame["time"] > before["time"]
            assert frame["sequence"] > before["sequence"]
        last[frame["product_id"]] = frame


async def test_client_without_subscribe_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, subscribe_timeout_s=0.1)
        async with connect(sim.url, compression=None) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        assert caught.value.rcvd is not None
        assert caught.value.rcvd.code == 1008
        assert sim.connections_total == 1


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ('{"type":"subscribe","channels":[]}', "No channels provided"),
        ('{"type":"subscribe","product_ids":["BTC-USD"]}', "No channels provided"),
        (subscribe(["ticker"], ["BTC-USD", "BTC-XYZ"]), "BTC-XYZ is not a valid product"),
        (subscribe(["ticker", "level9"]), "level9 is not a valid channel"),
        (
            subscribe(["heartbeat"], []),
            "You need to specify at least one product ID for channel heartbeat",
        ),
    ],
)
async def test_bad_subscribe_gets_an_error_and_changes_nothing(
    nursery: trio.Nursery, request_text: str, reason: str
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(request_text)
            error = {"type": "error", "message": "Failed to subscribe", "reason": reason}
            assert await receive(ws) == error
            await ws.send(subscribe(["heartbeat"], ["ETH-USD"]))
            ack = await receive(ws)
            assert ack["channels"] == [{"name": "heartbeat", "product_ids": ["ETH-USD"]}]
        assert len(sim.subscribe_requests) == 2


async def test_malformed_request_gets_an_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.url, compression=None) as ws:
            await ws.send("{not json")
            assert (await receive(ws))["type"] == "error"
        assert sim.subscribe_requests == []


async def test_resubscribe_repeats_the_last_trade(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        snapshots = []
        for _ in range(2):
            async with connect(sim.url, compression=None) as ws:
                await ws.send(subscribe(["ticker"]))
                assert (await receive(ws))["type"] == "subscriptions"
                snapshots.append([await ws.recv(), await ws.recv()])
        assert snapshots[0] == snapshots[1]
        assert [sent(json.loads(frame)) for frame in snapshots[0]] == sim.ticks


async def test_drop_connections_closes_without_a_close_frame(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            await sim.wait_subscribed()
            sim.drop_connections()
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws)
        assert caught.value.rcvd is None
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            assert (await receive(ws))["type"] == "subscriptions"
        assert sim.connections_total == 2


async def test_inject_delivers_raw_frames_in_order(nursery: trio.Nursery) -> None:
    garbage: list[str | bytes] = ["garbage", b"\x00\xffbinary", '{"type":"mystery"}']
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.01)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            await sim.wait_subscribed()
            sim.inject(garbage)
            received: list[str | bytes] = []
            while len(received) < len(garbage):
                frame = await ws.recv()
                if frame in garbage:
                    received.append(frame)
        assert received == garbage
        reasons = []
        for frame in received:
            with pytest.raises(InvalidFrame) as caught:
                CoinbaseAdapter(EXCHANGES["coinbase"].symbol_map(["BTC/USD"]), "w").parse(
                    frame, NOW
                )
            reasons.append(caught.value.reason)
        assert reasons == ["malformed", "malformed", "unknown_type"]


async def test_send_burst_delivers_every_tick_in_order(nursery: trio.Nursery) -> None:
    count = 5_000
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600, heartbeat_interval_s=3600)
        async with connect(sim.url, compression=None) as ws, trio.open_nursery() as inner:
            await ws.send(subscribe(["ticker"]))
            for _ in range(3):  # ack and two snapshots
                await ws.recv()
            inner.start_soon(sim.send_burst, count)
            burst = [sent(await receive(ws)) for _ in range(count)]
        assert len(sim.ticks) == 2 + count
        assert burst == sim.ticks[2:]
        assert [tick.native for tick in burst[:4]] == PRODUCTS * 2


async def test_untraded_product_sends_zeros_and_never_trades(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, symbols=["BTC-USD"], untraded=["HBAR-USD"], tick_interval_s=0.01)
        adapter = CoinbaseAdapter(EXCHANGES["coinbase"].symbol_map(["BTC/USD", "HBAR/USD"]), "w")
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe(["ticker"], ["BTC-USD", "HBAR-USD"]))
            await ws.recv()
            assert (await receive(ws))["product_id"] == "BTC-USD"
            zeros = await ws.recv()
            assert "time" not in json.loads(zeros)
            assert adapter.parse(zeros, NOW).skipped == ["untraded"]
            later = [await receive(ws) for _ in range(5)]
        assert {frame["product_id"] for frame in later} == {"BTC-USD"}
        assert {tick.native for tick in sim.ticks} == {"BTC-USD"}


async def test_unsubscribe_stops_that_channel(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.02)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            await ws.send('{"type":"unsubscribe","channels":["ticker"]}')
            acks = 0
            while acks < 2:
                acks += (await receive(ws))["type"] == "subscriptions"
            after = [await receive(ws) for _ in range(4)]
        assert {frame["type"] for frame in after} == {"heartbeat"}
        assert sim.subscribe_requests == [json.loads(subscribe())]


async def test_silent_stops_tickers_but_not_heartbeats(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.02)
        sim.set_silent(True)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            assert (await receive(ws))["type"] == "subscriptions"
            quiet = [await receive(ws) for _ in range(4)]
            assert {frame["type"] for frame in quiet} == {"heartbeat"}
            sim.set_silent(False)
            while (await receive(ws))["type"] != "ticker":
                pass


async def test_heartbeats_can_be_turned_off(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, heartbeat_interval_s=0.01)
        sim.set_heartbeats(False)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            await ws.recv()
            later = [await receive(ws) for _ in range(20)]
        assert {frame["type"] for frame in later} == {"ticker"}


async def test_cancelling_serve_ends_connections(nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await sim.serve(task_status=task_status)
        stopped.set()

    with trio.fail_after(10):
        await nursery.start(serve)
        async with connect(sim.url, compression=None) as ws:
            await ws.send(subscribe())
            await sim.wait_subscribed()
            scope.cancel()
            await stopped.wait()
            with pytest.raises(ConnectionClosed):
                await drain(ws)


async def test_trades_are_broadcast_not_generated_per_client(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with (
            connect(sim.url, compression=None) as first,
            connect(sim.url, compression=None) as second,
        ):
            await first.send(subscribe(["ticker"]))
            await sim.wait_subscribed(1)
            await second.send(subscribe(["ticker"]))
            await sim.wait_subscribed(2)
            for _ in range(3):  # ack and the snapshots
                await second.recv()
            seen_by_second = [sent(await receive(second)) for _ in range(6)]
            seen_by_first: list[SentTick] = []
            while seen_by_second[-1] not in seen_by_first:
                frame = await receive(first)
                if frame["type"] == "ticker":
                    seen_by_first.append(sent(frame))
        assert set(seen_by_second) <= set(seen_by_first)
        assert len(set(sim.ticks)) == len(sim.ticks)


@given(st.integers(min_value=0, max_value=10**40), st.integers(min_value=0, max_value=18))
def test_fixed_writes_units_as_a_decimal_of_exactly_that_many_places(
    units: int, places: int
) -> None:
    exact = Context(prec=60)  # the default 28 digits would round the reference
    assert fixed(units, places) == format(Decimal(units).scaleb(-places, exact), "f")


def test_fixed_refuses_a_negative_amount() -> None:
    with pytest.raises(ValueError, match="negative"):
        fixed(-1, 2)


def test_a_rendered_ticker_is_the_json_of_its_fields_in_the_exchanges_order() -> None:
    """The f-string render against the same fields encoded as a JSON object."""
    sim = CoinbaseSimulator(symbols=["BTC-USD", "ETH-USD"])
    for market in sim.markets.values():
        for _ in range(500):
            trade = market.trade()
            [(channel, frame)] = sim.render(market, trade)
            fields = {
                "type": "ticker", "sequence": trade.sequence, "product_id": market.native,
                "price": fixed(trade.cents, 2), "open_24h": fixed(trade.open_cents, 2),
                "volume_24h": fixed(trade.volume, 8), "low_24h": fixed(trade.low_cents, 2),
                "high_24h": fixed(trade.high_cents, 2),
                "volume_30d": fixed(trade.volume + 30 * 10**12, 8),
                "best_bid": fixed(trade.bid_cents, 2),
                "best_bid_size": fixed(trade.size * 3 % 10**8, 8),
                "best_ask": fixed(trade.ask_cents, 2),
                "best_ask_size": fixed(trade.size * 7 % 10**8, 8),
                "side": "buy" if trade.buy else "sell", "time": stamp(trade.time_us),
                "trade_id": trade.trade_id, "last_size": fixed(trade.size, 8),
            }  # fmt: skip
            assert (channel, frame) == (
                "ticker",
                json.dumps(fields, separators=(",", ":")).encode(),
            )
