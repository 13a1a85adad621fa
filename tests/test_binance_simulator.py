"""The Binance simulators, spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps: tests wait for frames, acks or closes, never for time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.exchanges.base import Adapter, Exchange, FrameKind
from chrono.exchanges.binance import EXCHANGE, US_EXCHANGE
from chrono.testing.simulators.base import SentTick
from chrono.testing.simulators.binance import BinanceSimulator, BinanceUSSimulator

PAIRS = ["BTC/USD", "ETH/USD"]  # subscribed as BTCUSDT and ETHUSDT (Binance's USD alias)
NATIVES = ["BTCUSDT", "ETHUSDT"]
PRICE = re.compile(r"^\d+\.\d{8}$")
TICKER_FIELDS = list("eEspPwxcQbBaAohlvqOCFLn")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BAD_STREAM = "Invalid request: invalid stream"


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(
    nursery: trio.Nursery, cls: type[BinanceSimulator] = BinanceSimulator, **options: Any
) -> BinanceSimulator:
    simulator = cls(**({"tick_interval_s": 0.01} | options))
    port = await nursery.start(simulator.serve)
    assert simulator.url == f"ws://127.0.0.1:{port}"
    return simulator


def adapter(exchange: Exchange = EXCHANGE, pairs: list[str] = PAIRS) -> Adapter:
    return exchange.adapter(exchange.symbol_map(pairs), "w")


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def request(ws: ClientConnection, method: str, params: Any = None, id: int = 99) -> Any:
    """Send a request and return its answer's ``result``, skipping the data frames between."""
    body = {"method": method, "id": id} | ({} if params is None else {"params": params})
    await ws.send(json.dumps(body))
    while (frame := await receive(ws)).get("id") != id:
        pass
    return frame["result"]


async def drain(ws: ClientConnection, into: list[dict[str, Any]] | None = None) -> None:
    """Receive (into ``into``) until the connection ends, then raise what ``recv`` raised."""
    while True:
        frame = await receive(ws)
        if into is not None:
            into.append(frame)


def sent(feed_frame: str | bytes, parser: Adapter) -> SentTick:
    """The tick a ticker frame carries, read back through the adapter."""
    [feed] = parser.parse(feed_frame, NOW).feeds
    native = feed.metadata["native_symbol"]
    return SentTick(native, str(feed.price), feed.timestamp, feed.metadata["last_trade_id"])


def check_ticker(event: dict[str, Any]) -> None:
    """Every field, in Binance's order, with docs/exchanges.md's invariants."""
    assert list(event) == TICKER_FIELDS
    assert event["e"] == "24hrTicker"
    for key in "wxcbaohl":
        assert PRICE.match(event[key]), key
    change = Decimal(event["c"]) - Decimal(event["o"])
    assert Decimal(event["p"]) == change
    assert Decimal(event["P"]) == (100 * change / Decimal(event["o"])).quantize(Decimal("0.001"))
    assert event["C"] == event["E"]
    assert event["O"] == event["C"] - 86_400_000
    assert event["n"] == event["L"] - event["F"] + 1
    assert Decimal(event["l"]) <= Decimal(event["c"]) <= Decimal(event["h"])
    assert Decimal(event["b"]) < Decimal(event["a"])


def test_entries_and_paths() -> None:
    assert BinanceSimulator.exchange is EXCHANGE
    assert BinanceUSSimulator.exchange is US_EXCHANGE
    assert BinanceSimulator.resolution_us == 1000
    assert BinanceSimulator.ws_ping_interval_s == 20.0  # the server pings, the library pongs
    sim = BinanceSimulator(symbols=NATIVES)
    sim.url = "ws://127.0.0.1:1"
    assert sim.endpoint == sim.endpoint_for("bookTicker") == "ws://127.0.0.1:1/stream"


