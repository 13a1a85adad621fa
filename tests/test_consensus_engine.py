"""The consensus engine and the deviation guard: pure computation, every expected value worked
out here (by hand or with the standard library), never with the engine's own helpers."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext

import msgspec
import pytest

from chrono.consensus import (
    DEFAULT_STABLECOINS,
    Consensus,
    Conversion,
    Guard,
    Input,
    Params,
    Rate,
    compute,
    inputs_digest,
    to_json,
)
from chrono.model import Bounds

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
D = Decimal


def feed(
    source: str,
    price: str,
    *,
    age_ms: int = 1_000,
    quote: str = "USD",
    volume: str | None = None,
    native_symbol: str | None = None,
) -> Input:
    return Input(
        source=source,
        price=D(price),
        timestamp=AT - timedelta(milliseconds=age_ms),
        quote=quote,
        native_symbol=native_symbol,
        volume=None if volume is None else D(volume),
    )


def feeds(*prices: str, age_ms: int = 1_000) -> list[Input]:
    """One input per price, from sources s0, s1, ..."""
    return [feed(f"s{index}", price, age_ms=age_ms) for index, price in enumerate(prices)]


def reasons(consensus: Consensus) -> dict[str, str | None]:
    return {row.source: row.reason for row in consensus.inputs}


def percentile(values: Sequence[Decimal], q: Decimal) -> Decimal:
    """numpy's "linear": position (n - 1) q between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# Exclusion


def test_a_liar_twenty_percent_off_is_an_outlier_and_the_rest_give_the_median() -> None:
    inputs = [
        feed("binance", "67000"),
        feed("coinbase", "67010"),
        feed("kraken", "67030"),
        feed("okx", "67060"),
        feed("liar", "80400"),  # +20 %
    ]
    result = compute("BTC/USD", inputs, Params(), at=AT)
    assert result.status == "ok"
    assert reasons(result) == {
        "binance": None,
        "coinbase": None,
        "kraken": None,
        "okx": None,
        "liar": "outlier",
    }
    assert result.price == (D("67010") + D("67030")) / 2 == D("67020")
    assert result.price == statistics.median([D("67000"), D("67010"), D("67030"), D("67060")])
    assert result.num_sources == 4
    assert result.sources == ["binance", "coinbase", "kraken", "okx"]
    assert [row.source for row in result.inputs] == ["binance", "coinbase", "kraken", "liar", "okx"]
    assert all(row.weight is None for row in result.inputs)  # median weighs nothing


def test_identical_prices_exclude_nobody_thanks_to_the_mad_floor() -> None:
    result = compute("BTC/USD", feeds("100", "100", "100"), Params(), at=AT)
    assert result.status == "ok"
    assert result.price == D(100)
    assert set(reasons(result).values()) == {None}
    assert result.mad == 0
    assert result.std_dev == 0
    # MAD 0, floored at 10 bps of 100 = 0.1: 5 x 0.1 = 0.5 keeps 100.3; without the floor it is out
    near = feeds("100", "100", "100", "100.3")
    assert compute("BTC/USD", near, Params(), at=AT).num_sources == 4
    unfloored = compute("BTC/USD", near, Params(mad_floor_bps=D(0)), at=AT)
    assert reasons(unfloored)["s3"] == "outlier"


def test_stale_is_strictly_older_than_max_age_and_future_inputs_have_age_zero() -> None:
    inputs = [
        feed("old", "100", age_ms=300_001),
        feed("edge", "100", age_ms=300_000),
        feed("fresh", "100", age_ms=0),
        feed("future", "100", age_ms=-5_000),
        feed("old_and_out", "5", age_ms=400_000),  # stale comes first
    ]
    params = Params(bounds=Bounds(D(50), None))
    result = compute("BTC/USD", inputs, params, at=AT)
    assert reasons(result) == {
        "old": "stale",
        "edge": None,
        "fresh": None,
        "future": None,
        "old_and_out": "stale",
    }
    ages = {row.source: row.age_ms for row in result.inputs}
    assert ages == {
        "old": 300_001,
        "edge": 300_000,
        "fresh": 0,
        "future": 0,
        "old_and_out": 400_000,
    }
    assert result.sources == ["edge", "fresh", "future"]


