"""``/stream`` as a client uses it, over real WebSockets to a whole service on loopback.

Snapshot on subscribe, one ``seq`` for the hub and a ``prev_seq`` chain per symbol, resume by
``since_seq`` from the replay ring (and the ``gap`` past it), throttles, the consensus and status
channels, heartbeats with each symbol's data age, the connection lifetime (``going_away``, then
resume with nothing lost), a stalled client conflated then cut while a healthy one misses
nothing, pings with a pong timeout, and bad commands answered with the field at fault. The
throttles' timing is checked on the hub itself with trio's autojump clock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from chrono.config import StreamConfig
from chrono.feeds import Feeds
from chrono.model import PriceFeed, utc_now
from chrono.pipeline.latest import LatestPrices
from chrono.service import Service
from chrono.stream import StreamClient, StreamHub, Throttle
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.conftest import PUBLIC_KEY, service_config
from tests.test_stream_probe import TEXT, RawWebSocket
from tests.waiting import wait_until

STREAM = {
    "heartbeat_s": 0.3,
    "consensus_check_ms": 50,
    "consensus_interval_ms": 60_000,
    "consensus_deviation_bps": 10.0,
    "status_check_ms": 50,
    "send_timeout_s": 0.5,
}
CONSENSUS = {"min_sources": 1, "max_age_ms": 2000, "symbols": {"BTC/USD": {}, "ETH/USD": {}}}


def feed(price: str, *, symbol: str = "BTC/USD", source: str = "coinbase") -> PriceFeed:
    """A feed received now (the consensus and the ages are of the wall clock)."""
    now = utc_now()
    return PriceFeed(symbol=symbol, price=Decimal(price), timestamp=now - timedelta(milliseconds=2),
                     received_at=now, source=source, worker_id=f"{source}-1")  # fmt: skip


@dataclass
class Live:
    service: Service
    ws_url: str

    async def push(self, *feeds: PriceFeed) -> None:
        """Into the real pipeline; returns once the fan-out (and so the hub) has them."""
        target = self.service.fanout.feeds_in + len(feeds)
        async with self.service.intake() as intake:
            await intake.send(Feeds.of(list(feeds)))
        await wait_until(lambda: self.service.fanout.feeds_in >= target)

    def connect(self, query: str = "") -> Any:
        return connect(f"{self.ws_url}?key={PUBLIC_KEY}{query}")

    @property
    def hub(self) -> StreamHub:
        return self.service.hub


async def start(tmp_path: Path, nursery: trio.Nursery, **stream: Any) -> Live:
    config = service_config(tmp_path, stream={**STREAM, **stream}, consensus=CONSENSUS)
    service = Service(config)
    port = await nursery.start(service.run)
    return Live(service, f"ws://127.0.0.1:{port}/stream")


@pytest.fixture
async def live(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Live]:
    running = await start(tmp_path, nursery)
    yield running
    running.service.stop()


async def send(ws: ClientConnection, **command: Any) -> None:
    await ws.send(json.dumps(command))


async def receive(ws: ClientConnection, kind: str | None = None) -> dict[str, Any]:
    """The next message (of ``kind``: heartbeats and others in between are skipped)."""
    while True:
        message: dict[str, Any] = json.loads(await ws.recv())
        if kind is None or message["type"] == kind:
            return message


async def subscribe(ws: ClientConnection, **command: Any) -> dict[str, Any]:
    await send(ws, action="subscribe", **command)
    return await receive(ws, "subscribed")


def chain(updates: list[dict[str, Any]], start: dict[str, int | None]) -> None:
    """Each symbol's updates link up: every ``prev_seq`` is the seq of its previous one."""
    last = dict(start)
    for update in updates:
        symbol = update["data"]["symbol"]
        assert update["prev_seq"] == last[symbol], update
        last[symbol] = update["seq"]


# -- snapshot, seq and resume --------------------------------------------------------------------


