"""``/live`` and ``/ready`` against a running service fed by a Coinbase simulator: not ready, with
the reasons, while no collector has fresh data; ready once it has; still ready while the store
is down and the spool has room; not ready again once the data goes stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from chrono.testing.simulators import CoinbaseSimulator
from tests.dataapi import feed, running_api
from tests.stores import store_locked
from tests.waiting import wait_until


async def ready(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/ready")
    return response.status_code, response.json()


async def test_ready_follows_the_data(tmp_path: Path, nursery: trio.Nursery) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.05)
    sim.set_silent(True)
    await nursery.start(sim.serve)
    collector = {"exchange": "coinbase", "symbols": ["BTC/USD", "ETH/USD"], "url": sim.url,
                 "silence_timeout_s": 60}  # fmt: skip
    sections = {"collectors": [collector], "consensus": {"max_age_ms": 1500},
                "storage": {"url": "sqlite:///data/chrono.db"}}  # fmt: skip
    with trio.fail_after(60):
        async with running_api(tmp_path, **sections) as api:
            live = await api.http.get("/live")
            await sim.wait_subscribed()
            status, before = await ready(api.http)
            sim.set_silent(False)
            await wait_until(lambda: all(sim.markets[n].last for n in sim.markets), timeout_s=10)

            async def is_ready() -> bool:
                return (await ready(api.http))[0] == 200

            with trio.fail_after(10):
                while not await is_ready():
                    await trio.sleep(0.05)
            _, after = await ready(api.http)
            with store_locked(tmp_path / "data" / "chrono.db"):
                await wait_until(lambda: not api.service.writer.healthy, timeout_s=20)
                spooling = await ready(api.http)
            sim.set_silent(True)
            await trio.sleep(2)  # past max_age_ms
            stale = await ready(api.http)
    assert live.status_code == 200
    assert live.json()["status"] == "alive"
    assert status == 503
    assert before["status"] == "not_ready"
    assert before["failed"] == ["collectors", "symbols"]
    checks = {c["name"]: c for c in before["checks"]}
    assert checks["store"]["ok"] is True
    assert "BTC/USD" in checks["symbols"]["detail"]
    assert "coinbase" in checks["collectors"]["detail"]
    assert after["status"] == "ready"
    assert after["failed"] == []
    assert spooling[0] == 200
    assert "spooling" in {c["name"]: c for c in spooling[1]["checks"]}["store"]["detail"]
    assert stale[0] == 503
    assert stale[1]["failed"] == ["collectors", "symbols"]


async def test_a_node_without_collectors_is_ready_on_ingested_data(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus={"symbols": {"BTC/USD": {}}}) as api:
            status, before = await ready(api.http)
            await api.push([feed("coinbase", "100", age_s=0)])
            after_status, after = await ready(api.http)
    assert status == 503
    assert before["failed"] == ["symbols"]
    assert {c["name"]: c["detail"] for c in before["checks"]}["collectors"] == (
        "no collectors configured"
    )
    assert after_status == 200
    assert after["status"] == "ready"
