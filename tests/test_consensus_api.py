"""``/aggregates/consensus``, ``/aggregates/history`` and the FTSO endpoints over real HTTP:
every exclusion reason, quorum, the guard, each method, stablecoins, recomputation as of a time
equal to the snapshot, and the FTSO shapes. Expected values are worked out here."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from chrono.model import time_text, utc_now
from chrono.store.candles import bucket_start
from tests.dataapi import ADMIN, INTERNAL, PUBLIC, feed, running_api
from tests.waiting import wait_until

HONEST = {"coinbase": "67200.10", "kraken": "67210.30", "bitstamp": "67190.20",
          "gemini": "67205.00"}  # fmt: skip


def rows_by_source(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["source"]: row for row in answer["inputs"]}


async def test_a_liar_is_an_outlier_and_the_median_is_the_others(tmp_path: Path) -> None:
    liar = str(Decimal(HONEST["coinbase"]) * Decimal("1.2"))
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            await api.push([feed(s, p, age_s=1) for s, p in HONEST.items()]
                           + [feed("binance_us", liar, age_s=1)])  # fmt: skip
            [answer] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
    honest = sorted(Decimal(p) for p in HONEST.values())
    assert answer["status"] == "ok"
    assert Decimal(answer["price"]) == (honest[1] + honest[2]) / 2 == Decimal("67202.55")
    assert answer["price"] == answer["median"] == "67202.55"
    assert answer["num_sources"] == 4
    assert answer["sources"] == sorted(HONEST)
    rows = rows_by_source(answer)
    assert (rows["binance_us"]["included"], rows["binance_us"]["reason"]) == (False, "outlier")
    assert all(rows[s]["included"] and rows[s]["reason"] is None for s in HONEST)
    assert Decimal(answer["min"]) == honest[0]
    assert Decimal(answer["max"]) == honest[-1]
    assert Decimal(answer["mean"]) == sum(honest) / 4
    mean = sum(honest) / 4
    variance = sum((p - mean) ** 2 for p in honest) / 4
    assert abs(Decimal(answer["std_dev"]) - variance.sqrt()) < Decimal("1e-20")
    spread = (honest[-1] - honest[0]) * 10000 / Decimal("67202.55")
    assert abs(Decimal(answer["spread_bps"]) - spread) < Decimal("1e-20")
    assert answer["method"] == "median"
    assert answer["params"]["min_sources"] == 2
    assert len(answer["inputs_digest"]) == 64
    assert answer["snapshot"] is False


async def test_stale_out_of_bounds_and_quorum(tmp_path: Path) -> None:
    consensus = {"max_age_ms": 10_000, "symbols": {"ETH/USD": {"min": 1000, "max": 5000,
                                                              "min_sources": 3}}}  # fmt: skip
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus=consensus) as api:
            await api.push([
                feed("coinbase", "100", age_s=1), feed("kraken", "101", age_s=30),  # stale
                feed("coinbase", "3000", symbol="ETH/USD", age_s=1),
                feed("kraken", "3001", symbol="ETH/USD", age_s=1),
                feed("bitstamp", "30000", symbol="ETH/USD", age_s=1),  # out of bounds
            ])  # fmt: skip
            body = await api.get("/aggregates/consensus", symbols="BTC/USD,ETH/USD,SOL/USD")
            wider = await api.get("/aggregates/consensus", symbols="BTC/USD", max_age_ms=60_000)
    btc, eth, sol = body["data"]
    assert (btc["status"], btc["price"], btc["num_sources"]) == ("insufficient_sources", None, 1)
    assert btc["median"] == "100"  # statistics still describe what was usable
    assert rows_by_source(btc)["kraken"]["reason"] == "stale"
    assert rows_by_source(btc)["kraken"]["age_ms"] >= 30_000
    assert (eth["status"], eth["price"]) == ("insufficient_sources", None)  # needs 3
    assert rows_by_source(eth)["bitstamp"]["reason"] == "out_of_bounds"
    assert eth["params"]["bounds"] == {"low": "1000", "high": "5000"}
    assert (sol["symbol"], sol["status"], sol["inputs"], sol["median"]) == (
        "SOL/USD", "insufficient_sources", [], None)  # fmt: skip
    [btc_wide] = wider["data"]
    assert (btc_wide["status"], btc_wide["price"]) == ("ok", "100.5")


async def test_methods(tmp_path: Path) -> None:
    inputs = [("coinbase", "100", "10", 0.0), ("kraken", "102", "30", 14.0),
              ("bitstamp", "101", "1", 28.0)]  # fmt: skip
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus={"half_life_ms": 14_000}) as api:
            now = utc_now()
            await api.push([feed(s, p, volume=v, at=now - timedelta(seconds=a))
                            for s, p, v, a in inputs])  # fmt: skip
            answers = {}
            for m in ("median", "volume_weighted", "time_decay"):
                body = await api.get("/aggregates/consensus", symbols="BTC/USD", method=m)
                answers[m] = body["data"][0]
    assert answers["median"]["price"] == "101"
    # Volume in USD: 100*10=1000, 101*1=101, 102*30=3060 of 4161: half (2080.5) is reached at 102.
    assert answers["volume_weighted"]["price"] == "102"
    weights = {r["source"]: Decimal(r["weight"]) for r in answers["volume_weighted"]["inputs"]}
    assert weights == {"coinbase": 1000, "kraken": 3060, "bitstamp": 101}
    # Time decay, half-life 14 s: weights 1, 1/2, 1/4 by age (up to the request's own ms).
    decay = {
        r["source"]: (r["age_ms"], Decimal(r["weight"])) for r in answers["time_decay"]["inputs"]
    }
    for age_ms, weight in decay.values():
        assert math.isclose(float(weight), 2 ** (-age_ms / 14_000), rel_tol=1e-12)
    assert decay["coinbase"][1] > decay["kraken"][1] > decay["bitstamp"][1]
    # 100 weighs ~1 of ~1.75, more than half on its own: the weighted median is 100.
    assert answers["time_decay"]["price"] == "100"
    assert answers["time_decay"]["params"]["half_life_ms"] == 14_000


async def test_max_deviation_and_identical_prices(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus={"max_deviation_bps": 50}) as api:
            await api.push([feed("coinbase", "100", age_s=1), feed("kraken", "100", age_s=1),
                            feed("bitstamp", "100", age_s=1), feed("gemini", "100.6", age_s=1),
                            feed("coinbase", "5", symbol="ETH/USD", age_s=1),
                            feed("kraken", "5", symbol="ETH/USD", age_s=1)])  # fmt: skip
            btc, eth = (await api.get("/aggregates/consensus", symbols="BTC/USD,ETH/USD"))["data"]
    assert rows_by_source(btc)["gemini"]["reason"] == "outlier"  # 60 bps > 50
    assert (btc["price"], btc["num_sources"]) == ("100", 3)
    assert (eth["price"], eth["num_sources"], eth["mad"]) == ("5", 2, "0")  # none excluded


async def test_stablecoin_inputs_are_converted_and_a_depeg_is_excluded(tmp_path: Path) -> None:
    def usdt(price: str, source: str) -> Any:  # Binance's BTCUSDT collected as BTC/USD
        return feed(source, price, age_s=1, quote="USDT")

    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            await api.push([feed("coinbase", "100", age_s=1), feed("kraken", "101", age_s=1),
                            usdt("100.5", "binance")])  # fmt: skip
            [par] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
            await api.push([feed("coinbase", "0.999", symbol="USDT/USD", age_s=1),
                            feed("kraken", "0.998", symbol="USDT/USD", age_s=1)])  # fmt: skip
            [live] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
            then = time_text(utc_now())
            [past] = (await api.get("/aggregates/consensus", symbols="BTC/USD", timestamp=then))[
                "data"
            ]
            await api.push([feed("coinbase", "0.97", symbol="USDT/USD", age_s=0.5),
                            feed("kraken", "0.97", symbol="USDT/USD", age_s=0.5)])  # fmt: skip
            [depeg] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
    row = rows_by_source(par)["binance"]
    assert row["quote"] == "USDT"
    assert row["included"]
    assert row["conversion"] == {"from_quote": "USDT", "to_quote": "USD", "rate": "1",
                                 "basis": "par"}  # fmt: skip
    assert par["price"] == "100.5"
    row = rows_by_source(live)["binance"]
    assert row["conversion"]["basis"] == "consensus"
    assert row["conversion"]["rate"] == "0.9985"
    assert Decimal(row["value"]) == Decimal("100.5") * Decimal("0.9985")
    assert Decimal(live["price"]) == Decimal(row["value"])  # the middle of three
    assert rows_by_source(past)["binance"]["conversion"] == row["conversion"]  # from the store
    assert past["price"] == live["price"]
    row = rows_by_source(depeg)["binance"]
    assert (row["included"], row["reason"], row["conversion"]["rate"]) == (False, "depeg", "0.97")
    assert depeg["price"] == "100.5"  # coinbase and kraken


async def test_the_guard_withholds_a_jump(tmp_path: Path) -> None:
    consensus = {"guard_bps": 500, "guard_window_s": 60}
    with trio.fail_after(20):
        async with running_api(tmp_path, consensus=consensus) as api:
            await api.push([feed("coinbase", "100", age_s=1), feed("kraken", "100.2", age_s=1)])
            [first] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
            await trio.sleep(1.1)  # the guard samples at most once a second
            await api.push([feed("coinbase", "120", age_s=0.5), feed("kraken", "120.2", age_s=0.5)])
            [jump] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
            await trio.sleep(1.1)
            await api.push([feed("coinbase", "100.4", age_s=0.2)])
            [back] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
    assert (first["status"], first["price"]) == ("ok", "100.1")
    assert (jump["status"], jump["price"]) == ("guarded", None)
    assert jump["median"] == "120.1"
    assert jump["params"]["guard_bps"] == "500"
    # kraken's 120.2 and coinbase's 100.4: 110.3, within 5 % of the window's mean (110.1)
    assert (back["status"], back["price"]) == ("ok", "110.3")


async def test_as_of_a_time_is_deterministic_and_equals_the_snapshot(tmp_path: Path) -> None:
    consensus = {"snapshot_interval_s": 1, "symbols": {"BTC/USD": {}}}
    with trio.fail_after(30):
        async with running_api(tmp_path, consensus=consensus) as api:
            taker = api.service.snapshots
            await api.push([feed("coinbase", "100", age_s=0.2), feed("kraken", "102", age_s=0.2),
                            feed("bitstamp", "101", age_s=0.2)])  # fmt: skip
            pushed = utc_now()
            await wait_until(lambda: taker.last_at is not None and taker.last_at > pushed,
                             timeout_s=10)  # fmt: skip
            assert taker.last_at is not None
            at = time_text(taker.last_at)
            [snap] = (await api.get("/aggregates/consensus", symbols="BTC/USD", timestamp=at))[
                "data"]  # fmt: skip
            again = [(await api.get("/aggregates/consensus", symbols="BTC/USD", timestamp=at,
                                    method="median"))["data"][0] for _ in range(2)]  # fmt: skip
            history = await api.get(
                "/aggregates/history",
                symbol="BTC/USD",
                **{"from": time_text(utc_now() - timedelta(minutes=1)), "to": time_text(utc_now())},
            )
            old = (await api.get("/aggregates/consensus", symbols="BTC/USD",
                                 timestamp="2020-01-01T00:00:00Z"))["data"][0]  # fmt: skip
            future = await api.http.get(
                "/aggregates/consensus",
                headers=PUBLIC,
                params={
                    "symbols": "BTC/USD",
                    "timestamp": time_text(utc_now() + timedelta(hours=1)),
                },
            )
    assert snap["snapshot"] is True
    assert snap["timestamp"] == at
    assert taker.last_at == bucket_start(taker.last_at, 1)  # on the UTC epoch's grid
    assert snap["status"] == "ok"
    assert snap["price"] == "101"
    assert again[0] == again[1]
    assert again[0]["snapshot"] is False
    assert {k: v for k, v in again[0].items() if k != "snapshot"} == {
        k: v for k, v in snap.items() if k != "snapshot"}  # fmt: skip
    assert snap["inputs_digest"] == again[0]["inputs_digest"]
    assert at in [h["timestamp"] for h in history["data"]]
    assert (old["status"], old["inputs"], old["price"]) == ("insufficient_sources", [], None)
    assert future.status_code == 400


async def test_consensus_validation_and_keys(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            get = api.http.get
            assert (await get("/aggregates/consensus?symbols=BTC/USD")).status_code == 401
            assert (await get("/aggregates/consensus?symbols=BTC/USD",
                              headers=INTERNAL)).status_code == 403  # fmt: skip
            admin = await get("/aggregates/consensus?symbols=BTC/USD", headers=ADMIN)
            assert admin.status_code == 200
            codes = []
            for bad in (
                "",
                "?symbols=BTCUSD",
                "?symbols=BTC/USD&method=mean",
                "?symbols=BTC/USD&max_age_ms=0",
                "?symbols=BTC/USD&max_age_ms=x",
                "?symbols=BTC/USD&timestamp=yesterday",
                "?symbols=BTC/USD&k=1",
            ):
                response = await get(f"/aggregates/consensus{bad}", headers=PUBLIC)
                codes.append((response.status_code, response.json()["error"]["code"]))
    assert codes == [(400, "VALIDATION_ERROR")] * 7


async def test_ftso_feed_values(tmp_path: Path) -> None:
    request = {"feeds": [{"category": 1, "name": "BTC/USD"}, {"category": 1, "name": "XYZ/USD"},
                         {"category": 1, "name": "bad name"}]}  # fmt: skip
    with trio.fail_after(20):
        async with running_api(tmp_path, ftso={"enabled": True}) as api:
            await api.push([feed("coinbase", "67234.5600", age_s=1),
                            feed("kraken", "67234.5800", age_s=1)])  # fmt: skip
            voting = await api.http.post("/feed-values/123456", json=request)
            current = await api.http.post("/feed-values/", json=request)
            recorded = await api.http.get("/feed-values/123456")
            missing = await api.http.get("/feed-values/1")
            bad = await api.http.post("/feed-values/5", json={"feeds": []})
            not_json = await api.http.post("/feed-values/5", content=b"{")
    assert voting.status_code == 200
    assert voting.content.startswith(b'{"votingRoundId":123456,"data":[')
    assert b'"value":67234.5700}' in voting.content  # a JSON number, every digit
    body = voting.json()
    assert body["data"] == [
        {"feed": {"category": 1, "name": "BTC/USD"}, "value": 67234.57},
        {"feed": {"category": 1, "name": "XYZ/USD"}, "value": None},
        {"feed": {"category": 1, "name": "bad name"}, "value": None},
    ]
    assert current.json() == {"data": body["data"]}
    rows = recorded.json()["data"]
    assert [(r["feed"]["name"], r["value"]) for r in rows] == [
        ("BTC/USD", "67234.5700"), ("XYZ/USD", None), ("bad name", None)]  # fmt: skip
    assert rows[0]["consensus"]["sources"] == ["coinbase", "kraken"]
    assert missing.status_code == 404
    assert bad.status_code == 400
    assert not_json.status_code == 400


async def test_ftso_is_off_by_default_and_may_need_a_key(tmp_path: Path) -> None:
    request = {"feeds": [{"category": 1, "name": "BTC/USD"}]}
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            off = await api.http.post("/feed-values/1", json=request)
        async with running_api(tmp_path, ftso={"enabled": True, "require_key": True}) as api:
            no_key = await api.http.post("/feed-values/1", json=request)
            keyed = await api.http.post("/feed-values/1", json=request, headers=PUBLIC)
    assert off.status_code == 404
    assert no_key.status_code == 401
    assert keyed.status_code == 200
    assert keyed.json()["data"][0]["value"] is None


async def test_after_a_restart_every_fresh_source_counts(tmp_path: Path) -> None:
    """Memory is warmed from the store: one source ticking first does not leave the others out."""
    consensus = {"symbols": {"BTC/USD": {}}, "snapshot_interval_s": 0}
    with trio.fail_after(30):
        async with running_api(tmp_path, consensus=consensus) as api:
            await api.push([feed("coinbase", "100", age_s=2), feed("kraken", "102", age_s=2)])
        async with running_api(tmp_path, consensus=consensus) as api:
            await api.push([feed("coinbase", "101", age_s=0)])
            [answer] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
    assert (answer["status"], answer["price"], answer["sources"]) == (
        "ok", "101.5", ["coinbase", "kraken"])  # fmt: skip
