"""The OKX simulator, spoken to by a plain ``websockets`` client over loopback.

Testing policy: real sockets on 127.0.0.1, servers on port 0 started with ``nursery.start``, a
10 s limit on every test, no sleeps waiting for a condition: tests wait for frames, acks or
closes (the keep-alive tests pace their pings, as a collector does).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.trio.client import ClientConnection, connect

from chrono.exchanges.base import FrameKind, ParsedFrame
from chrono.exchanges.okx import EXCHANGE, OkxAdapter
from chrono.testing.simulators.okx import OkxSimulator
from tests.recorded import received

PAIRS = ["BTC/USDT", "ETH/USDT"]
NATIVES = ["BTC-USDT", "ETH-USDT"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_server_errors")


async def start(nursery: trio.Nursery, **options: Any) -> OkxSimulator:
    simulator = OkxSimulator(**options)
    port = await nursery.start(simulator.serve)
    assert simulator.endpoint == f"ws://127.0.0.1:{port}/ws/v5/public"
    return simulator


def adapter(*pairs: str) -> OkxAdapter:
    return OkxAdapter(EXCHANGE.symbol_map(pairs or PAIRS), "w")


def request(op: str, *inst_ids: str, channel: str = "tickers", id: str = "9") -> str:
    args = [{"channel": channel, "instId": inst_id} for inst_id in inst_ids]
    return json.dumps({"id": id, "op": op, "args": args})


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def next_event(ws: ClientConnection, event: str) -> dict[str, Any]:
    """The next event frame of kind ``event``, skipping data pushes and other events."""
    while (frame := await receive(ws)).get("event") != event:
        pass
    return frame


async def wait_closed(ws: ClientConnection) -> ConnectionClosed:
    """Receive until the connection ends; what ``recv`` raised then."""
    while True:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            return exc


async def test_adapter_subscribes_and_feeds_equal_sim_ticks(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        parser = adapter()
        messages = parser.subscribe_messages(PAIRS)
        async with connect(sim.endpoint, compression=None) as ws:
            for message in messages:
                await ws.send(message)
            acks = [await receive(ws), await receive(ws)]
            parsed: list[ParsedFrame] = []
            while sum(len(p.feeds) for p in parsed) < 12:
                parsed.append(parser.parse(await ws.recv(), NOW))
        conn_id = acks[0]["connId"]
        assert acks == [
            {"id": "1", "event": "subscribe", "arg": {"channel": "tickers", "instId": native},
             "connId": conn_id}
            for native in NATIVES
        ]  # fmt: skip
        acked = [parser.parse(json.dumps(ack), NOW).symbols for ack in acks]
        assert acked == [["BTC/USDT"], ["ETH/USDT"]]
        assert {p.kind for p in parsed} == {FrameKind.DATA}
        feeds = [feed for p in parsed for feed in p.feeds]
        ticks = {(t.native.replace("-", "/"), t.price, t.time) for t in sim.ticks}
        assert {(f.symbol, str(f.price), f.timestamp) for f in feeds} <= ticks
        assert {f.symbol for f in feeds} == set(PAIRS)
        assert sim.subscribe_requests == [json.loads(message) for message in messages]


async def test_ticker_frames_carry_every_field_of_the_capture(nursery: trio.Nursery) -> None:
    real = next(json.loads(f) for f in received("okx-tickers") if '"SPOT"' in f)
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            await next_event(ws, "subscribe")
            frames = [await receive(ws) for _ in range(5)]
    for frame in frames:
        assert list(frame) == list(real) == ["arg", "data"]
        assert frame["arg"] == {"channel": "tickers", "instId": "BTC-USDT"}
        [item] = frame["data"]
        assert list(item) == list(real["data"][0])
        assert all(isinstance(value, str) and value for value in item.values())
        assert item["instType"] == "SPOT"
        assert not item["last"].endswith("0") or "." not in item["last"]  # OKX trims zeros
    times = [int(frame["data"][0]["ts"]) for frame in frames]
    assert times == sorted(times)


async def test_ping_is_answered_with_pong(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(adapter().ping_message())
            pong = await ws.recv()
        assert pong == "pong"
        assert adapter().parse(pong, NOW).kind is FrameKind.HEARTBEAT


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "PING",
        "[]",
        '{"op":"subscribe"}',
        '{"op":"subscribe","args":[]}',
        '{"op":"subscribe","args":[{"channel":"tickers"}]}',
        '{"op":"subscribe","args":["tickers"]}',
        '{"op":"login","args":[{"channel":"tickers","instId":"BTC-USDT"}]}',
        '{"id":5,"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}',
    ],
)
async def test_bad_request_gets_60012(nursery: trio.Nursery, text: str) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(text)
            error = await receive(ws)
            await ws.send(request("subscribe", "ETH-USDT"))  # the link stays usable
            assert (await receive(ws))["event"] == "subscribe"
        assert error == {
            "event": "error", "code": "60012", "msg": f"Invalid request: {text}",
            "connId": error["connId"],
        }  # fmt: skip
        parsed = adapter().parse(json.dumps(error), NOW)
        assert (parsed.kind, parsed.message) == (FrameKind.ERROR, f"60012: Invalid request: {text}")


async def test_unknown_inst_id_gets_60018_and_the_rest_is_acked(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        parser = adapter("BTC/XYZ", "BTC/USDT")
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-XYZ", "BTC-USDT", id="77"))
            error, ack, snapshot = [await ws.recv() for _ in range(3)]
        assert json.loads(error) == {
            "id": "77", "event": "error", "code": "60018",
            "msg": "Wrong URL or channel:tickers,instId:BTC-XYZ doesn't exist. Please use the "
                   "correct URL, channel and parameters referring to API document.",
            "connId": json.loads(ack)["connId"],
        }  # fmt: skip
        assert parser.parse(error, NOW).symbols == ["BTC/XYZ"]
        assert parser.parse(ack, NOW) == ParsedFrame(
            FrameKind.ACK, message="tickers:BTC-USDT", symbols=["BTC/USDT"]
        )
        [feed] = parser.parse(snapshot, NOW).feeds
        assert feed.symbol == "BTC/USDT"


async def test_other_channel_or_path_gets_60018(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT", channel="trades"))
            error = await receive(ws)
        assert (error["code"], "channel:trades,instId:BTC-USDT" in error["msg"]) == ("60018", True)
        async with connect(sim.url + "/ws/v5/business", compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            assert (await receive(ws))["code"] == "60018"
        assert sim.ticks == []


async def test_unsubscribe_is_acked_and_stops_that_pair(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", *NATIVES))
            await sim.wait_subscribed(2)
            await ws.send(request("unsubscribe", "ETH-USDT", id="10"))
            ack = await next_event(ws, "unsubscribe")
            later = [await receive(ws) for _ in range(6)]
        assert ack["id"] == "10"
        assert ack["arg"] == {"channel": "tickers", "instId": "ETH-USDT"}
        assert adapter().parse(json.dumps(ack), NOW).kind is FrameKind.INFO
        assert {frame["arg"]["instId"] for frame in later} == {"BTC-USDT"}


async def test_muted_pair_is_acked_but_gets_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        sim.mute("ETH-USDT")
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(parser.subscribe_messages(PAIRS)[0])
            acks = [parser.parse(await ws.recv(), NOW) for _ in range(2)]
            later = [parser.parse(await ws.recv(), NOW) for _ in range(10)]
        assert [ack.symbols for ack in acks] == [["BTC/USDT"], ["ETH/USDT"]]
        assert {feed.symbol for p in later for feed in p.feeds} == {"BTC/USDT"}


async def test_resubscribe_is_acked_again_with_the_latest_ticker(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        parser = adapter()
        async with connect(sim.endpoint, compression=None) as ws:
            snapshots = []
            for _ in range(2):
                await ws.send(parser.subscribe_messages(["BTC/USDT"])[0])
                assert parser.parse(await ws.recv(), NOW).kind is FrameKind.ACK
                snapshots.append(await ws.recv())
        assert snapshots[0] == snapshots[1]
        assert len(sim.ticks) == 1
        [feed] = parser.parse(snapshots[0], NOW).feeds
        assert (str(feed.price), feed.timestamp) == (sim.ticks[0].price, sim.ticks[0].time)


async def test_notice_is_reconnect(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            ack = await next_event(ws, "subscribe")
            assert sim.send_notice()
            notice = await next_event(ws, "notice")
        assert notice == {
            "event": "notice", "code": "64008",
            "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
            "connId": ack["connId"],
        }  # fmt: skip
        assert adapter().parse(json.dumps(notice), NOW).kind is FrameKind.RECONNECT
        assert adapter().parse(sim.notice(), NOW).kind is FrameKind.RECONNECT


async def test_connections_have_their_own_conn_id(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=3600)
        conn_ids = []
        for _ in range(2):
            async with connect(sim.endpoint, compression=None) as ws:
                await ws.send(request("subscribe", "BTC-USDT"))
                conn_ids.append((await receive(ws))["connId"])
        assert conn_ids[0] != conn_ids[1]
        assert all(len(conn_id) == 8 for conn_id in conn_ids)


async def test_no_subscribe_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, subscribe_timeout_s=0.1, idle_timeout_s=None)
        async with connect(sim.endpoint, compression=None) as ws:
            closed = await wait_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1008
        assert OkxSimulator(symbols=NATIVES).subscribe_timeout_s == 30.0


async def test_no_data_and_no_ping_is_closed_with_4004(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, idle_timeout_s=0.2)
        sim.set_silent(True)  # acked, but nothing pushed
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            assert (await receive(ws))["event"] == "subscribe"
            closed = await wait_closed(ws)
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (4004, "No data received in 30s.")
        assert sim.idle_cuts == 1
        assert OkxSimulator(symbols=NATIVES).idle_timeout_s == 30.0


async def test_pings_keep_a_quiet_link(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, idle_timeout_s=0.4)
        sim.set_silent(True)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            await next_event(ws, "subscribe")
            end = trio.current_time() + 1.0
            while trio.current_time() < end:
                await ws.send("ping")
                assert await ws.recv() == "pong"
                await trio.sleep(0.05)  # the client's ping cadence, well inside the idle cut
            await ws.send("ping")
            assert await ws.recv() == "pong"
        assert sim.idle_cuts == 0


async def test_data_keeps_a_link_without_pings(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        sim = await start(nursery, tick_interval_s=0.01, idle_timeout_s=0.4)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            end = trio.current_time() + 1.0
            while trio.current_time() < end:
                await ws.recv()
        assert sim.idle_cuts == 0


async def test_cancelling_serve_ends_connections(nursery: trio.Nursery) -> None:
    sim = OkxSimulator(tick_interval_s=0.01)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await sim.serve(task_status=task_status)
        stopped.set()

    with trio.fail_after(10):
        await nursery.start(serve)
        async with connect(sim.endpoint, compression=None) as ws:
            await ws.send(request("subscribe", "BTC-USDT"))
            await sim.wait_subscribed()
            scope.cancel()
            await stopped.wait()
            await wait_closed(ws)