def test_bounds_are_inclusive_on_the_converted_value() -> None:
    inputs = [
        feed("low_edge", "60000"),
        feed("high_edge", "70000"),
        feed("below", "59999.99"),
        feed("above", "70000.01"),
        feed("usdt", "70050", quote="USDT"),  # 70050 x 0.999 = 69979.95: in bounds
    ]
    rates = {"USDT": Rate(quote="USDT", rate=D("0.999"), basis="consensus")}
    params = Params(bounds=Bounds(D(60000), D(70000)), outlier_k=D(1000))
    result = compute("BTC/USD", inputs, params, at=AT, rates=rates)
    assert reasons(result) == {
        "low_edge": None,
        "high_edge": None,
        "below": "out_of_bounds",
        "above": "out_of_bounds",
        "usdt": None,
    }
    only_low = compute("BTC/USD", inputs, Params(bounds=Bounds(D(60000), None)), at=AT, rates=rates)
    assert reasons(only_low)["below"] == "out_of_bounds"
    assert reasons(only_low)["above"] is None


def test_depeg_excludes_and_a_close_rate_converts_exactly() -> None:
    inputs = [feed("kraken", "67000.5"), feed("binance", "67000.50", quote="USDT")]
    depegged = {"USDT": Rate(quote="USDT", rate=D("0.97"), basis="consensus")}
    result = compute("BTC/USD", inputs, Params(min_sources=1), at=AT, rates=depegged)
    row = result.inputs[0]
    assert (row.source, row.reason, row.included) == ("binance", "depeg", False)
    assert row.value == D("64990.485")  # 67000.5 x 0.97, still shown
    assert row.conversion == Conversion(
        from_quote="USDT", to_quote="USD", rate=D("0.97"), basis="consensus"
    )

    close = {"USDT": Rate(quote="USDT", rate=D("0.999"), basis="consensus")}
    result = compute("BTC/USD", inputs, Params(), at=AT, rates=close)
    binance, kraken = result.inputs
    assert binance.included
    assert binance.price == D("67000.50")  # as given
    assert binance.value == D("66933.4995")  # 67000.5 - 67.0005
    assert kraken.conversion is None
    assert kraken.value == D("67000.5")
    assert result.price == (D("66933.4995") + D("67000.5")) / 2

    # exactly 100 bps off is not more than 100 bps
    edge = {"USDT": Rate(quote="USDT", rate=D("0.99"), basis="consensus")}
    assert compute("BTC/USD", inputs, Params(), at=AT, rates=edge).num_sources == 2


def test_a_stablecoin_without_a_rate_converts_at_par_and_says_so() -> None:
    inputs = [feed("kraken", "100"), feed("binance", "101", quote="USDC")]
    result = compute("BTC/USD", inputs, Params(), at=AT)
    binance = result.inputs[0]
    assert binance.conversion == Conversion(
        from_quote="USDC", to_quote="USD", rate=D(1), basis="par"
    )
    assert binance.value == D(101)
    assert binance.included
    # a par rate given explicitly is not checked for a depeg either
    far = {"USDC": Rate(quote="USDC", rate=D("0.5"), basis="par")}
    assert compute("BTC/USD", inputs, Params(outlier_k=D(1000)), at=AT, rates=far).num_sources == 2


def test_other_quotes_need_a_rate_and_are_not_depeg_checked() -> None:
    inputs = [feed("kraken", "100"), feed("bitstamp", "92", quote="EUR")]
    with pytest.raises(ValueError, match="EUR"):
        compute("BTC/USD", inputs, Params(), at=AT)
    with pytest.raises(ValueError, match="EUR"):
        inputs_digest("BTC/USD", inputs, Params(), AT)
    eur = {"EUR": Rate(quote="EUR", rate=D("1.08"), basis="consensus")}
    result = compute("BTC/USD", inputs, Params(), at=AT, rates=eur)
    assert result.inputs[0].value == D("99.36")
    assert result.num_sources == 2
    # a USD input of a USDT symbol: USD is no stablecoin, so it needs a rate
    with pytest.raises(ValueError, match="USD"):
        compute("BTC/USDT", [feed("kraken", "100")], Params(), at=AT)
    # between two stablecoins par holds
    result = compute("BTC/USDT", [feed("binance", "100", quote="USDC")], Params(), at=AT)
    assert result.inputs[0].conversion == Conversion(
        from_quote="USDC", to_quote="USDT", rate=D(1), basis="par"
    )
    assert "USDC" in DEFAULT_STABLECOINS