async def test_a_subscribe_gets_its_answer_then_a_snapshot_then_every_update_with_a_seq(
    live: Live,
) -> None:
    await live.push(
        feed("100", source="coinbase"), feed("101", source="kraken"), feed("5", symbol="ETH/USD")
    )
    with trio.fail_after(10):
        async with live.connect() as ws:
            reply = await subscribe(ws, id="a1", symbols=["btc/usd", "DOGE/USD", "BTCUSD", 7])
            assert reply["id"] == "a1"
            assert reply["symbols"] == reply["accepted"] == ["BTC/USD", "DOGE/USD"]
            assert (reply["unknown"], reply["invalid"]) == (["DOGE/USD"], ["BTCUSD", 7])
            snapshot = [await receive(ws), await receive(ws)]  # one per source, at once
            assert [m["snapshot"] for m in snapshot] == [True, True]
            assert [m["data"]["source"] for m in snapshot] == ["coinbase", "kraken"]
            assert [m["data"]["price"] for m in snapshot] == ["100", "101"]
            last_btc = snapshot[1]["seq"]
            assert snapshot[0]["seq"] == last_btc <= reply["seq"]  # the symbol's newest seq
            await live.push(feed("102"), feed("6", symbol="ETH/USD"), feed("103", source="kraken"))
            await live.push(feed("7", symbol="ETH/USD"), feed("104"))
            await live.push(feed("1", symbol="DOGE/USD"))  # unknown before: subscribed anyway
            updates = [await receive(ws, "price_update") for _ in range(4)]
        assert [u["data"]["price"] for u in updates] == ["102", "103", "104", "1"]
        assert not any("snapshot" in u for u in updates)
        seqs = [u["seq"] for u in updates]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 4
        assert seqs[1] - seqs[0] == 2  # the ETH update in between took a seq: a gap, not a loss
        chain(updates, {"BTC/USD": last_btc, "DOGE/USD": None})


async def test_a_client_that_reconnects_with_since_seq_gets_exactly_what_it_missed(
    live: Live,
) -> None:
    with trio.fail_after(10):
        async with live.connect() as staying:
            await subscribe(staying, symbols=["BTC/USD", "ETH/USD"])
            async with live.connect() as leaving:
                await subscribe(leaving, symbols=["BTC/USD", "ETH/USD"])
                await live.push(feed("100"), feed("5", symbol="ETH/USD"))
                seen = [await receive(leaving, "price_update") for _ in range(2)]
            await live.push(feed("101"), feed("99", symbol="SOL/USD"), feed("6", symbol="ETH/USD"))
            await live.push(feed("102", source="kraken"))
            stayed = [await receive(staying, "price_update") for _ in range(5)]
            async with live.connect() as back:
                reply = await subscribe(
                    back, symbols=["BTC/USD", "ETH/USD"], since_seq=seen[-1]["seq"]
                )
                replayed = [await receive(back) for _ in range(3)]
                await live.push(feed("103"))
                after = await receive(back, "price_update")
                stayed.append(await receive(staying, "price_update"))
    assert reply["type"] == "subscribed"
    assert replayed == stayed[2:5]  # the very messages a connected client got, no snapshot
    assert after == stayed[5]
    chain(stayed, {"BTC/USD": None, "ETH/USD": None})


