"""Five exchanges' simulators of BTC/USD into one service: the one that lies by 20 % is excluded
as an outlier and the consensus is the median of the other four, as each simulator last sent it;
Binance's BTCUSDT is converted at par and says so; a source that stops is excluded as stale once
past ``max_age_ms``; an FTSO client gets that value."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from chrono.exchanges import EXCHANGES
from chrono.testing.simulators import SIMULATORS, Simulator
from tests.dataapi import Api, running_api
from tests.waiting import wait_until

SOURCES = ("coinbase", "kraken", "bitstamp", "gemini", "binance")
LIAR = "gemini"
MAX_AGE_MS = 3000


def newest_sent(sim: Simulator) -> Decimal:
    return Decimal(sim.ticks[-1].price)


async def caught_up(api: Api, sims: dict[str, Simulator]) -> None:
    """Every simulator is silent: wait until Chrono holds the last price each one sent."""

    def done() -> bool:
        held = api.service.latest.by_source("BTC/USD")
        return all(
            name in held and held[name].price == newest_sent(sim) for name, sim in sims.items()
        )

    await wait_until(done, timeout_s=15)


def only_trading(sims: dict[str, Simulator], names: set[str]) -> None:
    for name, sim in sims.items():
        sim.set_silent(name not in names)


async def consensus(api: Api) -> dict[str, Any]:
    [answer] = (await api.get("/aggregates/consensus", symbols="BTC/USD"))["data"]
    return answer  # type: ignore[no-any-return]


async def test_five_exchanges_one_liar_one_stopped(tmp_path: Path, nursery: trio.Nursery) -> None:
    sims: dict[str, Simulator] = {
        name: SIMULATORS[name](
            symbols=EXCHANGES[name].symbol_map(["BTC/USD"]).natives(), tick_interval_s=0.05
        )
        for name in SOURCES
    }
    for sim in sims.values():
        await nursery.start(sim.serve)
    collectors = [
        {"exchange": n, "symbols": ["BTC/USD"], "url": s.endpoint} for n, s in sims.items()
    ]
    sections = {"collectors": collectors, "consensus": {"max_age_ms": MAX_AGE_MS},
                "ftso": {"enabled": True}}  # fmt: skip
    with trio.fail_after(60):
        async with running_api(tmp_path, **sections) as api:
            await wait_until(lambda: all(len(s.ticks) > 5 for s in sims.values()), timeout_s=20)
            sims[LIAR].reprice(1.2)
            await wait_until(lambda: len(sims[LIAR].ticks) > 20)
            only_trading(sims, set())
            await caught_up(api, sims)
            first = await consensus(api)
            ftso = (await api.http.post("/feed-values/7", json={
                "feeds": [{"category": 1, "name": "BTC/USD"}]})).json()  # fmt: skip
            sent = {name: newest_sent(sim) for name, sim in sims.items()}

            # kraken stops; the others go on, then fall silent again so the test can read them.
            only_trading(sims, set(SOURCES) - {"kraken"})
            await trio.sleep(MAX_AGE_MS / 1000 + 0.5)
            only_trading(sims, set())
            fresh = {n: s for n, s in sims.items() if n != "kraken"}
            await caught_up(api, fresh)
            second = await consensus(api)
            sent_later = {name: newest_sent(sim) for name, sim in fresh.items()}

    honest = sorted(p for name, p in sent.items() if name != LIAR)
    assert first["status"] == "ok"
    assert Decimal(first["price"]) == (honest[1] + honest[2]) / 2
    rows = {r["source"]: r for r in first["inputs"]}
    assert (rows[LIAR]["included"], rows[LIAR]["reason"]) == (False, "outlier")
    assert first["sources"] == sorted(n for n in SOURCES if n != LIAR)
    assert {n: Decimal(r["price"]) for n, r in rows.items()} == sent
    assert rows["binance"]["native_symbol"] == "BTCUSDT"
    assert rows["binance"]["quote"] == "USDT"
    assert rows["binance"]["conversion"]["basis"] == "par"  # no USDT/USD collector
    assert Decimal(str(ftso["data"][0]["value"])) == Decimal(first["price"])

    rows = {r["source"]: r for r in second["inputs"]}
    assert (rows["kraken"]["included"], rows["kraken"]["reason"]) == (False, "stale")
    assert rows["kraken"]["age_ms"] > MAX_AGE_MS
    still = sorted(p for name, p in sent_later.items() if name != LIAR)
    assert second["status"] == "ok"
    assert len(still) == 3
    assert Decimal(second["price"]) == still[1]