def test_max_deviation_bps() -> None:
    inputs = feeds("100", "100.5", "101", "102")
    # median 100.75; MAD median(0.75, 0.25, 0.25, 1.25) = 0.5, 5 x 0.5 = 2.5 keeps everyone
    assert compute("BTC/USD", inputs, Params(), at=AT).num_sources == 4
    # 102 is 1.25 / 100.75 = 124 bps off, 100 is 74 bps off
    result = compute("BTC/USD", inputs, Params(max_deviation_bps=D(100)), at=AT)
    assert reasons(result) == {"s0": None, "s1": None, "s2": None, "s3": "outlier"}
    assert result.price == D("100.5")
    result = compute("BTC/USD", inputs, Params(max_deviation_bps=D(70)), at=AT)
    assert reasons(result) == {"s0": "outlier", "s1": None, "s2": None, "s3": "outlier"}


# Quorum


def test_one_source_is_short_of_a_quorum_of_two_but_its_statistics_are_given() -> None:
    inputs = [feed("kraken", "100"), feed("old", "100", age_ms=10**6)]
    result = compute("BTC/USD", inputs, Params(), at=AT)
    assert result.status == "insufficient_sources"
    assert result.price is None
    assert (result.median, result.mean, result.min, result.max) == (D(100),) * 4
    assert (result.std_dev, result.mad, result.spread_bps, result.conf) == (D(0),) * 4
    assert result.sources == ["kraken"]
    assert compute("BTC/USD", inputs, Params(min_sources=1), at=AT).price == D(100)


def test_no_inputs_give_no_statistics() -> None:
    result = compute("BTC/USD", [], Params(), at=AT)
    assert result.status == "insufficient_sources"
    stats = (
        result.price,
        result.median,
        result.mean,
        result.std_dev,
        result.mad,
        result.min,
        result.max,
        result.spread_bps,
        result.conf,
    )
    assert stats == (None,) * 9
    assert (result.num_sources, result.sources, result.inputs) == (0, [], [])
    everything_stale = compute("BTC/USD", feeds("1", "2", age_ms=999_999), Params(), at=AT)
    assert everything_stale.median is None


def test_the_quorum_counts_distinct_sources() -> None:
    inputs = [
        feed("binance", "100", quote="USDT", native_symbol="BTCUSDT"),
        feed("binance", "100.1", quote="USDC", native_symbol="BTCUSDC"),
    ]
    result = compute("BTC/USD", inputs, Params(), at=AT)
    assert result.status == "insufficient_sources"
    assert (result.num_sources, result.sources) == (1, ["binance"])
    # same source and time: by native symbol
    assert [row.native_symbol for row in result.inputs] == ["BTCUSDC", "BTCUSDT"]


# Methods


def test_volume_weighted_median() -> None:
    inputs = [
        feed("a", "100", volume="1"),
        feed("b", "101", volume="1"),
        feed("c", "102", volume="10"),
    ]
    result = compute("BTC/USD", inputs, Params(method="volume_weighted"), at=AT)
    # weights 100, 101, 1020 (volume x value) of 1221: half is 610.5, reached only at 102
    assert [row.weight for row in result.inputs] == [D(100), D(101), D(1020)]
    assert result.price == D(102)
    assert result.median == D(101)
    assert "fallback" not in result.params


def test_volume_weighted_with_equal_weights_is_the_median() -> None:
    inputs = [
        feed("a", "100", volume="10"),
        feed("b", "200", volume="5"),
        feed("c", "400", volume="2.5"),
        feed("d", "500", volume="2"),
    ]
    params = Params(method="volume_weighted", outlier_k=D(1000))
    result = compute("BTC/USD", inputs, params, at=AT)
    assert {row.weight for row in result.inputs} == {D(1000)}
    assert result.price == D(300) == statistics.median([D(100), D(200), D(400), D(500)])


