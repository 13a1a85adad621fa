"""PostgreSQL reads that must stay index lookups however many feeds a window holds, on a real
throwaway cluster: the plan, and the answer against one worked out in Python."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg

from chrono.model import PriceFeed
from chrono.store import PostgresStore
from chrono.store.pg_sql import LATEST_BY_SOURCE
from tests.feeds import T0, make_feed

SOURCES = ("binance", "coinbase", "kraken")


def busy_window() -> list[PriceFeed]:
    """Three sources on two symbols, one of them far busier, with ties at a source's newest
    time (the later written must win) and a source whose newest feed is before the window."""
    feeds = []
    for i in range(6_000):
        source = SOURCES[1] if i % 50 else SOURCES[(i // 50) % 3]
        symbol = "BTC/USD" if i % 2 else "ETH/USD"
        feeds.append(make_feed(i, symbol=symbol, source=source, price=f"{100 + i % 97}.5"))
    tie = make_feed(5_999, symbol="BTC/USD", source="coinbase", price="1.25")
    too_old = make_feed(5, symbol="BTC/USD", source="bitstamp")
    return [*feeds, tie, too_old]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def test_latest_by_source_probes_the_feed_key_and_answers_as_a_full_sort_would(
    pg_store: PostgresStore, pg_url: str
) -> None:
    feeds = busy_window()
    for start in range(0, len(feeds), 2_000):
        await pg_store.write(feeds[start : start + 2_000])
    since = T0 + timedelta(microseconds=100)
    found = await pg_store.latest_by_source(["BTC/USD", "ETH/USD"], since=since)

    expected: dict[tuple[str, str], PriceFeed] = {}
    for feed in feeds:  # in write order: at a tie in time, the later written wins
        if feed.timestamp < since:
            continue
        key = (feed.symbol, feed.source)
        if key not in expected or feed.timestamp >= expected[key].timestamp:
            expected[key] = feed
    assert [(f.symbol, f.source) for f in found] == sorted(expected)
    assert found == [expected[key] for key in sorted(expected)]
    assert expected["BTC/USD", "coinbase"].price == Decimal("1.25")
    assert "bitstamp" not in {source for _, source in expected}

    with psycopg.connect(pg_url) as conn:
        conn.execute("ANALYZE price_feeds")
        args = {"symbols": ["BTC/USD", "ETH/USD"], "since": since, "until": None}
        ((plan,),) = conn.execute(f"EXPLAIN (FORMAT JSON) {LATEST_BY_SOURCE}", args).fetchall()
    nodes = list(plan_nodes((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
    on_table = [n for n in nodes if n.get("Relation Name") == "price_feeds"]
    assert on_table, nodes
    for node in on_table:
        assert node["Node Type"] in ("Index Scan", "Index Only Scan"), node
        assert node["Index Name"] == "price_feeds_feed_key", node
