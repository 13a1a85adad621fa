"""Rate limits: token buckets per key and per client address, and /stream connection slots.

The bucket arithmetic runs on trio's autojump clock (the limiter reads ``trio.current_time()``);
everything else over real HTTP and WebSockets against a whole service, in real time, with limits
small enough (or a 60-a-minute key: one token a second) for a test to wait out.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

import chrono.api.limits
from chrono.api.auth import ApiKey, Role
from chrono.api.limits import Limiter, LimiterStats, RateState
from chrono.config import LimitsConfig
from chrono.model import time_text, utc_now
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY
from tests.dataapi import running_api
from tests.waiting import wait_until

LATEST = "/prices/latest?symbols=BTC/USD"
TINY_KEY = "tiny_public_key_0001"  # 3 a minute
SECOND_KEY = "second_public_key_0001"  # 60 a minute: a token a second
EDGE_KEY = "edge_internal_key_0001"  # 2 a minute, internal
OPEN_KEY = "open_public_key_0001"  # rate_per_min = 0: unlimited


def auth(**limits_of: int) -> dict[str, Any]:
    return {
        "internal_keys": [INTERNAL_KEY],
        "public_keys": [PUBLIC_KEY],
        "admin_keys": [ADMIN_KEY],
        "keys": [
            {"name": "tiny", "role": "public", "key": TINY_KEY, "rate_per_min": 3},
            {"name": "second", "role": "public", "key": SECOND_KEY, "rate_per_min": 60},
            {"name": "edge", "role": "internal", "key": EDGE_KEY, "rate_per_min": 2},
            {"name": "open", "role": "public", "key": OPEN_KEY, "rate_per_min": 0},
        ],
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rate_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["X-RateLimit-Limit"]), int(h["X-RateLimit-Remaining"]), int(h["X-RateLimit-Reset"])


def assert_429(response: httpx.Response) -> int:
    """A refusal in the envelope; its Retry-After."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["status"] == 429
    assert body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    assert body["error"]["details"]["retry_after_s"] == retry_after
    assert int(response.headers["X-RateLimit-Remaining"]) == 0
    return retry_after


# -- the buckets, on the autojump clock -------------------------------------------------------

PUBLIC = ApiKey("p", Role.PUBLIC)


def take(limiter: Limiter, key: ApiKey = PUBLIC) -> RateState:
    state = limiter.take_key(key)
    assert state is not None, "a limited key"
    return state


def take_address(limiter: Limiter, address: str) -> RateState:
    state = limiter.take_address(address)
    assert state is not None, "addresses are limited"
    return state


async def test_a_bucket_bursts_then_refills_continuously(autojump_clock: Any) -> None:
    limiter = Limiter(LimitsConfig(public_per_min=6))  # a token every 10 s
    states = [take(limiter) for _ in range(7)]
    assert [s.allowed for s in states] == [True] * 6 + [False]
    assert [s.remaining for s in states] == [5, 4, 3, 2, 1, 0, 0]
    assert [s.reset_s for s in states] == [10, 20, 30, 40, 50, 60, 60]
    assert states[-1].retry_after_s == 10
    assert states[-1].headers()["Retry-After"] == "10"
    await trio.sleep(5)
    half = take(limiter)
    assert (half.allowed, half.retry_after_s, half.reset_s) == (False, 5, 55)
    await trio.sleep(5)
    whole = take(limiter)
    assert (whole.allowed, whole.remaining, whole.reset_s) == (True, 0, 60)
    await trio.sleep(3600)  # full again, never more than full
    full = take(limiter)
    assert (full.remaining, full.reset_s) == (5, 10)
    assert "Retry-After" not in full.headers()
    assert limiter.statistics() == LimiterStats(
        rate_limited={"internal": 0, "public": 2, "admin": 0, "unkeyed": 0},
        streams_open=0,
        streams_refused=0,
        address_buckets=0,
    )


async def test_roles_keys_and_unlimited(autojump_clock: Any) -> None:
    limiter = Limiter(LimitsConfig(internal_per_min=50, public_per_min=10))
    assert limiter.take_key(ApiKey("a", Role.ADMIN)) is None  # admin_per_min = 0 by default
    assert limiter.take_key(ApiKey("o", Role.PUBLIC, 0)) is None  # a key's own 0: unlimited
    internal = take(limiter, ApiKey("i", Role.INTERNAL))
    own = take(limiter, ApiKey("k", Role.PUBLIC, 3))
    role = take(limiter, ApiKey("r", Role.PUBLIC))
    assert (internal.limit, own.limit, role.limit) == (50, 3, 10)
    defaults = Limiter()
    assert [defaults.limit_of(ApiKey("x", r)) for r in Role] == [5000, 1000, 0]