def test_volume_weighted_exact_half_takes_the_next_weighted_value() -> None:
    # weights 1000, 0, 1000: half is reached exactly at 100; the next weighted value is 200
    inputs = [
        feed("a", "100", volume="10"),
        feed("b", "120", volume="0"),
        feed("c", "200", volume="5"),
    ]
    result = compute("BTC/USD", inputs, Params(method="volume_weighted"), at=AT)
    assert result.price == D(150)


def test_volume_weighted_without_volumes_falls_back_to_the_median() -> None:
    inputs = [feed("a", "100"), feed("b", "101", volume="0"), feed("c", "103")]
    result = compute("BTC/USD", inputs, Params(method="volume_weighted"), at=AT)
    assert result.status == "ok"
    assert result.price == D(101)
    assert result.params["fallback"] == "median"
    assert [row.weight for row in result.inputs] == [D(0)] * 3


def test_time_decay_halves_a_weight_every_half_life() -> None:
    inputs = [
        feed("a", "100", age_ms=0),
        feed("b", "101", age_ms=0),
        feed("c", "102", age_ms=28_000),
        feed("d", "103", age_ms=42_000),
    ]
    result = compute("BTC/USD", inputs, Params(method="time_decay", half_life_ms=14_000), at=AT)
    with localcontext() as context:
        context.prec = 40
        expected = [D(2) ** (D(-age) / D(14_000)) for age in (0, 0, 28_000, 42_000)]
        assert expected[2:] == [D("0.25"), D("0.125")]
        # weights 1, 1, 0.25, 0.125 of 2.375: half (1.1875) is first reached at 101
        for row, weight in zip(result.inputs, expected, strict=True):
            assert row.weight is not None
            assert abs(row.weight - weight) < D("1e-38")
    assert result.price == D(101)
    assert result.median == D("101.5")
    assert result.params["half_life_ms"] == 14_000


def test_time_decay_of_two_inputs() -> None:
    # weights 2^-0.5 (7 s old) and 2^-3 (42 s old): the fresher one outweighs the older
    inputs = [feed("a", "100", age_ms=42_000), feed("b", "101", age_ms=7_000)]
    result = compute("BTC/USD", inputs, Params(method="time_decay"), at=AT)
    with localcontext() as context:
        context.prec = 40
        fresh = (D(-7_000) / D(14_000) * D(2).ln()).exp()
    weights = [row.weight for row in result.inputs]
    assert weights[0] is not None
    assert weights[1] is not None
    assert abs(weights[0] - D("0.125")) < D("1e-38")
    assert abs(weights[1] - fresh) < D("1e-38")
    assert result.price == D(101)


# Statistics


def test_statistics_worked_by_hand() -> None:
    result = compute("BTC/USD", feeds("13", "10", "18", "11"), Params(), at=AT)
    assert result.num_sources == 4  # median 12, MAD 1.5: the limit 7.5 keeps 18
    assert result.median == D(12)
    assert result.mean == D(13)  # 52 / 4
    with localcontext() as context:
        context.prec = 40
        # population variance (9 + 4 + 0 + 25) / 4 = 9.5
        assert result.std_dev == D("9.5").sqrt()
        assert result.spread_bps == D(80_000) / D(12)  # 8 / 12 x 10000
    assert result.std_dev is not None
    assert float(result.std_dev) == pytest.approx(3.0822070014844883)
    assert result.mad == D("1.5")  # |v - 12| = 1, 2, 6, 1
    assert (result.min, result.max) == (D(10), D(18))
    # p25 at position 0.75: 10.75; p75 at 2.25: 13 + 5 x 0.25 = 14.25
    assert result.conf == D("2.25")
    values = [D(13), D(10), D(18), D(11)]
    assert percentile(values, D("0.25")) == D("10.75")
    assert percentile(values, D("0.75")) == D("14.25")


