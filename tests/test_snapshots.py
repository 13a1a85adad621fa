"""Consensus snapshots through a store outage, and the API's answer while PostgreSQL is down: a
503 in the envelope for reads, the feeds spooled, and every snapshot due meanwhile written once
the store is back, equal to a recomputation as of its time."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import trio

from chrono.model import time_text, utc_now
from chrono.testing.postgres import PostgresCluster
from tests.dataapi import PUBLIC, feed, running_api
from tests.waiting import wait_until


async def test_snapshots_missed_in_an_outage_are_taken_when_the_store_is_back(
    tmp_path: Path, own_pg_cluster: PostgresCluster
) -> None:
    url = own_pg_cluster.create_database("snapshots")
    sections = {
        "storage": {
            "url": url,
            "retry_initial_s": 0.1,
            "retry_max_s": 0.5,
            "connect_timeout_s": 1,
        },
        "consensus": {"snapshot_interval_s": 1, "symbols": {"BTC/USD": {}}},
    }
    with trio.fail_after(60):
        async with running_api(tmp_path, **sections) as api:
            taker = api.service.snapshots
            await api.push([feed("coinbase", "100", age_s=0.5), feed("kraken", "102", age_s=0.5)])
            await wait_until(lambda: taker.written >= 1, timeout_s=10)
            own_pg_cluster.stop()
            down_at = utc_now()
            await api.push([feed("coinbase", "104", age_s=0), feed("kraken", "106", age_s=0)],
                           stored=False)  # fmt: skip
            await wait_until(lambda: taker.failures >= 2 and not api.service.writer.healthy,
                             timeout_s=20)  # fmt: skip
            span = {"symbol": "BTC/USD", "from": time_text(down_at - timedelta(minutes=1)),
                    "to": time_text(down_at + timedelta(minutes=1))}  # fmt: skip
            refused = await api.http.get("/prices/range", params=span, headers=PUBLIC)
            own_pg_cluster.start()
            back_at = utc_now()
            await wait_until(lambda: taker.last_at is not None and taker.last_at > back_at,
                             timeout_s=30)  # fmt: skip
            history = await api.get("/aggregates/history", symbol="BTC/USD", **{
                "from": time_text(down_at - timedelta(seconds=5)),
                "to": time_text(back_at)})  # fmt: skip
            checks = []
            for snapshot in history["data"]:
                again = await api.get(
                    "/aggregates/consensus",
                    symbols="BTC/USD",
                    timestamp=snapshot["timestamp"],
                    method="median",
                )
                checks.append((snapshot, again["data"][0]))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "DATABASE_ERROR"
    times = [h["timestamp"] for h in history["data"]]
    assert len(times) >= 3
    steps = {datetime.fromisoformat(b) - datetime.fromisoformat(a) for a, b in pairwise(times)}
    assert steps == {timedelta(seconds=1)}  # every second, none twice, the outage included
    assert [p["price"] for p in history["data"]][-1] == "105"  # the feeds spooled in the outage
    for snapshot, recomputed in checks:
        assert recomputed["inputs_digest"] == snapshot["inputs_digest"]
        assert recomputed["price"] == snapshot["price"]