async def test_a_since_seq_past_the_ring_gets_a_gap_then_what_the_ring_holds(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    live = await start(tmp_path, nursery, replay_max_updates=3)
    with trio.fail_after(10):
        since = live.hub.seq
        for price in ("1", "2", "3", "4", "5"):
            await live.push(feed(price))
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD"], since_seq=since)
            gap = await receive(ws)
            held = [await receive(ws) for _ in range(3)]
            await subscribe(ws, id=2, symbols=["BTC/USD"], since_seq=live.hub.seq + 10)
            ahead = await receive(ws)
    first_held = held[0]["seq"]
    assert gap == {
        "type": "gap",
        "from_seq": since + 1,
        "to_seq": first_held - 1,
        "channel": "prices",
    }
    assert [m["data"]["price"] for m in held] == ["3", "4", "5"]  # then /prices/range for the gap
    assert ahead["type"] == "error"
    assert ahead["error"]["field"] == "since_seq"
    live.service.stop()


# -- throttles -----------------------------------------------------------------------------------


def _prices(batch: list[str] | None) -> list[str]:
    assert batch is not None
    return [json.loads(m)["data"]["price"] for m in batch if '"price_update"' in m[:30]]


async def _subscribed(hub: StreamHub, client: StreamClient, throttle: Throttle) -> None:
    await hub.subscribe(client, "prices", ["BTC/USD"], throttle, reply=lambda _: "{}")
    await client.next_batch()  # the reply


async def test_min_interval_conflates_to_the_newest_and_never_loses_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = StreamHub(StreamConfig())
    with hub.connected() as client:
        await _subscribed(hub, client, Throttle(min_interval_s=1.0))
        start = trio.current_time()
        for price in ("1", "2", "3", "4"):  # within 0.3 s
            hub.publish(Feeds.of([feed(price)]))
            await trio.sleep(0.1)
        assert _prices(await client.next_batch()) == ["1"]  # the first at once
        assert _prices(await client.next_batch()) == ["4"]  # the newest, when due
        assert trio.current_time() - start == pytest.approx(1.0)
        hub.publish(Feeds.of([feed("5", source="kraken")]))  # each source has its own interval
        assert _prices(await client.next_batch()) == ["5"]


async def test_held_updates_of_several_sources_are_released_in_seq_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = StreamHub(StreamConfig())
    with hub.connected() as client:
        await _subscribed(hub, client, Throttle(min_interval_s=1.0))
        for source in ("kraken", "coinbase"):  # the first of each at once
            hub.publish(Feeds.of([feed("1", source=source)]))
        assert _prices(await client.next_batch()) == ["1", "1"]
        hub.publish(Feeds.of([feed("2", source="kraken")]))  # held: kraken first ...
        hub.publish(Feeds.of([feed("3", source="coinbase")]))
        hub.publish(Feeds.of([feed("4", source="kraken")]))  # ... then its newer one
        batch = await client.next_batch()
        assert _prices(batch) == ["3", "4"]  # both due at once: coinbase's came first
        seqs = [json.loads(m)["seq"] for m in batch]
        assert seqs == sorted(seqs)


async def test_deviation_sends_a_move_at_once_and_an_unmoved_price_only_after_the_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = StreamHub(StreamConfig())
    with hub.connected() as client:
        await _subscribed(hub, client, Throttle(deviation=0.001, heartbeat_s=30.0))  # 10 bps
        hub.publish(Feeds.of([feed("100")]))
        assert _prices(await client.next_batch()) == ["100"]
        start = trio.current_time()
        await trio.sleep(1)
        hub.publish(Feeds.of([feed("100.05")]))  # 5 bps: held
        await trio.sleep(1)
        hub.publish(Feeds.of([feed("100.2")]))  # 20 bps: at once
        assert _prices(await client.next_batch()) == ["100.2"]
        assert trio.current_time() - start == pytest.approx(2.0)
        hub.publish(Feeds.of([feed("100.25")]))  # 5 bps from the last sent: held ...
        assert _prices(await client.next_batch()) == ["100.25"]  # ... until the heartbeat
        assert trio.current_time() - start == pytest.approx(32.0)


async def test_a_throttled_subscription_over_a_socket_gets_the_first_and_the_newest(
    live: Live,
) -> None:
    with trio.fail_after(10):
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD"], min_interval_ms=300)
            for price in ("1", "2", "3", "4", "5"):
                await live.push(feed(price))
            first = await receive(ws, "price_update")
            newest = await receive(ws, "price_update")
    assert (first["data"]["price"], newest["data"]["price"]) == ("1", "5")
    assert newest["prev_seq"] != first["seq"]  # the chain shows the conflated ones


async def test_batch_puts_many_updates_in_one_frame(live: Live) -> None:
    with trio.fail_after(10):
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD"], batch=True)
            await live.push(*(feed(str(p)) for p in range(1, 201)))
            prices: list[str] = []
            frames = 0
            while len(prices) < 200:
                message = await receive(ws)
                frames += 1
                if message["type"] == "price_updates":
                    prices += [u["data"]["price"] for u in message["updates"]]
                elif message["type"] == "price_update":
                    prices.append(message["data"]["price"])
    assert prices == [str(p) for p in range(1, 201)]
    assert frames < 200


# -- consensus and status ------------------------------------------------------------------------


async def test_the_consensus_channel_sends_a_snapshot_then_each_move_past_the_threshold(
    live: Live,
) -> None:
    await live.push(feed("100", source="coinbase"), feed("102", source="kraken"))
    with trio.fail_after(10):
        async with live.connect() as ws:
            reply = await subscribe(ws, id=1, channel="consensus", symbols=["BTC/USD"])
            assert reply["channel"] == "consensus"
            snapshot = await receive(ws, "consensus_update")
            assert snapshot["snapshot"] is True
            data = snapshot["data"]
            assert (data["symbol"], data["price"], data["status"]) == ("BTC/USD", "101", "ok")
            assert [i["source"] for i in data["inputs"]] == ["coinbase", "kraken"]
            await live.push(feed("100.01", source="coinbase"))  # 0.5 bps: under the threshold
            await live.push(feed("104", source="coinbase"), feed("104", source="kraken"))
            moved = await receive(ws, "consensus_update")
    assert moved["data"]["price"] == "104"
    assert "snapshot" not in moved


async def test_the_status_channel_reports_a_symbol_going_stale_and_fresh_again(
    live: Live,
) -> None:
    with trio.fail_after(15):
        async with live.connect() as ws:
            await subscribe(ws, channel="status", symbols=["BTC/USD"])
            snapshot = [await receive(ws) for _ in range(2)]
            assert {(m["kind"], m["name"], m["state"]) for m in snapshot} == {
                ("symbol", "BTC/USD", "stale"), ("store", "store", "up")}  # fmt: skip
            await live.push(feed("100"))
            fresh = await receive(ws, "status_update")
            stale = await receive(ws, "status_update")  # max_age_ms (2 s) later
    assert (fresh["name"], fresh["state"]) == ("BTC/USD", "fresh")
    assert (stale["name"], stale["state"], stale["prev_seq"]) == ("BTC/USD", "stale", fresh["seq"])


async def test_a_heartbeat_carries_each_symbols_data_age(live: Live) -> None:
    await live.push(feed("100"))
    with trio.fail_after(10):
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD", "ETH/USD"])
            beat = await receive(ws, "heartbeat")
    assert beat["ages_ms"]["ETH/USD"] is None  # subscribed, but silent: visible as such
    assert 0 <= beat["ages_ms"]["BTC/USD"] < 10_000
    assert beat["seq"] >= 1


# -- liveness and lifetime -----------------------------------------------------------------------


async def test_at_its_lifetime_a_client_is_told_going_away_and_resumes_with_nothing_lost(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    live = await start(tmp_path, nursery, max_lifetime_s=1.0, reconnect_after_ms=50)
    with trio.fail_after(10):
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD"])
            await live.push(feed("1"))
            last = (await receive(ws, "price_update"))["seq"]
            going = await receive(ws, "going_away")
            with pytest.raises(ConnectionClosed) as info:
                await receive(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
        assert 0 <= going["reconnect_after_ms"] <= 50
        await live.push(feed("2"), feed("3"))  # while it is away
        async with live.connect() as ws:
            await subscribe(ws, symbols=["BTC/USD"], since_seq=last)
            missed = [await receive(ws) for _ in range(2)]
    assert [m["data"]["price"] for m in missed] == ["2", "3"]
    assert missed[0]["prev_seq"] == last
    live.service.stop()


async def test_a_client_that_never_answers_pings_is_closed_with_1011(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = service_config(tmp_path, stream={"ping_interval_s": 0.2, "pong_timeout_s": 0.3})
    service = Service(config)
    port = await nursery.start(service.run)
    with trio.fail_after(10):
        async with connect(f"ws://127.0.0.1:{port}/stream?key={PUBLIC_KEY}") as answering:
            deaf = await RawWebSocket.open(port, f"?key={PUBLIC_KEY}")  # reads, never pongs
            await wait_until(lambda: service.hub.statistics().clients == 2)
            assert await deaf.close_code() == 1011
            await wait_until(lambda: service.hub.statistics().clients == 1)
            await trio.sleep(1)  # several pings later, the client that answers them is there
            await send(answering, action="subscribe", symbols=["BTC/USD"])
            assert (await receive(answering, "subscribed"))["symbols"] == ["BTC/USD"]
            await deaf.stream.aclose()
    service.stop()


async def test_a_stalled_client_is_conflated_then_cut_while_a_healthy_one_misses_nothing(
    live: Live,
) -> None:
    with trio.fail_after(30):
        stalled = await RawWebSocket.open(int(live.ws_url.split(":")[2].split("/")[0]),
                                          f"?key={PUBLIC_KEY}", rcvbuf=4096)  # fmt: skip
        await stalled.send_frame(
            TEXT, b'{"action": "subscribe", "symbols": ["BTC/USD", "ETH/USD"]}'
        )
        async with live.connect() as healthy:
            await subscribe(healthy, symbols=["BTC/USD", "ETH/USD"])
            await wait_until(lambda: len(live.hub._clients) == 2 and all(
                c.subscriptions for c in live.hub._clients))  # fmt: skip
            got: list[dict[str, Any]] = []
            sent = 0
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    while len(got) < 4000:
                        got.append(await receive(healthy, "price_update"))

                nursery.start_soon(read)
                for round in range(100):
                    batch = [feed(f"{round}.{i}", symbol=("BTC/USD", "ETH/USD")[i % 2])
                             for i in range(40)]  # fmt: skip
                    await live.push(*batch)
                    sent += len(batch)
                    await trio.sleep(0.01)
                await wait_until(lambda: live.hub.statistics().cut_off == 1, timeout_s=10)
        stats = live.hub.statistics()
        assert stats.dropped > 0  # the stalled one's superseded updates
        assert len(got) == sent == 4000  # the healthy one: every update, in order, unbroken
        chain(got, {"BTC/USD": None, "ETH/USD": None})
        await stalled.stream.aclose()


def _drain(batch: list[str] | None) -> list[dict[str, Any]]:
    assert batch is not None
    return [json.loads(m) for m in batch]


def _newest_per_key(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of a live client's updates: the newest of each (symbol, source), in seq order."""
    newest = {(m["data"]["symbol"], m["data"]["source"]): m for m in got if "seq" in m}
    return sorted(newest.values(), key=lambda m: m["seq"])


async def test_a_client_behind_is_parked_and_caught_up_from_the_ring_when_it_drains() -> None:
    hub = StreamHub(StreamConfig(queue_messages=10))
    keys = [(s, src) for s in ("BTC/USD", "ETH/USD") for src in ("coinbase", "kraken")]
    with hub.connected() as healthy, hub.connected() as slow:
        healthy.limit = 10_000
        for client in (healthy, slow):
            await hub.subscribe(client, "prices", ["BTC/USD", "ETH/USD"], reply=lambda _: "{}")
            await client.next_batch()  # the reply
        for n in range(10):  # slow's queue is full: behind, then parked
            symbol, source = keys[n % 4]
            hub.publish(Feeds.of([feed(f"1.{n}", symbol=symbol, source=source)]))
        assert slow.parked_at == hub.seq
        assert slow.lagging_since is not None
        assert [sub.client for subs in hub._watch["prices"].values() for sub in subs] == [
            healthy, healthy]  # fmt: skip
        assert len(_drain(await healthy.next_batch())) == 10  # live, all of them
        for client in (healthy, slow):  # slow one while parked
            await hub.subscribe(client, "prices", ["SOL/USD"], reply=lambda _: "{}")
        assert _drain(await healthy.next_batch()) == [{}]
        for n in range(200):
            symbol, source = keys[(n * 7) % 4 if n % 5 else 0]
            hub.publish(Feeds.of([feed(f"2.{n}", symbol=symbol, source=source),
                                  feed(f"3.{n}", symbol="SOL/USD")]))  # fmt: skip
        assert {sub.client for subs in hub._watch["prices"].values() for sub in subs} == {healthy}
        since = _drain(await healthy.next_batch())
        assert len(_drain(await slow.next_batch())) == 11  # the 10 queued and the reply
        caught_up = _drain(await slow.next_batch())
        assert caught_up == _newest_per_key(since)  # the very messages, newest per key
        assert slow.dropped == 400 - len(caught_up)
        hub.publish(Feeds.of([feed("4", symbol="ETH/USD", source="kraken")]))  # watched again
        assert _drain(await slow.next_batch()) == _drain(await healthy.next_batch())


async def test_a_parked_client_the_ring_outran_gets_a_gap_then_the_newest_prices() -> None:
    latest = LatestPrices()
    hub = StreamHub(StreamConfig(queue_messages=5, replay_max_updates=3), latest)
    with hub.connected() as slow:
        await hub.subscribe(slow, "prices", ["BTC/USD"], reply=lambda _: "{}")
        await slow.next_batch()  # the reply
        for n in range(5):
            hub.publish(Feeds.of([feed(f"1.{n}")]))
        parked = slow.parked_at
        assert parked == hub.seq
        for n, source in enumerate(["bitstamp"] + ["coinbase", "kraken"] * 10):
            feeds = Feeds.of([feed(f"2.{n}", source=source)])
            latest.update(feeds)
            hub.publish(feeds)
        assert len(_drain(await slow.next_batch())) == 5
        gap, *caught_up = _drain(await slow.next_batch())
        oldest = hub.ring.first_seq
        assert oldest is not None
        assert gap == {"type": "gap", "from_seq": parked + 1, "to_seq": oldest - 1,
                       "channel": "prices"}  # fmt: skip
        assert [(m.get("snapshot", False), m["data"]["source"], m["data"]["price"])
                for m in caught_up] == [(True, "bitstamp", "2.0"), (False, "coinbase", "2.19"),
                                        (False, "kraken", "2.20")]  # fmt: skip


# -- bad commands --------------------------------------------------------------------------------

BAD = [
    ({"action": "subscribe", "id": 1, "symbols": ["BTC/USD"], "channel": "trades"}, "channel"),
    (
        {"action": "subscribe", "id": 2, "symbols": ["BTC/USD"], "min_interval_ms": -1},
        "min_interval_ms",
    ),
    (
        {"action": "subscribe", "id": 3, "symbols": ["BTC/USD"], "deviation_bps": "x"},
        "deviation_bps",
    ),
    ({"action": "subscribe", "id": 4, "symbols": "BTC/USD"}, "symbols"),
    ({"action": "subscribe", "id": 5, "symbols": ["BTC/USD"], "colour": "red"}, "colour"),
    ({"action": "dance", "id": "six"}, "action"),
    ({"action": "subscribe", "id": 7, "channel": "status", "deviation_bps": 5}, "deviation_bps"),
    ({"action": "subscribe", "id": 8, "since_seq": -5}, "since_seq"),
    ({"action": "auth", "id": 9, "key": PUBLIC_KEY}, "action"),
]


async def test_a_bad_command_is_answered_with_its_id_and_the_field_and_the_stream_goes_on(
    live: Live,
) -> None:
    with trio.fail_after(10):
        async with live.connect() as ws:
            for command, field in BAD:
                await ws.send(json.dumps(command))
                answer = await receive(ws)
                assert answer["type"] == "error", command
                assert (answer["id"], answer["error"]["field"]) == (command["id"], field)
                assert answer["error"]["code"] == "VALIDATION_ERROR"
            too_many = [f"C{i}/USD" for i in range(1001)]
            await send(ws, action="subscribe", id=10, symbols=too_many)
            assert (await receive(ws))["error"]["field"] == "symbols"
            reply = await subscribe(ws, id=11, symbols=["BTC/USD"])
            assert (reply["id"], reply["symbols"]) == (11, ["BTC/USD"])
            await send(ws, action="unsubscribe", id=12)  # no symbols: the whole channel
            assert (await receive(ws, "subscribed"))["symbols"] == []


async def test_the_status_channel_reports_a_source_going_down_and_up(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator()
    await nursery.start(sim.serve)
    collector = {"exchange": "coinbase", "symbols": ["BTC/USD"], "url": sim.url,
                 "backoff_initial_s": 0.5, "backoff_max_s": 0.5}  # fmt: skip
    config = service_config(tmp_path, stream=STREAM, collectors=[collector])
    service = Service(config)
    port = await nursery.start(service.run)
    with trio.fail_after(20):
        async with connect(f"ws://127.0.0.1:{port}/stream?key={PUBLIC_KEY}") as ws:
            await subscribe(ws, channel="status")  # no symbols: the source and store events
            states: list[tuple[str, str]] = []

            async def until(state: tuple[str, str]) -> None:
                while state not in states:
                    message = await receive(ws, "status_update")
                    assert message["kind"] in ("source", "store"), message
                    states.append((message["name"], message["state"]))

            await until(("coinbase", "up"))
            sim.reject_connections(5, status=503)
            sim.drop_connections()
            await until(("coinbase", "down"))
            await until(("coinbase", "up"))  # reconnected after the refusals
    service.stop()