def test_random_sets_median_within_range_and_order_free() -> None:
    rng = random.Random(20260301)
    for _ in range(150):
        n = rng.randint(1, 9)
        prices = [D(rng.randint(1, 10**8)) / D(10 ** rng.randint(0, 12)) for _ in range(n)]
        inputs = [
            feed(
                f"s{index}",
                str(price),
                age_ms=rng.randint(0, 60_000),
                volume=str(rng.randint(0, 50)),
            )
            for index, price in enumerate(prices)
        ]
        params = Params(
            method=rng.choice(["median", "volume_weighted", "time_decay"]),
            min_sources=1,
            outlier_k=D(10) ** 30,
        )
        result = compute("X/USD", inputs, params, at=AT)
        assert result.price is not None
        assert result.median is not None
        assert result.min is not None
        assert result.max is not None
        assert result.min <= result.median <= result.max
        assert result.min <= result.price <= result.max
        assert result.median == statistics.median(prices)
        assert result.conf == max(
            statistics.median(prices) - percentile(prices, D("0.25")),
            percentile(prices, D("0.75")) - statistics.median(prices),
        )
        shuffled = inputs[:]
        rng.shuffle(shuffled)
        assert compute("X/USD", shuffled, params, at=AT) == result


# Determinism and the digest


def test_shuffled_inputs_give_the_same_answer_and_digest() -> None:
    inputs = [
        feed("kraken", "67010", volume="3"),
        feed("binance", "67000.5", quote="USDT"),
        feed("okx", "67030.25", age_ms=4_000),
        feed("coinbase", "67005"),
        feed("coinbase", "67006", age_ms=2_000),
        feed("liar", "80000"),
    ]
    rates = {"USDT": Rate(quote="USDT", rate=D("0.9995"), basis="consensus")}
    first = compute("BTC/USD", inputs, Params(method="volume_weighted"), at=AT, rates=rates)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = inputs[:]
        rng.shuffle(shuffled)
        again = compute("BTC/USD", shuffled, Params(method="volume_weighted"), at=AT, rates=rates)
        assert again == first
        assert (
            inputs_digest("BTC/USD", shuffled, Params(method="volume_weighted"), AT, rates=rates)
            == first.inputs_digest
        )
    # coinbase's two rows: by timestamp, older first
    assert [row.age_ms for row in first.inputs if row.source == "coinbase"] == [2_000, 1_000]


def test_the_digest_is_sha256_of_the_canonical_inputs() -> None:
    inputs = [feed("kraken", "100.50", volume="2"), feed("binance", "100", quote="USDT")]
    params = Params()
    payload = [
        "BTC/USD",
        "2026-03-01T12:00:00Z",
        {
            "method": "median",
            "max_age_ms": 300000,
            "min_sources": 2,
            "outlier_k": "5",
            "mad_floor_bps": "10",
            "max_deviation_bps": "0",
            "bounds": None,
            "depeg_bps": "100",
        },
        [{"quote": "USDT", "rate": "1", "basis": "par"}],
        [
            {
                "source": "binance",
                "price": "100",
                "timestamp": "2026-03-01T11:59:59Z",
                "quote": "USDT",
                "native_symbol": None,
                "volume": None,
            },
            {
                "source": "kraken",
                "price": "100.50",
                "timestamp": "2026-03-01T11:59:59Z",
                "quote": "USD",
                "native_symbol": None,
                "volume": "2",
            },
        ],
    ]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    expected = hashlib.sha256(canonical).hexdigest()
    assert compute("BTC/USD", inputs, params, at=AT).inputs_digest == expected
    assert inputs_digest("BTC/USD", inputs, params, AT) == expected


def test_any_change_changes_the_digest() -> None:
    inputs = [feed("kraken", "67010.5"), feed("binance", "67000", quote="USDT")]
    rate = {"USDT": Rate(quote="USDT", rate=D("0.9995"), basis="consensus")}
    base = inputs_digest("BTC/USD", inputs, Params(), AT, rates=rate)
    changed_digit = [feed("kraken", "67010.6"), inputs[1]]
    variants = [
        inputs_digest("BTC/USD", changed_digit, Params(), AT, rates=rate),
        inputs_digest("BTC/USD", inputs, Params(), AT + timedelta(milliseconds=1), rates=rate),
        inputs_digest("BTC/USD", inputs, Params(min_sources=3), AT, rates=rate),
        inputs_digest("BTC/USD", inputs, Params(), AT),  # par instead of 0.9995
        inputs_digest("ETH/USD", inputs, Params(), AT, rates=rate),
    ]
    assert len({base, *variants}) == 6
    # a rate for a quote nobody used is not part of it
    unused = {**rate, "USDC": Rate(quote="USDC", rate=D("0.9"), basis="consensus")}
    assert inputs_digest("BTC/USD", inputs, Params(), AT, rates=unused) == base