async def test_subscribe_ack_and_tickers(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            messages = parser.subscribe_messages(PAIRS)
            for message in messages:
                await ws.send(message)
            ack_text = await ws.recv()
            assert json.loads(ack_text) == {"result": None, "id": 1}
            ack = parser.parse(ack_text, NOW)
            assert (ack.kind, ack.symbols) == (FrameKind.ACK, PAIRS)
            frames = [await ws.recv() for _ in range(10)]
        ticks = []
        for frame in frames:
            wrapper = json.loads(frame)
            assert wrapper["stream"] == f"{wrapper['data']['s'].lower()}@ticker"
            check_ticker(wrapper["data"])
            [feed] = parser.parse(frame, NOW).feeds
            assert feed.symbol == PAIRS[NATIVES.index(wrapper["data"]["s"])]
            ticks.append(sent(frame, parser))
        assert set(ticks) <= set(sim.ticks)
        assert {tick.native for tick in ticks} == set(NATIVES)
        assert all(tick.time is not None and tick.time.microsecond % 1000 == 0 for tick in ticks)
        assert sim.subscribe_requests == [json.loads(m) for m in messages]


async def test_book_ticker_version(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter(EXCHANGE.protocol("bookTicker"))
        last: dict[str, int] = {}
        async with connect(sim.endpoint_for("bookTicker"), compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            assert parser.parse(await ws.recv(), NOW).symbols == PAIRS
            for _ in range(10):
                frame = await ws.recv()
                wrapper = json.loads(frame)
                data = wrapper["data"]
                assert wrapper["stream"] == f"{data['s'].lower()}@bookTicker"
                assert list(data) == ["u", "s", "b", "B", "a", "A"]
                assert data["u"] > last.get(data["s"], 0)
                last[data["s"]] = data["u"]
                [feed] = parser.parse(frame, NOW).feeds
                assert feed.price == (Decimal(data["b"]) + Decimal(data["a"])) / 2
                assert feed.timestamp == NOW
                assert (feed.bid, feed.ask) == (Decimal(data["b"]), Decimal(data["a"]))
                assert Decimal(data["b"]) < Decimal(data["a"])
        assert set(last) == set(NATIVES)


async def test_streams_named_in_the_url(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        url = f"{sim.url}/stream?streams=btcusdt@ticker/ethusdt@bookTicker"
        async with connect(url, compression=None) as ws:
            streams = {(await receive(ws))["stream"] for _ in range(20)}
            assert streams == {"btcusdt@ticker", "ethusdt@bookTicker"}
            assert await request(ws, "LIST_SUBSCRIPTIONS") == [
                "btcusdt@ticker",
                "ethusdt@bookTicker",
            ]


async def test_raw_connection_sends_bare_events(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter()
        async with connect(f"{sim.url}/ws/btcusdt@ticker", compression=None) as ws:
            frames = [await ws.recv() for _ in range(5)]
        for frame in frames:
            check_ticker(json.loads(frame))
            assert sent(frame, parser) in sim.ticks


async def test_set_property_switches_to_bare_events(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            assert await request(ws, "SUBSCRIBE", ["btcusdt@ticker"], id=1) is None
            assert await request(ws, "GET_PROPERTY", ["combined"], id=2) is True
            assert await request(ws, "SET_PROPERTY", ["combined", False], id=3) is None
            later = [await receive(ws) for _ in range(3)]
            assert [frame["e"] for frame in later] == ["24hrTicker"] * 3
            assert await request(ws, "GET_PROPERTY", ["combined"], id=4) is False


async def test_repeated_subscribe_is_acked(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            await ws.send(parser.subscribe_messages(["BTC/USD"])[0])
            await sim.wait_subscribed(2)
            streams = ["btcusdt@ticker", "ethusdt@ticker"]
            assert await request(ws, "LIST_SUBSCRIPTIONS") == streams


async def test_unknown_symbol_is_acked_then_silent(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            streams = ["xyzusdt@ticker", "btcusdt@ticker"]
            assert await request(ws, "SUBSCRIBE", streams, id=1) is None
            later = [await receive(ws) for _ in range(6)]
            assert {frame["stream"] for frame in later} == {"btcusdt@ticker"}
            assert await request(ws, "LIST_SUBSCRIPTIONS", id=2) == streams


async def test_unsubscribe_stops_that_stream(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            await request(ws, "SUBSCRIBE", ["btcusdt@ticker", "ethusdt@ticker"], id=1)
            assert await request(ws, "UNSUBSCRIBE", ["btcusdt@ticker"], id=2) is None
            later = [await receive(ws) for _ in range(6)]
            assert {frame["stream"] for frame in later} == {"ethusdt@ticker"}


@pytest.mark.parametrize(
    ("text", "code", "message", "request_id"),
    [
        ("{not json", 3, "Invalid JSON: ", None),
        (b"\xff", 3, "Invalid JSON: ", None),
        ('["SUBSCRIBE"]', 2, "Invalid request: ", None),
        ('{"method":"SUBSCRIBE","params":["BTCUSDT@ticker"],"id":2}', 2, BAD_STREAM, 2),
        ('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":3}', 2, BAD_STREAM, 3),
        ('{"method":"SUBSCRIBE","params":"btcusdt@ticker","id":4}', 2, BAD_STREAM, 4),
        ('{"method":"SUBSCRIBE","params":[],"id":4}', 2, BAD_STREAM, 4),
        ('{"method":"PING","id":5}', 2, "Invalid request: unknown variant `PING`", None),
        ('{"params":[],"id":6}', 2, "Invalid request: missing field `method`", 6),
        ('{"method":"LIST_SUBSCRIPTIONS","id":1.5}', 2, "Invalid request: ", None),
        ('{"method":"LIST_SUBSCRIPTIONS","id":"not-alnum"}', 2, "Invalid request: ", None),
        ('{"method":"SET_PROPERTY","params":["speed",true],"id":7}', 0, "Unknown property", 7),
        ('{"method":"SET_PROPERTY","params":["combined",1],"id":8}', 1, "Invalid value type", 8),
    ],
)  # fmt: skip
async def test_bad_requests_get_the_nested_error(
    nursery: trio.Nursery, text: str | bytes, code: int, message: str, request_id: int | None
) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(text)
            error_text = await ws.recv()
            error = json.loads(error_text)
            assert set(error) == {"error", "id"}
            assert error["id"] == request_id
            assert error["error"]["code"] == code
            assert error["error"]["msg"].startswith(message)
            parsed = adapter().parse(error_text, NOW)
            assert parsed.kind is FrameKind.ERROR
            assert await request(ws, "SUBSCRIBE", ["btcusdt@ticker"], id=9) is None
        last = {"method": "SUBSCRIBE", "id": 9, "params": ["btcusdt@ticker"]}
        assert sim.subscribe_requests[-1] == last


async def test_five_messages_at_once_are_allowed(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            for number in range(5):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": number}))
            answers = [await receive(ws) for _ in range(5)]
            assert answers == [{"result": [], "id": number} for number in range(5)]


async def test_too_many_messages_close_with_1008(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        async with connect(sim.endpoint, compression=None) as ws:
            for number in range(6):  # at once: five are applied, the sixth closes
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": number}))
            answers: list[dict[str, Any]] = []  # those still queued at the close are lost
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws, answers)
        assert answers == [{"result": [], "id": number} for number in range(len(answers))]
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1008, "Too many requests")


async def test_stream_limit_per_connection(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, max_streams=3)
        async with connect(sim.endpoint, compression=None) as ws:
            await request(ws, "SUBSCRIBE", ["btcusdt@ticker", "ethusdt@ticker"], id=1)
            await ws.send(
                json.dumps(
                    {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "a@ticker"], "id": 2}
                )
            )
            while "error" not in (frame := await receive(ws)):
                pass
            assert frame == {
                "error": {"code": 2, "msg": "Invalid request: too many streams"},
                "id": 2,
            }
            streams = ["ethusdt@ticker", "btcusdt@bookTicker"]  # one repeated: 3 in all
            assert await request(ws, "SUBSCRIBE", streams, id=3) is None
            assert len(await request(ws, "LIST_SUBSCRIPTIONS", id=4)) == 3


async def test_notice_asks_for_a_reconnect(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            await sim.wait_subscribed()
            assert sim.send_notice()
            while (parsed := parser.parse(await ws.recv(), NOW)).kind is not FrameKind.RECONNECT:
                assert parsed.kind in (FrameKind.ACK, FrameKind.DATA)
        notice = json.loads(sim.notice())
        assert notice["stream"] == "!serverShutdown"
        assert notice["data"]["e"] == "serverShutdown"


async def test_muted_symbol_is_acked_but_sends_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery)
        sim.mute("BTCUSDT")
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            assert parser.parse(await ws.recv(), NOW).symbols == PAIRS
            later = [parser.parse(await ws.recv(), NOW).feeds[0] for _ in range(6)]
        assert {feed.symbol for feed in later} == {"ETH/USD"}


async def test_connections_are_cut_at_their_max_age(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, max_connection_age_s=0.2)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(adapter().subscribe_messages(PAIRS)[0])
            with pytest.raises(ConnectionClosedError) as caught:
                await drain(ws)
        assert caught.value.rcvd is None  # no close frame, as at Binance's 24 h mark


async def test_binance_us(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, BinanceUSSimulator)
        assert sim.endpoint == f"{sim.url}/stream"
        parser = adapter(US_EXCHANGE)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            assert parser.parse(await ws.recv(), NOW).symbols == PAIRS
            frames = [await ws.recv() for _ in range(6)]
        for frame in frames:
            [feed] = parser.parse(frame, NOW).feeds
            assert feed.source == "binance_us"
            assert feed.metadata["native_symbol"] in ("BTCUSD", "ETHUSD")
            assert sent(frame, parser) in sim.ticks
        assert {feed.symbol for f in frames for feed in parser.parse(f, NOW).feeds} == set(PAIRS)