async def test_idle_address_buckets_are_forgotten(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = Limiter(LimitsConfig(unkeyed_per_min=2))
    for i in range(1000):
        limiter.take_address(f"10.0.{i // 256}.{i % 256}")
    assert limiter.statistics().address_buckets == 1000
    limiter.take_address("10.9.9.9")
    limiter.take_address("10.9.9.9")
    assert not take_address(limiter, "10.9.9.9").allowed  # each address has its own bucket
    await trio.sleep(chrono.api.limits.ADDRESS_IDLE_S)
    again = take_address(limiter, "10.9.9.9")  # a minute idle: full again, so forgotten
    assert (again.allowed, again.remaining) == (True, 1)
    assert limiter.statistics().address_buckets == 1
    monkeypatch.setattr(chrono.api.limits, "MAX_ADDRESS_BUCKETS", 10)
    for i in range(50):
        limiter.take_address(f"10.1.0.{i}")
    assert limiter.statistics().address_buckets == 10  # a flood of addresses stays bounded
    assert limiter.statistics().rate_limited["unkeyed"] == 1
    assert Limiter(LimitsConfig(unkeyed_per_min=0)).take_address("10.0.0.1") is None


# -- over HTTP ---------------------------------------------------------------------------------


async def test_a_burst_past_the_limit_is_refused_with_the_headers(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth()) as api:
            answers = [await api.http.get(LATEST, headers=bearer(TINY_KEY)) for _ in range(4)]
            later = await api.http.get(LATEST, headers=bearer(TINY_KEY))
            stats = api.service.api.limiter.statistics()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    heads = [rate_headers(a) for a in answers]
    assert [(limit, remaining) for limit, remaining, _ in heads] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    resets = [reset for _, _, reset in heads]
    assert resets[:3] == sorted(resets[:3])
    assert resets[0] >= 20
    assert resets[2] <= 60
    assert 1 <= assert_429(answers[3]) <= 20  # a token every 20 s
    assert "Retry-After" not in answers[0].headers
    assert later.status_code == 429  # a refusal takes no token, but gives none back either
    assert stats.rate_limited == {"internal": 0, "public": 2, "admin": 0, "unkeyed": 0}


async def test_after_retry_after_the_next_request_is_served(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_api(tmp_path, auth=auth()) as api:
            for _ in range(200):  # 60 in a burst, less what refills meanwhile
                refused = await api.http.get(LATEST, headers=bearer(SECOND_KEY))
                if refused.status_code != 200:
                    break
            retry_after = assert_429(refused)
            assert retry_after == 1  # one token a second
            assert rate_headers(refused)[0] == 60
            await trio.sleep(retry_after)
            served = await api.http.get(LATEST, headers=bearer(SECOND_KEY))
    assert served.status_code == 200
    assert rate_headers(served)[:2] == (60, 0)


async def test_a_refused_request_is_not_served(tmp_path: Path) -> None:
    def envelope(i: int) -> bytes:
        feed = {"symbol": "BTC/USD", "price": "100", "source": "edge_coinbase",
                "timestamp": time_text(utc_now()), "metadata": {"n": i}}  # fmt: skip
        body = {"worker_id": "edge-1", "timestamp": time_text(utc_now()), "feeds": [feed]}
        return json.dumps(body).encode()

    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth()) as api:
            headers = {**bearer(EDGE_KEY), "Content-Type": "application/json"}
            answers = [
                await api.http.post("/internal/ingest", content=envelope(i), headers=headers)
                for i in range(3)
            ]
            await wait_until(lambda: api.service.writer.feeds_written == 2)
            await trio.sleep(0.2)  # a third feed, were it let in, would be through by now
            assert api.service.fanout.feeds_in == 2
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert_429(answers[2])


async def test_role_defaults_key_overrides_and_unlimited_keys(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth(), limits={"public_per_min": 2}) as api:
            http = api.http
            plain = [await http.get(LATEST, headers=bearer(PUBLIC_KEY)) for _ in range(3)]
            tiny = await http.get(LATEST, headers=bearer(TINY_KEY))  # its own 3 beats the 2
            admin = await http.get(LATEST, headers=bearer(ADMIN_KEY))
            unlimited = [await http.get(LATEST, headers=bearer(OPEN_KEY)) for _ in range(5)]
            internal = await http.post("/internal/ingest", headers=bearer(INTERNAL_KEY))
            wrong_role = await http.get("/status", headers=bearer(TINY_KEY))
    assert [a.status_code for a in plain] == [200, 200, 429]
    assert [rate_headers(a)[:2] for a in plain] == [(2, 1), (2, 0), (2, 0)]
    assert rate_headers(tiny)[:2] == (3, 2)
    for answer in (admin, *unlimited):
        assert answer.status_code == 200
        assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit")]
    assert internal.status_code == 400  # no body: an error after the key was known ...
    assert rate_headers(internal)[:2] == (5000, 4999)  # ... carries the headers, default 5000
    assert wrong_role.status_code == 403
    assert rate_headers(wrong_role)[:2] == (3, 1)  # a 403 costs its token too


async def test_routes_without_a_key_are_limited_per_address(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, limits={"unkeyed_per_min": 3}) as api:
            http = api.http
            health = [await http.get("/health") for _ in range(4)]
            keyed = await http.get(LATEST, headers=bearer(PUBLIC_KEY))  # its key's own bucket
            no_key = await http.get(LATEST)  # a 401 would be charged to the address: 429
            unknown = await http.get("/no/such/route")
            stats = api.service.api.limiter.statistics()
    assert [a.status_code for a in health] == [200, 200, 200, 429]
    assert [rate_headers(a)[:2] for a in health] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    assert 1 <= assert_429(health[3]) <= 20
    assert keyed.status_code == 200
    assert rate_headers(keyed)[0] == 1000
    assert_429(no_key)
    assert_429(unknown)
    assert stats.rate_limited["unkeyed"] == 3
    assert stats.address_buckets == 1


async def test_a_wrong_key_is_charged_to_its_address(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, limits={"unkeyed_per_min": 2}) as api:
            answers = [await api.http.get(LATEST, headers=bearer("guess")) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]
    assert rate_headers(answers[1])[:2] == (2, 0)


# -- /stream slots ------------------------------------------------------------------------------


async def open_stream(url: str, stack: AsyncExitStack) -> ClientConnection:
    """A subscribed stream, kept open until the stack closes."""
    ws = await stack.enter_async_context(connect(url))
    await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC/USD"]}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


async def refused(url: str, first: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """A stream the server refuses: its error message and close code."""
    async with connect(url) as ws:
        if first is not None:
            await ws.send(json.dumps(first))
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    return error, info.value.rcvd.code


async def test_stream_connections_per_key_and_in_all(tmp_path: Path) -> None:
    limits = {"stream_per_key": 2, "stream_total": 3}
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth(), limits=limits) as api:
            base = str(api.http.base_url).replace("http://", "ws://") + "/stream"

            def clients() -> int:
                return api.service.hub.statistics().clients

            async with AsyncExitStack() as stack:
                await open_stream(f"{base}?key={PUBLIC_KEY}", stack)
                await open_stream(base + f"?key={PUBLIC_KEY}", stack)
                error, code = await refused(f"{base}?key={PUBLIC_KEY}")
                assert (error["error"]["code"], code) == ("RATE_LIMIT_EXCEEDED", 1013)
                assert "2 streams" in error["error"]["message"]
                by_message, code = await refused(base, {"action": "auth", "key": PUBLIC_KEY})
                assert (by_message["error"]["code"], code) == ("RATE_LIMIT_EXCEEDED", 1013)
                assert clients() == 2  # the refused were never counted
                last = await open_stream(f"{base}?key={OPEN_KEY}", stack)  # another key: fits
                error, code = await refused(f"{base}?key={SECOND_KEY}")  # but 3 in all
                assert (error["error"]["code"], code) == ("RATE_LIMIT_EXCEEDED", 1013)
                assert "3 streams" in error["error"]["message"]
                assert clients() == 3
                await last.aclose()
                await wait_until(lambda: api.service.api.limiter.statistics().streams_open == 2)
                await open_stream(f"{base}?key={SECOND_KEY}", stack)  # a slot is free again
                assert clients() == 3
                stats = api.service.api.limiter.statistics()
            await wait_until(lambda: clients() == 0)
            await wait_until(lambda: api.service.api.limiter.statistics().streams_open == 0)
    assert (stats.streams_open, stats.streams_refused) == (3, 3)


async def test_a_stream_takes_a_token_of_its_key(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth()) as api:
            base = str(api.http.base_url).replace("http://", "ws://") + "/stream"
            for _ in range(3):
                assert (await api.http.get(LATEST, headers=bearer(TINY_KEY))).status_code == 200
            error, code = await refused(f"{base}?key={TINY_KEY}")
            assert api.service.hub.statistics().clients == 0
    assert (error["error"]["code"], code) == ("RATE_LIMIT_EXCEEDED", 1013)
    assert "requests per minute" in error["error"]["message"]