# JSON


def test_to_json_writes_plain_decimals_z_times_and_null_prices() -> None:
    inputs = [feed("kraken", "0.000000012345"), feed("okx", "0.000000012345", quote="USDT")]
    rates = {"USDT": Rate(quote="USDT", rate=D("0.9999"), basis="consensus")}
    out = to_json(compute("PEPE/USD", inputs, Params(), at=AT, rates=rates))
    # the median: (0.000000012345 + 0.0000000123437655) / 2
    assert out["price"] == "0.00000001234438275"
    assert out["min"] == "0.0000000123437655"
    assert out["timestamp"] == "2026-03-01T12:00:00Z"
    okx = out["inputs"][1]
    assert okx["conversion"] == {
        "from_quote": "USDT",
        "to_quote": "USD",
        "rate": "0.9999",
        "basis": "consensus",
    }
    assert okx["timestamp"] == "2026-03-01T11:59:59Z"
    assert okx["value"] == "0.0000000123437655"
    assert out["inputs"][0]["conversion"] is None
    assert "E-" not in json.dumps(out)
    assert json.loads(msgspec.json.encode(out)) == out

    alone = to_json(compute("PEPE/USD", inputs[:1], Params(), at=AT))
    assert alone["status"] == "insufficient_sources"
    assert alone["price"] is None
    assert alone["median"] == "0.000000012345"
    assert json.loads(json.dumps(alone))["price"] is None


def test_params_describe_and_validation() -> None:
    described = Params(method="time_decay", bounds=Bounds(D("0.5"), None)).describe()
    assert described == {
        "method": "time_decay",
        "max_age_ms": 300000,
        "min_sources": 2,
        "outlier_k": "5",
        "mad_floor_bps": "10",
        "max_deviation_bps": "0",
        "bounds": {"low": "0.5", "high": None},
        "depeg_bps": "100",
        "half_life_ms": 14000,
    }
    assert "half_life_ms" not in Params().describe()
    for bad in (
        {"min_sources": 0},
        {"max_age_ms": -1},
        {"half_life_ms": 0},
        {"outlier_k": D(-1)},
        {"depeg_bps": D("NaN")},
        {"method": "mean"},
    ):
        with pytest.raises(ValueError, match=r"must"):
            Params(**bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"method": "mean"}, Params)


def test_inputs_times_and_symbols_are_checked() -> None:
    with pytest.raises(ValueError, match="UTC"):
        Input(source="a", price=D(1), timestamp=datetime(2026, 1, 1), quote="USD")
    with pytest.raises(ValueError, match="positive"):
        feed("a", "0")
    with pytest.raises(ValueError, match="UTC"):
        compute("BTC/USD", [], Params(), at=AT.astimezone(timezone(timedelta(hours=1))))
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        compute("BTCUSD", [], Params(), at=AT)


# Guard


def priced(price: str, symbol: str = "BTC/USD") -> Consensus:
    return compute(symbol, feeds(price, price), Params(), at=AT)


def test_guard_withholds_a_jump_and_passes_a_small_move() -> None:
    guard = Guard(window_s=60)
    bps = D(500)
    assert guard.check(priced("100"), guard_bps=bps, now=0.0).status == "ok"  # nothing earlier
    jumped = guard.check(priced("110"), guard_bps=bps, now=1.0)  # 1000 bps from 100
    assert jumped.status == "guarded"
    assert jumped.price is None
    assert jumped.median == D(110)  # the statistics stay
    assert jumped.params["guard_bps"] == "500"
    assert jumped.params["guard_reference"] == "100"
    assert "guard_bps" not in priced("110").params

    calm = Guard(window_s=60)
    calm.check(priced("100"), guard_bps=bps, now=0.0)
    moved = calm.check(priced("104"), guard_bps=bps, now=1.0)  # 400 bps
    assert moved.status == "ok"
    assert moved.price == D(104)


