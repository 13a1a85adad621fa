"""``/prices/latest`` (median of fresh sources, one source, missing symbols) and ``/prices/range``
(raw pages, candles against an independent computation, the forming candle, validation), over
real HTTP against a running service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from chrono.model import time_text, utc_now
from tests.dataapi import ADMIN, INTERNAL, PUBLIC, feed, running_api

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return body["error"]  # type: ignore[no-any-return]


async def test_latest_is_the_median_of_fresh_sources(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus={"max_age_ms": 60_000}) as api:
            await api.push([
                feed("coinbase", "100.10", age_s=1),
                feed("kraken", "100.30", age_s=2),
                feed("bitstamp", "100.20", age_s=3),
                feed("gemini", "150", age_s=120),  # stale: not in the median
                feed("kraken", "7.5", symbol="ETH/USD", age_s=1),
            ])  # fmt: skip
            body = await api.get("/prices/latest", symbols="BTC/USD,eth/usd,DOGE/USD")
            one = await api.get("/prices/latest", symbols="BTC/USD", source="gemini")
            none = await api.get("/prices/latest", symbols="DOGE/USD")
    btc, eth = body["data"]
    assert btc["source"] == "aggregated"
    assert btc["price"] == "100.20"
    assert btc["num_sources"] == 3
    assert btc["sources"] == ["bitstamp", "coinbase", "kraken"]
    assert 1000 <= btc["staleness_ms"] < 5000  # the newest input's age
    assert btc["stale"] is False
    assert (eth["symbol"], eth["source"], eth["price"], eth["num_sources"]) == (
        "ETH/USD", "kraken", "7.5", 1)  # fmt: skip
    assert body["missing"] == ["DOGE/USD"]
    [gemini] = one["data"]
    assert (gemini["source"], gemini["price"], gemini["stale"]) == ("gemini", "150", True)
    assert gemini["staleness_ms"] >= 120_000
    assert none["data"] == []
    assert none["missing"] == ["DOGE/USD"]


async def test_latest_of_stale_sources_says_so(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus={"max_age_ms": 1000}) as api:
            await api.push([feed("coinbase", "99", age_s=30), feed("kraken", "98", age_s=40)])
            [item] = (await api.get("/prices/latest", symbols="BTC/USD"))["data"]
    assert (item["price"], item["source"], item["stale"]) == ("99", "coinbase", True)


async def test_latest_after_a_restart_reads_the_store(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_api(tmp_path) as api:
            await api.push([feed("coinbase", "100", age_s=1), feed("kraken", "102", age_s=1)])
        async with running_api(tmp_path) as api:  # a new process: nothing in memory
            body = await api.get("/prices/latest", symbols="BTC/USD")
    assert body["cached"] is False
    [item] = body["data"]
    assert (item["price"], item["num_sources"]) == ("101", 2)


async def test_latest_keys_and_validation(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            get = api.http.get
            error_of(await get("/prices/latest?symbols=BTC/USD"), 401)
            error_of(await get("/prices/latest?symbols=BTC/USD", headers=INTERNAL), 403)
            assert (await get("/prices/latest?symbols=BTC/USD", headers=ADMIN)).status_code == 200
            ranged = (
                "/prices/range?symbol=BTC/USD&from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z"
            )
            assert (await get(ranged, headers=ADMIN)).status_code == 200
            error_of(await get(ranged), 401)
            error_of(await get(ranged, headers=INTERNAL), 403)
            for bad in ("", "?symbols=", "?symbols=BTCUSD", "?symbol=BTC/USD",
                        "?symbols=BTC/USD&symbols=ETH/USD",
                        "?symbols=" + ",".join(f"C{i}/USD" for i in range(101))):  # fmt: skip
                error = error_of(await get(f"/prices/latest{bad}", headers=PUBLIC), 400)
                assert error["code"] == "VALIDATION_ERROR", bad
            unknown = error_of(await get("/prices/latest?symbol=BTC/USD", headers=PUBLIC), 400)
    assert unknown["details"]["parameter"] == "symbol"


def candles_by_hand(rows: list[tuple[datetime, Decimal]], width_s: int) -> list[dict[str, Any]]:
    """OHLC per epoch-aligned bucket, written independently of chrono.store.candles."""
    buckets: dict[int, list[Decimal]] = {}
    for at, price in sorted(rows, key=lambda r: r[0]):
        buckets.setdefault(int(at.timestamp()) // width_s * width_s, []).append(price)
    return [
        {
            "timestamp": time_text(datetime.fromtimestamp(start, UTC)),
            "open": str(prices[0]),
            "high": str(max(prices)),
            "low": str(min(prices)),
            "close": str(prices[-1]),
            "num_feeds": len(prices),
        }
        for start, prices in sorted(buckets.items())
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest) -> dict[str, str]:
    """The store the API reads: both kinds answer the same."""
    if request.param == "sqlite":
        return {"url": "sqlite:///chrono.db"}
    return {"url": request.getfixturevalue("pg_url")}


async def test_range_raw_pages_and_candles(tmp_path: Path, storage: dict[str, str]) -> None:
    rows = [(T0 + timedelta(seconds=7 * i), Decimal(f"{100 + (i * 37) % 11}.{i:02d}"))
            for i in range(60)]  # fmt: skip
    later = (timedelta(minutes=20), timedelta(minutes=47), timedelta(hours=3), timedelta(hours=26))
    rows += [(T0 + gap, Decimal(f"9{i}.5")) for i, gap in enumerate(later)]  # other buckets
    span = {"symbol": "BTC/USD", "from": time_text(T0), "to": time_text(T0 + timedelta(days=2))}
    with trio.fail_after(30):
        async with running_api(tmp_path, storage=storage) as api:
            await api.push([feed("coinbase", str(p), at=at) for at, p in rows])
            await api.push([feed("kraken", "1", at=T0 + timedelta(seconds=1))])
            pages, cursor = [], None
            while True:
                extra = {"cursor": cursor} if cursor else {}
                page = await api.get("/prices/range", **span, source="coinbase", limit=25, **extra)
                pages.append(page)
                cursor = page["next"]
                if cursor is None:
                    break
            candles = {w: await api.get("/prices/range", **span, source="coinbase", interval=w)
                       for w in ("1m", "5m", "15m", "1h", "1d")}  # fmt: skip
            both = await api.get("/prices/range", **span, interval="1h")
            paged = await api.get("/prices/range", **span, source="coinbase", interval="1m",
                                  limit=3)  # fmt: skip
            rest = await api.get("/prices/range", **span, source="coinbase", interval="1m",
                                 limit=1000, cursor=paged["next"])  # fmt: skip
    assert [p["count"] for p in pages] == [25, 25, 14]
    got = [(r["timestamp"], r["price"]) for p in pages for r in p["data"]]
    assert got == [(time_text(at), str(p)) for at, p in rows]
    assert all(p["interval"] == "raw" for p in pages)
    for width, seconds in (("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86_400)):
        answer = candles[width]
        assert answer["interval"] == width
        assert answer["next"] is None
        trimmed = [{k: c[k] for k in ("timestamp", "open", "high", "low", "close", "num_feeds")}
                   for c in answer["data"]]  # fmt: skip
        assert trimmed == candles_by_hand(rows, seconds), width
        assert all(c["closed"] for c in answer["data"])  # long past
    assert both["data"][0]["num_feeds"] == 63  # the first hour: 60 + 2 + kraken's
    assert both["data"][0]["low"] == "1"
    assert paged["count"] == 3
    assert paged["next"]
    assert [c["timestamp"] for c in paged["data"] + rest["data"]] == [
        c["timestamp"] for c in candles["1m"]["data"]]  # fmt: skip


async def test_the_forming_candle_is_not_closed(tmp_path: Path, storage: dict[str, str]) -> None:
    now = utc_now()
    soon = now + timedelta(seconds=61)  # a minute that cannot have ended by the request
    with trio.fail_after(20):
        async with running_api(tmp_path, storage=storage) as api:
            await api.push([feed("coinbase", "1", at=now - timedelta(minutes=3)),
                            feed("coinbase", "2", at=soon)])  # fmt: skip
            body = await api.get("/prices/range", symbol="BTC/USD",
                                 **{"from": time_text(now - timedelta(minutes=10)),
                                    "to": time_text(now + timedelta(minutes=3))},
                                 interval="1m")  # fmt: skip
    assert [c["closed"] for c in body["data"]] == [True, False]


async def test_range_validation_and_future(tmp_path: Path) -> None:
    now = utc_now()

    def span(start: datetime, end: datetime, **more: Any) -> dict[str, Any]:
        return {"symbol": "BTC/USD", "from": time_text(start), "to": time_text(end), **more}

    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            future = await api.get("/prices/range", **span(now + timedelta(days=1),
                                                           now + timedelta(days=2)))  # fmt: skip
            old = await api.get("/prices/range", **span(T0 - timedelta(days=9),
                                                        T0 - timedelta(days=8)))  # fmt: skip
            bad = [
                span(T0, T0),  # empty
                span(T0, T0 - timedelta(seconds=1)),
                span(T0, T0 + timedelta(days=91)),  # raw over 90 days
                span(T0, T0 + timedelta(days=800), interval="1d"),  # candles over 2 years
                span(T0, T0 + timedelta(days=1), interval="2m"),
                span(T0, T0 + timedelta(days=1), limit=0),
                span(T0, T0 + timedelta(days=1), limit=10_001),
                span(T0, T0 + timedelta(days=1), cursor="garbage!"),
                span(T0, T0 + timedelta(days=1), extra="1"),
                {"symbol": "BTC/USD", "from": "2026-11-20T12:00:00", "to": time_text(T0)},
                {"symbol": "BTC/USD,ETH/USD", "from": time_text(T0), "to": time_text(now)},
                {"from": time_text(T0), "to": time_text(now)},
            ]
            errors = []
            for params in bad:
                response = await api.http.get("/prices/range", params=params, headers=PUBLIC)
                errors.append(error_of(response, 400)["code"])
            long_ok = await api.get("/prices/range", **span(T0, T0 + timedelta(days=700),
                                                            interval="1d"))  # fmt: skip
            await api.push([feed("coinbase", str(100 + i), at=T0 + timedelta(seconds=i))
                            for i in range(5)])  # fmt: skip
            first = await api.get("/prices/range", **span(T0, T0 + timedelta(minutes=1), limit=2))
            other = await api.http.get("/prices/range", headers=PUBLIC, params=span(
                T0, T0 + timedelta(minutes=1), limit=2, source="kraken",
                cursor=first["next"]))  # fmt: skip
    assert future["data"] == []
    assert future["count"] == 0
    assert future["next"] is None
    assert old["data"] == []
    assert errors == ["VALIDATION_ERROR"] * len(bad)
    assert long_ok["data"] == []
    assert "another query" in error_of(other, 400)["message"]


async def test_range_interleaves_sources_in_time_order(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            await api.push([feed(src, str(10 + i), at=T0 + timedelta(seconds=9 - i))
                            for i, src in enumerate(["kraken", "coinbase"] * 5)])  # fmt: skip
            body = await api.get("/prices/range", symbol="BTC/USD", **{
                "from": time_text(T0), "to": time_text(T0 + timedelta(minutes=1))})  # fmt: skip
    assert [(r["source"], r["price"]) for r in body["data"]] == [
        ("coinbase" if i % 2 else "kraken", str(10 + i)) for i in reversed(range(10))]  # fmt: skip
