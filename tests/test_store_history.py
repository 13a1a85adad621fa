"""Consensus snapshots and FTSO answers (migration 2) on SQLite and on PostgreSQL, through the
contract's ``target``/``store`` fixtures: bodies back byte for byte, prices digit for digit,
the first snapshot of a (symbol, time) kept, the last answer of a round's feed kept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import trio

from chrono.store import FtsoAnswer, Snapshot, Store
from tests.test_store_contract import TRICKY_PRICES, Target, at, store, target

__all__ = ["store", "target"]  # the fixtures, for pytest to find here

# Spacing, key order, number spelling, escapes and non-ASCII that a JSON re-encoding would
# change: the stores must hand back these bytes.
ODD_BODY = '{"z":1.50,  "a":[1e3, 0.10, -0], "s":"\\u00e9 é \\"q\\"", "a2":{}}'.encode()


def snapshot(seconds: float, price: str | None = "67234.56", **kw: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "symbol": "BTC/USD",
        "timestamp": at(seconds),
        "price": None if price is None else Decimal(price),
        "status": "ok" if price is not None else "no_quorum",
        "method": "median",
        "num_sources": 5,
        "inputs_digest": f"sha256:{seconds}",
        "body": b'{"price":"%s", "at":%f}' % ((price or "null").encode(), seconds),
    }
    return Snapshot(**{**fields, **kw})


def answer(name: str, value: str | None, *, category: int = 1, **kw: Any) -> FtsoAnswer:
    fields: dict[str, Any] = {
        "voting_round_id": 812_345,
        "category": category,
        "name": name,
        "value": None if value is None else Decimal(value),
        "answered_at": at(90.000001),
        "body": b'{"name": "%s"}' % name.encode(),
    }
    return FtsoAnswer(**{**fields, **kw})


async def test_snapshots_round_trip_byte_for_byte(store: Store, target: Target) -> None:
    written = [snapshot(i, p, symbol=f"S{i}/USD") for i, p in enumerate(TRICKY_PRICES)]
    written[0] = snapshot(0, TRICKY_PRICES[0], symbol="S0/USD", body=ODD_BODY)
    unpriced = snapshot(0, None, symbol="DOGE/USD", status="guarded", num_sources=0)
    assert await store.write_snapshots([*written, unpriced]) == len(written) + 1

    # As the plain driver sees the table ...
    rows = target.sql(
        "SELECT CAST(price AS TEXT), CAST(body AS TEXT) FROM aggregated_prices ORDER BY symbol"
    )
    assert rows[0] == (None, unpriced.body.decode())
    assert [r[0] for r in rows[1:]] == TRICKY_PRICES
    assert rows[1][1] == ODD_BODY.decode()
    # ... and as the store reads it back: every field, the body's very bytes.
    symbols = [s.symbol for s in written]
    assert await store.snapshots_at([*symbols, "DOGE/USD"], at(0)) == [written[0], unpriced]
    for s in written:
        assert await store.snapshots_between(s.symbol, at(-1), at(99), limit=10) == [s]
    back = (await store.snapshots_at(["S0/USD"], at(0)))[0]
    assert back.body == ODD_BODY
    assert back.price is not None
    assert str(back.price) == TRICKY_PRICES[0]  # zeros kept
    assert back.timestamp.utcoffset() == timedelta(0)
    assert store.statistics().snapshots_written == len(written) + 1


async def test_a_snapshot_is_written_once(store: Store, target: Target) -> None:
    first = snapshot(1, "100.10")
    assert await store.write_snapshots([first]) == 1
    assert await store.write_snapshots([first]) == 0  # a replayed batch
    rewritten = snapshot(1, "999", body=b'{"other":true}')
    assert await store.write_snapshots([rewritten, snapshot(2), snapshot(2)]) == 1
    assert await store.snapshots_between("BTC/USD", at(0), at(9), limit=10) == [first, snapshot(2)]
    assert await store.write_snapshots([]) == 0
    assert target.sql("SELECT COUNT(*) FROM aggregated_prices") == [(2,)]


async def test_a_body_that_is_not_json_writes_nothing(store: Store, target: Target) -> None:
    for bad in (b'{"a":', b"\xff{}", b"{} {}", b""):
        with pytest.raises(ValueError, match="UTF-8 JSON"):
            await store.write_snapshots([snapshot(1), snapshot(2, body=bad)])
        with pytest.raises(ValueError, match="UTF-8 JSON"):
            await store.record_ftso_round([answer("BTC/USD", "1", body=bad)])
    assert target.sql("SELECT COUNT(*) FROM aggregated_prices") == [(0,)]
    assert target.sql("SELECT COUNT(*) FROM ftso_rounds") == [(0,)]


async def test_snapshots_at_a_time_for_several_symbols(store: Store) -> None:
    btc, eth = snapshot(5, "1"), snapshot(5, "2", symbol="ETH/USD")
    await store.write_snapshots(
        [
            btc,
            eth,
            snapshot(6, "3"),
            snapshot(5.000001, "4", symbol="DOGE/USD"),  # a microsecond off: not at the time
        ]
    )
    found = await store.snapshots_at(["ETH/USD", "DOGE/USD", "BTC/USD"], at(5))
    assert found == [eth, btc]  # in the order asked, the missing one left out
    assert await store.snapshots_at(["DOGE/USD"], at(5)) == []
    assert await store.snapshots_at([], at(5)) == []


async def test_snapshots_between_is_half_open_and_limited(store: Store) -> None:
    series = [snapshot(s, f"{100 + s}") for s in range(10)]
    await store.write_snapshots([*reversed(series), snapshot(3, "7", symbol="ETH/USD")])
    got = await store.snapshots_between("BTC/USD", at(2), at(5), limit=100)
    assert got == series[2:5]
    assert await store.snapshots_between("BTC/USD", at(0), at(10), limit=3) == series[:3]
    assert await store.snapshots_between("BTC/USD", at(10), at(20), limit=3) == []
    assert await store.snapshots_between("ETH/USD", at(0), at(10), limit=3) == [
        snapshot(3, "7", symbol="ETH/USD")
    ]
    with pytest.raises(ValueError, match="limit"):
        await store.snapshots_between("BTC/USD", at(0), at(10), limit=0)


async def test_ftso_answers_round_trip_sorted(store: Store, target: Target) -> None:
    answers = [
        answer("XRP/USD", "0.512300", category=1),
        answer("BTC/USD", TRICKY_PRICES[-1], category=1),
        answer("eth/usd", "3000", category=1),  # lower case sorts after upper (code points)
        answer("ETH/USD", None, category=1, body=None),  # no value, no consensus
        answer("ADA/USD", "0.000000012345678901", category=2),
        answer("Ä/USD", "1.0", category=1),
    ]
    assert await store.record_ftso_round(answers) == len(answers)
    other = answer("BTC/USD", "1", voting_round_id=812_346)
    await store.record_ftso_round([other])

    got = await store.ftso_round(812_345)
    assert got == sorted(answers, key=lambda a: (a.category, a.name))
    assert [a.name for a in got] == ["BTC/USD", "ETH/USD", "XRP/USD", "eth/usd", "Ä/USD", "ADA/USD"]
    btc = got[0]
    assert btc.value is not None
    assert str(btc.value) == TRICKY_PRICES[-1]
    assert btc.body == b'{"name": "BTC/USD"}'
    assert btc.answered_at == at(90.000001)
    assert btc.answered_at.utcoffset() == timedelta(0)
    assert (got[1].value, got[1].body) == (None, None)
    assert await store.ftso_round(812_346) == [other]
    assert await store.ftso_round(1) == []
    assert target.sql("SELECT CAST(value AS TEXT) FROM ftso_rounds WHERE name = 'XRP/USD'") == [
        ("0.512300",)
    ]


async def test_a_later_ftso_answer_replaces_the_earlier(store: Store) -> None:
    await store.record_ftso_round([answer("BTC/USD", "100"), answer("ETH/USD", "10")])
    newer = answer("BTC/USD", "101.50", answered_at=at(95), body=ODD_BODY)
    assert await store.record_ftso_round([newer]) == 1
    # Within one batch too, the last answer of a key stands.
    last = answer("ETH/USD", None, answered_at=at(96), body=None)
    assert await store.record_ftso_round([answer("ETH/USD", "11"), last]) == 2
    assert await store.ftso_round(812_345) == [newer, last]
    assert store.statistics().ftso_answers_written == 5


async def test_history_writes_and_reads_open_the_store(target: Target) -> None:
    """Like ``write``, the history methods open a store nobody opened yet."""
    writer, reader = target.make(), target.make()
    with trio.fail_after(30):
        assert await writer.write_snapshots([snapshot(1)]) == 1
        assert await reader.snapshots_at(["BTC/USD"], at(1)) == [snapshot(1)]
        await writer.aclose()
        writer = target.make()
        assert await writer.record_ftso_round([answer("BTC/USD", "1")]) == 1
        assert await reader.ftso_round(812_345) == [answer("BTC/USD", "1")]
        await writer.aclose()
        await reader.aclose()