def test_guard_lets_a_sustained_move_through_once_the_window_catches_up() -> None:
    guard = Guard(window_s=60)
    bps = D(500)
    for second in range(60):
        assert guard.check(priced("100"), guard_bps=bps, now=float(second)).status == "ok"
    assert guard.check(priced("110"), guard_bps=bps, now=60.0).status == "guarded"
    # one sample of 110 among 60 of 100: the mean is 100 + 10/61 away
    assert guard.check(priced("110"), guard_bps=bps, now=61.0).status == "guarded"
    statuses = [
        guard.check(priced("110"), guard_bps=bps, now=float(second)).status
        for second in range(62, 122)
    ]
    assert statuses[-1] == "ok"  # samples before 61 are gone: only 110s remain
    # it passed once the mean of the window came within 5 % of 110 (110 / 1.05 = 104.76...)
    first_ok = 62 + statuses.index("ok")
    assert set(statuses[statuses.index("ok") :]) == {"ok"}
    old = first_ok - 60  # the window starts at first_ok - 60: samples at old..59 are 100
    count_old, count_new = 60 - old, first_ok - 60
    mean = (D(100) * count_old + D(110) * count_new) / (count_old + count_new)
    assert abs(D(110) - mean) * 10_000 <= 500 * mean
    previous_mean = (D(100) * (count_old + 1) + D(110) * (count_new - 1)) / (count_old + count_new)
    assert abs(D(110) - previous_mean) * 10_000 > 500 * previous_mean


def test_guard_bps_zero_changes_nothing_and_records_nothing() -> None:
    guard = Guard(window_s=60)
    consensus = priced("100")
    assert guard.check(consensus, guard_bps=D(0), now=0.0) is consensus
    assert guard.check(priced("200"), guard_bps=D(0), now=1.0).status == "ok"
    # nothing was sampled above, so nothing is earlier than this
    assert guard.check(priced("300"), guard_bps=D(100), now=2.0).status == "ok"
    # a consensus without a price passes untouched and is not sampled
    short = compute("BTC/USD", feeds("1000"), Params(), at=AT)
    assert guard.check(short, guard_bps=D(100), now=3.0) is short
    assert guard.check(priced("301"), guard_bps=D(100), now=4.0).status == "ok"


def test_guard_samples_at_most_once_per_sample_s_and_per_symbol() -> None:
    guard = Guard(window_s=60, sample_s=1.0)
    bps = D(500)
    guard.check(priced("100"), guard_bps=bps, now=0.0)
    for tenth in range(1, 10):  # 400 bps: passes, but is not sampled
        assert guard.check(priced("104"), guard_bps=bps, now=tenth / 10).status == "ok"
    spike = guard.check(priced("105.5"), guard_bps=bps, now=0.95)
    assert spike.status == "guarded"  # 550 bps from 100, the only sample
    assert spike.params["guard_reference"] == "100"
    # a second later it is sampled (after the check, still against 100 alone)
    assert guard.check(priced("105.5"), guard_bps=bps, now=1.0).status == "guarded"
    after = guard.check(priced("105.5"), guard_bps=bps, now=1.5)
    assert after.status == "ok"  # 267 bps from the mean of 100 and 105.5, 102.75
    assert guard.check(priced("3000", "ETH/USD"), guard_bps=bps, now=1.0).status == "ok"


def test_guard_keeps_at_most_max_samples() -> None:
    guard = Guard(window_s=1000, sample_s=0, max_samples=2)
    bps = D(100)
    guard.check(priced("100"), guard_bps=bps, now=0.0)
    guard.check(priced("100"), guard_bps=bps, now=1.0)
    assert guard.check(priced("120"), guard_bps=bps, now=2.0).status == "guarded"
    # the first 100 is gone: the samples are 100 and 120
    result = guard.check(priced("130"), guard_bps=bps, now=3.0)
    assert result.params["guard_reference"] == "110"
    with pytest.raises(ValueError, match="window_s"):
        Guard(window_s=0)
