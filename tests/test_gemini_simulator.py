"""The Gemini simulator, spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps: tests wait for frames or acks, never for time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.exchanges.base import FrameKind
from chrono.exchanges.gemini import EXCHANGE, GeminiAdapter
from chrono.model import PriceFeed
from chrono.testing.simulators.base import SentTick
from chrono.testing.simulators.gemini import EMPTY_BID_EVERY, GeminiSimulator

PAIRS = ["BTC/USD", "ETH/USD"]
NATIVES = ["btcusd", "ethusd"]
PRICE = re.compile(r"^\d+\.\d{2}$")
SIZE = re.compile(r"^\d+\.\d{8}$")
FIELDS = ["u", "E", "s", "b", "B", "a", "A", "c", "C"]  # in the exchange's order
NOW = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> GeminiSimulator:
    simulator = GeminiSimulator(**options)
    port = await nursery.start(simulator.serve)
    assert simulator.endpoint == f"ws://127.0.0.1:{port}"
    return simulator


def adapter(*pairs: str) -> GeminiAdapter:
    return GeminiAdapter(EXCHANGE.symbol_map(pairs or PAIRS), "w")


def request(request_id: Any, method: str, params: Any = None) -> str:
    frame = {"id": request_id, "method": method}
    return json.dumps(frame if params is None else frame | {"params": params})


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def drain(ws: ClientConnection) -> None:
    """Receive until the connection ends, then raise what ``recv`` raised."""
    while True:
        await ws.recv()


def as_sent(feed: PriceFeed) -> tuple[str, str, datetime | None]:
    return feed.metadata["native_symbol"], str(feed.price), feed.timestamp


def sent(tick: SentTick) -> tuple[str, str, datetime | None]:
    return tick.native, tick.price, tick.time


def check_frame(frame: dict[str, Any]) -> None:
    """Real field order and spelling; ``E`` is ns with the µs trade time exactly times 1000."""
    assert list(frame) == FIELDS
    assert frame["s"] in NATIVES
    assert frame["E"] % 1000 == 0
    assert PRICE.match(frame["c"])
    assert PRICE.match(frame["a"])
    assert SIZE.match(frame["C"])
    assert frame["b"] == "" or PRICE.match(frame["b"])


async def test_subscribe_ack_snapshots_and_feeds_equal_ticks(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            for message in parser.subscribe_messages(PAIRS):
                await ws.send(message)
            assert await receive(ws) == {"id": "1", "status": 200}
            frames = [await receive(ws) for _ in range(2 * (EMPTY_BID_EVERY + 5))]
        ack = parser.parse('{"id": "1", "status": 200}', NOW)
        assert (ack.kind, ack.symbols) == (FrameKind.ACK, PAIRS)
        assert [frame["s"] for frame in frames[:2]] == NATIVES  # the snapshots
        feeds = []
        for frame in frames:
            check_frame(frame)
            [feed] = parser.parse(json.dumps(frame), NOW).feeds
            assert feed.symbol == PAIRS[NATIVES.index(frame["s"])]
            feeds.append(feed)
        assert [as_sent(feed) for feed in feeds] == [sent(t) for t in sim.ticks[: len(feeds)]]
        assert any(feed.bid is None for feed in feeds)  # the production empty-string bid
        for native in NATIVES:
            mine = [frame for frame in frames if frame["s"] == native]
            assert all(a["u"] < b["u"] and a["E"] < b["E"] for a, b in pairwise(mine))


async def test_burst_feeds_equal_ticks_exactly(nursery: trio.Nursery) -> None:
    count = 4 * EMPTY_BID_EVERY
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws, trio.open_nursery() as inner:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            for _ in range(3):  # the ack and two snapshots
                parser.parse(await ws.recv(), NOW)
            inner.start_soon(sim.send_burst, count)
            parsed = [parser.parse(await ws.recv(), NOW) for _ in range(count)]
        feeds = [feed for p in parsed for feed in p.feeds]
        assert [as_sent(feed) for feed in feeds] == [sent(tick) for tick in sim.ticks[2:]]
        assert sum(feed.bid is None for feed in feeds) == count // EMPTY_BID_EVERY
        for feed, tick in zip(feeds, sim.ticks[2:], strict=True):
            assert tick.time is not None
            assert feed.timestamp == tick.time  # ns time, exact to the µs
            assert tick.time.tzinfo is UTC


async def test_upper_case_methods_and_integer_ids(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request(7, "SUBSCRIBE", ["ethusd@bookTicker"]))
            assert await receive(ws) == {"id": 7, "status": 200}
            assert (await receive(ws))["s"] == "ethusd"
            await ws.send(request("8", "LIST_SUBSCRIPTIONS"))
            assert await receive(ws) == {"id": "8", "status": 200, "result": ["ethusd@bookTicker"]}
        assert sim.subscribe_requests == [
            json.loads(request(7, "SUBSCRIBE", ["ethusd@bookTicker"]))
        ]


async def test_ping_and_time(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.ping_message())
            pong = await ws.recv()
            assert json.loads(pong) == {"id": "1", "status": 200, "result": {}}
            assert parser.parse(pong, NOW).kind is FrameKind.HEARTBEAT
            before = datetime.now(UTC)
            await ws.send(request("t", "time"))
            answer = await receive(ws)
        server_time = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=answer["result"]["serverTime"] // 1000
        )
        assert answer["id"] == "t"
        assert answer["status"] == 200
        assert before - timedelta(seconds=5) <= server_time <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", (None, 400, -1000)),
        ('["subscribe"]', (None, 400, -1000)),
        ('{"id":"1","params":[]}', ("1", 400, -1000)),
        (request("1", "conjure"), ("1", 400, -1001)),
        (request("1", "subscribe"), ("1", 400, -1002)),
        (request("1", "subscribe", "btcusd@bookTicker"), ("1", 400, -1002)),
        (request("1", "subscribe", ["btcusd@bookTicker", "xyzusd@bookTicker"]), ("1", 400, -1002)),
        (request("1", "subscribe", ["btcusd@depth5"]), ("1", 400, -1002)),
        (request("1", "subscribe", ["BTCUSD@bookTicker"]), ("1", 400, -1002)),
        (request("1", "subscribe", ["@bookTicker"]), ("1", 400, -1002)),
        (request("1", "subscribe", [5]), ("1", 400, -1002)),
        (request("1", "unsubscribe", []), ("1", 400, -1002)),
    ],
)
async def test_bad_requests_get_an_error_and_change_nothing(
    nursery: trio.Nursery, text: str, expected: tuple[Any, int, int]
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(text)
            error = await receive(ws)
            assert set(error) == {"id", "status", "error"}
            assert (error["id"], error["status"], error["error"]["code"]) == expected
            assert isinstance(error["error"]["msg"], str)
            assert error["error"]["msg"]
            await ws.send(request("2", "list_subscriptions"))
            assert await receive(ws) == {"id": "2", "status": 200, "result": []}


async def test_unknown_symbol_error_names_the_symbols_through_the_adapter(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        parser = adapter("BTC/USD", "XYZ/USD")
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(["BTC/USD", "XYZ/USD"])[0])
            parsed = parser.parse(await ws.recv(), NOW)
        assert parsed.kind is FrameKind.ERROR
        assert parsed.symbols == ["BTC/USD", "XYZ/USD"]
        assert "xyzusd" in parsed.message
        assert "-1002" in parsed.message


async def test_resubscribe_is_acked_and_repeats_the_current_frame(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            snapshots = []
            for _ in range(2):
                await ws.send(parser.subscribe_messages(["BTC/USD"])[0])
                assert parser.parse(await ws.recv(), NOW).symbols == ["BTC/USD"]
                snapshots.append(await ws.recv())
        assert snapshots[0] == snapshots[1]
        [first] = parser.parse(snapshots[0], NOW).feeds
        [again] = parser.parse(snapshots[1], NOW).feeds
        assert first.key() == again.key()  # one feed: the pipeline drops the repeat
        assert len(sim.ticks) == 1


async def test_unsubscribe_stops_that_stream(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(adapter().subscribe_messages(PAIRS)[0])
            await ws.send(request("u", "unsubscribe", ["ethusd@bookTicker"]))
            while (frame := await receive(ws)).get("id") != "u":
                pass
            assert frame == {"id": "u", "status": 200}
            later = [await receive(ws) for _ in range(6)]
        assert {frame["s"] for frame in later} == {"btcusd"}


async def test_mute_acks_but_delivers_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        sim.mute("ethusd")
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            assert parser.parse(await ws.recv(), NOW).symbols == PAIRS
            frames = [await receive(ws) for _ in range(6)]
            await ws.send(request("l", "list_subscriptions"))
            while "id" not in (listing := await receive(ws)):
                pass
        assert {frame["s"] for frame in frames} == {"btcusd"}
        assert listing["result"] == ["btcusd@bookTicker", "ethusd@bookTicker"]


async def test_untraded_market_sends_a_book_without_trade(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, symbols=["btcusd"], untraded=["hbarusd"], tick_interval_s=0.01)
        parser = adapter("BTC/USD", "HBAR/USD")
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(["BTC/USD", "HBAR/USD"])[0])
            await ws.recv()
            assert (await receive(ws))["s"] == "btcusd"
            book = await ws.recv()
            later = [await receive(ws) for _ in range(5)]
        assert list(json.loads(book)) == ["u", "E", "s", "b", "B", "a", "A"]
        assert parser.parse(book, NOW).skipped == ["no_trade"]
        assert {frame["s"] for frame in later} == {"btcusd"}
        assert {tick.native for tick in sim.ticks} == {"btcusd"}


async def test_message_rate_cut_drops_the_client(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, max_messages_per_s=2)
        async with connect(sim.endpoint, compression=None) as ws:
            for n in range(3):
                await ws.send(request(str(n), "ping"))
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws)
        assert caught.value.rcvd is None  # cut without a close frame
        assert sim.connections_total == 1


async def test_within_the_rate_nothing_is_cut(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, max_messages_per_s=2)
        async with connect(sim.endpoint, compression=None) as ws:
            for n in range(2):
                await ws.send(request(str(n), "ping"))
            assert [(await receive(ws))["id"] for _ in range(2)] == ["0", "1"]


async def test_no_reconnect_notice_in_this_api(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        assert sim.send_notice() is False
