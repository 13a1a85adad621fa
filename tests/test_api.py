"""The API over real HTTP and WebSockets: keys, the error format, latest prices, /stream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect

from chrono.feeds import Feeds
from chrono.model import PriceFeed
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY, Running
from tests.feeds import make_feed

pytestmark = pytest.mark.usefixtures("running")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    return body


async def push(running: Running, feeds: list[PriceFeed]) -> None:
    """Into the real pipeline, then wait until the fan-out has seen them."""
    target = running.service.fanout.feeds_in + len(feeds)
    async with running.service.intake() as intake:
        await intake.send(Feeds.of(feeds))
    while running.service.fanout.feeds_in < target:
        await trio.sleep(0.01)


async def test_health_needs_no_key(running: Running) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.url) as http:
            response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["services"]["store"] == "up"
    assert response.headers["X-Request-ID"]


async def test_latest_prices_need_a_public_or_admin_key(running: Running) -> None:
    feeds = [make_feed(1, price="100.5"), make_feed(2, price="101.25"), make_feed(0, price="99")]
    with trio.fail_after(10):
        await push(running, feeds)
        async with httpx.AsyncClient(base_url=running.url) as http:
            path = "/prices/latest?symbols=BTC/USD"
            assert_error(await http.get(path), 401, "UNAUTHORIZED")
            assert_error(await http.get(path, headers=bearer("nope")), 401, "UNAUTHORIZED")
            assert_error(await http.get(path, headers=bearer(INTERNAL_KEY)), 403, "FORBIDDEN")
            for key in (PUBLIC_KEY, ADMIN_KEY):
                response = await http.get(path, headers=bearer(key))
                assert response.status_code == 200
                body = response.json()
                assert body["cached"] is True
                [item] = body["data"]
                assert item["symbol"] == "BTC/USD"
                assert item["price"] == "101.25"  # newest by exchange time, not arrival
                assert item["timestamp"] == "2026-11-20T12:00:00.123458Z"
                assert item["source"] == "coinbase"
                assert item["staleness_ms"] > 0


async def test_latest_falls_back_to_the_store(running: Running) -> None:
    await running.service.store.write([make_feed(5, symbol="SOL/USD", price="150.00")])
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.url, headers=bearer(PUBLIC_KEY)) as http:
            body = (await http.get("/prices/latest?symbols=SOL/USD,DOGE/USD")).json()
            assert body["cached"] is False
            assert [i["price"] for i in body["data"]] == ["150.00"]
            assert body["missing"] == ["DOGE/USD"]
            none = await http.get("/prices/latest?symbols=DOGE/USD")  # the seed's: 200, no data
            assert none.status_code == 200
            assert (none.json()["data"], none.json()["missing"]) == ([], ["DOGE/USD"])


async def test_bad_requests_get_the_error_format(running: Running) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.url, headers=bearer(ADMIN_KEY)) as http:
            assert_error(await http.get("/prices/latest"), 400, "VALIDATION_ERROR")
            body = assert_error(
                await http.get("/prices/latest?symbols=BTCUSD"), 400, "VALIDATION_ERROR"
            )
            assert body["error"]["details"] == {"parameter": "symbols", "invalid": ["BTCUSD"]}
            assert_error(await http.get("/no/such/route"), 404, "NOT_FOUND")
            assert_error(await http.post("/health"), 405, "METHOD_NOT_ALLOWED")


async def test_status_is_for_admin_keys(running: Running) -> None:
    with trio.fail_after(10):
        await push(running, [make_feed(1)])
        async with httpx.AsyncClient(base_url=running.url) as http:
            assert_error(await http.get("/status", headers=bearer(PUBLIC_KEY)), 403, "FORBIDDEN")
            response = await http.get("/status", headers=bearer(ADMIN_KEY))
    status = response.json()
    assert status["service"]["state"] == "running"
    assert status["pipeline"]["fanout"]["feeds_in"] == 1
    assert status["store"]["kind"] == "sqlite"
    assert {c["name"] for c in status["supervisor"]} >= {"http", "fanout", "batcher", "writer"}


async def test_keys_never_reach_the_logs(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.url) as http:
            await http.get("/status", headers=bearer(ADMIN_KEY))
            await http.get("/status", headers=bearer(ADMIN_KEY + "x"))
    assert ADMIN_KEY not in caplog.text


async def test_stream_delivers_subscribed_symbols_only(running: Running) -> None:
    with trio.fail_after(10):
        async with connect(f"{running.ws_url}/stream?key={PUBLIC_KEY}") as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": ["ETH/USD"]}))
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["symbols"], reply["unknown"]) == (
                "subscribed", ["ETH/USD"], ["ETH/USD"])  # fmt: skip
            await push(running, [make_feed(1), make_feed(2, symbol="ETH/USD", price="0.00000001")])
            update = json.loads(await ws.recv())
            assert update["type"] == "price_update"
            assert update["data"]["symbol"] == "ETH/USD"
            assert update["data"]["price"] == "0.00000001"
            await ws.send(json.dumps({"action": "unsubscribe", "symbols": ["ETH/USD"]}))
            assert json.loads(await ws.recv())["symbols"] == []
            await ws.send("not json")
            assert json.loads(await ws.recv())["error"]["code"] == "VALIDATION_ERROR"
            await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTCUSD", "BTC/USD"]}))
            reply = json.loads(await ws.recv())  # a bad symbol is listed; the good one is taken
            assert (reply["type"], reply["symbols"], reply["invalid"]) == (
                "subscribed", ["BTC/USD"], ["BTCUSD"])  # fmt: skip


async def test_stream_auth_by_first_message_and_refusal(running: Running) -> None:
    with trio.fail_after(10):
        async with connect(f"{running.ws_url}/stream") as ws:
            await ws.send(json.dumps({"action": "auth", "key": PUBLIC_KEY}))
            await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC/USD"]}))
            assert json.loads(await ws.recv())["symbols"] == ["BTC/USD"]
        async with connect(f"{running.ws_url}/stream?key={INTERNAL_KEY}") as ws:
            assert json.loads(await ws.recv())["error"]["code"] == "FORBIDDEN"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1008


async def test_stream_clients_get_1001_when_the_service_stops(running: Running) -> None:
    with trio.fail_after(10):
        async with connect(f"{running.ws_url}/stream?key={PUBLIC_KEY}") as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC/USD"]}))
            await ws.recv()
            running.service.stop()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001
