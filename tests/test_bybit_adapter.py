"""The Bybit v5 adapters (spot and linear) against documented frames and hand-made edge cases.

There is no Bybit v5 recording in tests/captures: frames come from docs/exchanges.md §7 and
Bybit's docs (spot ticker, linear snapshot, ack, error and pong shapes), linear deltas are
built with the documented fields. Expected values are worked out here with the stdlib (``json``,
``Decimal``, ``datetime``, dict merging), never with the adapter's own code.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind, ParsedFrame
from chrono.exchanges.bybit import (
    ARGS_CHARS_PER_CONNECTION,
    EXCHANGE,
    LINEAR_EXCHANGE,
    BybitAdapter,
    BybitLinearAdapter,
)
from chrono.model import PriceFeed
from tests import fastpath

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
PAIRS = ("BTC/USDT", "ETH/USDT")

SPOT_TICKER = (  # docs/exchanges.md §7
    '{"topic":"tickers.BTCUSDT","ts":1673853746003,"type":"snapshot","cs":2588407389,'
    '"data":{"symbol":"BTCUSDT","lastPrice":"21109.77","highPrice24h":"21426.99",'
    '"lowPrice24h":"20575","prevPrice24h":"20704.93","volume24h":"6780.866843",'
    '"turnover24h":"141946527.22907118","price24hPcnt":"0.0196","usdIndexPrice":"21120.2400136"}}'
)
LINEAR_SNAPSHOT = (  # Bybit's docs, docs/v5/websocket/public/ticker.mdx (Linear tab)
    '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",'
    '"tickDirection":"PlusTick","price24hPcnt":"0.017103","lastPrice":"17216.00",'
    '"prevPrice24h":"16926.50","highPrice24h":"17281.50","lowPrice24h":"16915.00",'
    '"prevPrice1h":"17238.00","markPrice":"17217.33","indexPrice":"17227.36",'
    '"openInterest":"68744.761","openInterestValue":"1183601235.91",'
    '"turnover24h":"1570383121.943499","volume24h":"91705.276","nextFundingTime":"1673280000000",'
    '"fundingRate":"-0.000212","bid1Price":"17215.50","bid1Size":"84.489","ask1Price":"17216.00",'
    '"ask1Size":"83.020"},"cs":24987956059,"ts":1673272861686}'
)
SPOT_ACK = (
    '{"success":true,"ret_msg":"subscribe","conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b",'
    '"req_id":"%s","op":"subscribe"}'
)
LINEAR_ACK = (
    '{"success":true,"ret_msg":"","conn_id":"3cd84cb1-4d06-4a05-930a-2efe5fc70f0f",'
    '"req_id":"","op":"subscribe"}'
)
SPOT_PONG = (
    '{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}'
)
LINEAR_PONG = (
    '{"success":true,"ret_msg":"pong","conn_id":"465772b1-7630-4fdc-a492-e003e6f0f260",'
    '"req_id":"","op":"ping"}'
)
OPTION_PONG = '{"args":["1672916271846"],"op":"pong"}'


def spot(*symbols: str) -> BybitAdapter:
    return BybitAdapter(EXCHANGE.symbol_map(symbols or PAIRS), "worker-1")


def linear(*symbols: str) -> BybitLinearAdapter:
    return BybitLinearAdapter(LINEAR_EXCHANGE.symbol_map(symbols or PAIRS), "worker-2")


def ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def one_feed(parsed: ParsedFrame) -> PriceFeed:
    assert parsed.kind is FrameKind.DATA
    assert parsed.skipped == []
    [feed] = parsed.feeds
    return feed


def linear_frame(kind: str, ts: int, cs: int, **data: str) -> str:
    body = {"symbol": "BTCUSDT", **data}
    frame = {"topic": "tickers.BTCUSDT", "type": kind, "data": body, "cs": cs, "ts": ts}
    return json.dumps(frame)


# --- the registry entries -------------------------------------------------------------------


def test_registry_entries() -> None:
    assert (EXCHANGE.name, EXCHANGE.version) == ("bybit", "spot")
    assert EXCHANGE.default_url == "wss://stream.bybit.com/v5/public/spot"
    assert EXCHANGE.protocol("linear") is LINEAR_EXCHANGE
    assert EXCHANGE.protocol("spot") is EXCHANGE
    assert (LINEAR_EXCHANGE.name, LINEAR_EXCHANGE.version) == ("bybit_linear", "linear")
    assert LINEAR_EXCHANGE.default_url == "wss://stream.bybit.com/v5/public/linear"
    for entry in (EXCHANGE, LINEAR_EXCHANGE):
        assert entry.ping_interval_s == 20
        assert dict(entry.quote_aliases) == {}
        assert entry.native_symbol("BTC/USDT") == "BTCUSDT"
    assert isinstance(EXCHANGE.adapter(EXCHANGE.symbol_map(["ETH/BTC"]), "w"), BybitAdapter)
    linear_adapter = LINEAR_EXCHANGE.adapter(LINEAR_EXCHANGE.symbol_map(["ETH/BTC"]), "w")
    assert isinstance(linear_adapter, BybitLinearAdapter)


def test_limits_stay_within_bybits() -> None:
    limits = EXCHANGE.limits
    assert limits.connects / limits.connects_window_s * 300 <= 500  # 500 per 5 min per domain
    longest = json.dumps("tickers.1000000BABYDOGEUSDT") + ","
    assert limits.max_symbols * len(longest) < ARGS_CHARS_PER_CONNECTION


def test_symbol_map_keeps_quotes_strict_unless_aliased() -> None:
    assert EXCHANGE.symbol_map(["BTC/USD", "ETH/USDC"]).natives() == ["BTCUSD", "ETHUSDC"]
    aliased = EXCHANGE.symbol_map(["BTC/USD"], {"USD": "USDT"})
    assert aliased.natives() == ["BTCUSDT"]
    adapter = BybitAdapter(aliased, "w")
    feed = one_feed(adapter.parse(SPOT_TICKER, RECEIVED_AT))
    assert (feed.symbol, feed.metadata["native_symbol"]) == ("BTC/USD", "BTCUSDT")


# --- spot -----------------------------------------------------------------------------------


def test_spot_ticker_from_exchanges_md() -> None:
    feed = one_feed(spot().parse(SPOT_TICKER, RECEIVED_AT))
    assert feed == PriceFeed(
        symbol="BTC/USDT",
        price=Decimal("21109.77"),
        timestamp=datetime(2023, 1, 16, 7, 22, 26, 3000, tzinfo=UTC),
        received_at=RECEIVED_AT,
        source="bybit",
        worker_id="worker-1",
        volume=Decimal("6780.866843"),
        bid=None,
        ask=None,
        metadata={"native_symbol": "BTCUSDT", "cross_sequence": 2588407389},
    )
    assert feed.timestamp == ms_time(1673853746003)


def test_spot_ticker_keeps_digits_and_accepts_bytes_and_numbers() -> None:
    raw = json.loads(SPOT_TICKER)
    raw["data"]["lastPrice"] = "21109.77000000"
    text = json.dumps(raw)
    for frame in (text, text.encode(), text.replace('"21109.77000000"', "21109.77000000")):
        assert str(one_feed(spot().parse(frame, RECEIVED_AT)).price) == "21109.77000000"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"symbol": "SOLUSDT"}, "unknown_symbol"), ({"lastPrice": None}, "no_price")],
)
def test_spot_ticker_skips(change: dict[str, Any], reason: str) -> None:
    raw = json.loads(SPOT_TICKER)
    raw["data"].update(change)
    raw["data"] = {key: value for key, value in raw["data"].items() if value is not None}
    parsed = spot().parse(json.dumps(raw), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], [reason])


def test_spot_has_no_delta() -> None:
    with pytest.raises(InvalidFrame) as caught:
        spot().parse(SPOT_TICKER.replace('"snapshot"', '"delta"'), RECEIVED_AT)
    assert caught.value.reason == "unknown_type"


# --- linear ---------------------------------------------------------------------------------


def test_linear_snapshot_from_the_docs() -> None:
    feed = one_feed(linear().parse(LINEAR_SNAPSHOT, RECEIVED_AT))
    assert feed == PriceFeed(
        symbol="BTC/USDT",
        price=Decimal("17216.00"),
        timestamp=datetime(2023, 1, 9, 14, 1, 1, 686000, tzinfo=UTC),
        received_at=RECEIVED_AT,
        source="bybit_linear",
        worker_id="worker-2",
        volume=Decimal("91705.276"),
        bid=Decimal("17215.50"),
        ask=Decimal("17216.00"),
        metadata={"native_symbol": "BTCUSDT", "cross_sequence": 24987956059},
    )


def linear_session() -> Iterator[str]:
    """The docs' snapshot, then realistic deltas of changed fields only."""
    yield LINEAR_SNAPSHOT
    yield linear_frame("delta", 1673272861786, 24987956102, bid1Price="17215.00", bid1Size="1.2")
    yield linear_frame("delta", 1673272861886, 24987956140, markPrice="17216.10")
    yield linear_frame(
        "delta", 1673272861986, 24987956177, lastPrice="17215.50", volume24h="91705.301",
        turnover24h="1570383552.331", tickDirection="MinusTick",
    )  # fmt: skip
    yield linear_frame("delta", 1673272862086, 24987956201, fundingRate="-0.000201")
    yield linear_frame("delta", 1673272862186, 24987956260, ask1Price="17215.50", ask1Size="3")
    yield linear_frame("delta", 1673272862286, 24987956301, volume24h="91706.000")
    yield linear_frame(
        "delta", 1673272862386, 24987956350, lastPrice="17220.5", bid1Price="17220.00",
        ask1Price="17221.00",
    )  # fmt: skip


def test_linear_deltas_merge_into_state() -> None:
    adapter = linear()
    state: dict[str, Any] = {}
    for frame in linear_session():
        raw = json.loads(frame)
        state = raw["data"] if raw["type"] == "snapshot" else {**state, **raw["data"]}
        parsed = adapter.parse(frame, RECEIVED_AT)
        if raw["type"] == "delta" and not {"lastPrice", "bid1Price", "ask1Price"} & set(
            raw["data"]
        ):
            assert (parsed.kind, parsed.feeds, parsed.skipped) == (
                FrameKind.DATA, [], ["no_price_change"],
            )  # fmt: skip
            continue
        feed = one_feed(parsed)
        assert feed.price == Decimal(state["lastPrice"])
        assert str(feed.price) == state["lastPrice"]
        assert (str(feed.bid), str(feed.ask)) == (state["bid1Price"], state["ask1Price"])
        assert str(feed.volume) == state["volume24h"]
        assert feed.timestamp == ms_time(raw["ts"])
        assert feed.metadata == {"native_symbol": "BTCUSDT", "cross_sequence": raw["cs"]}
        assert feed.source == "bybit_linear"


def test_linear_counts_of_the_session() -> None:
    adapter = linear()
    parsed = [adapter.parse(frame, RECEIVED_AT) for frame in linear_session()]
    assert [len(p.feeds) for p in parsed] == [1, 1, 0, 1, 0, 1, 0, 1]
    last = parsed[-1].feeds[0]
    assert (last.price, last.volume) == (Decimal("17220.5"), Decimal("91706.000"))


def test_linear_delta_before_snapshot_is_skipped() -> None:
    adapter = linear()
    delta = linear_frame("delta", 1673272861786, 1, lastPrice="17215.00")
    parsed = adapter.parse(delta, RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (
        FrameKind.DATA, [], ["delta_before_snapshot"],
    )  # fmt: skip
    adapter.parse(LINEAR_SNAPSHOT, RECEIVED_AT)
    assert one_feed(adapter.parse(delta, RECEIVED_AT)).price == Decimal("17215.00")


def test_linear_state_is_per_symbol_and_a_snapshot_replaces_it() -> None:
    adapter = linear()
    adapter.parse(LINEAR_SNAPSHOT, RECEIVED_AT)
    eth = LINEAR_SNAPSHOT.replace("BTCUSDT", "ETHUSDT")
    eth_delta = linear_frame("delta", 2, 2, bid1Price="1.5").replace("BTCUSDT", "ETHUSDT")
    assert adapter.parse(eth_delta, RECEIVED_AT).skipped == ["delta_before_snapshot"]
    assert one_feed(adapter.parse(eth, RECEIVED_AT)).symbol == "ETH/USDT"
    bare = linear_frame("snapshot", 3, 3, lastPrice="17000.1")  # a fresh, sparser snapshot
    feed = one_feed(adapter.parse(bare, RECEIVED_AT))
    assert (feed.price, feed.bid, feed.ask, feed.volume) == (Decimal("17000.1"), None, None, None)


def test_linear_snapshot_without_last_price_waits_for_one() -> None:
    adapter = linear()
    untraded = linear_frame("snapshot", 1, 1, bid1Price="10.5", ask1Price="10.7")
    assert adapter.parse(untraded, RECEIVED_AT).skipped == ["no_price"]
    assert adapter.parse(linear_frame("delta", 2, 2, bid1Price="10.6"), RECEIVED_AT).skipped == [
        "no_price"
    ]
    feed = one_feed(adapter.parse(linear_frame("delta", 3, 3, lastPrice="10.6"), RECEIVED_AT))
    assert (feed.price, feed.bid, feed.ask) == (Decimal("10.6"), Decimal("10.6"), Decimal("10.7"))


def test_linear_unknown_symbol_is_skipped_not_stored() -> None:
    adapter = linear("ETH/USDT")
    assert adapter.parse(LINEAR_SNAPSHOT, RECEIVED_AT).skipped == ["unknown_symbol"]


def test_linear_unknown_ticker_type() -> None:
    with pytest.raises(InvalidFrame) as caught:
        linear().parse(LINEAR_SNAPSHOT.replace('"snapshot"', '"partial"'), RECEIVED_AT)
    assert caught.value.reason == "unknown_type"


# --- control frames -------------------------------------------------------------------------


def req_ids(messages: list[str]) -> list[str]:
    return [json.loads(message)["req_id"] for message in messages]


def test_ack_names_the_symbols_of_its_request() -> None:
    adapter = spot("BTC/USDT", "ETH/USDT", "SOL/USDT")
    first = req_ids(adapter.subscribe_messages(["BTC/USDT", "ETH/USDT"]))
    second = req_ids(adapter.subscribe_messages(["SOL/USDT"]))
    parsed = adapter.parse(SPOT_ACK % second[0], RECEIVED_AT)
    assert (parsed.kind, parsed.symbols, parsed.message) == (FrameKind.ACK, ["SOL/USDT"], "SOLUSDT")
    parsed = adapter.parse(SPOT_ACK % first[0], RECEIVED_AT)
    assert parsed.symbols == ["BTC/USDT", "ETH/USDT"]
    assert adapter.parse(SPOT_ACK % first[0], RECEIVED_AT).symbols == []  # acked once only


def test_linear_ack_without_req_id_names_nothing() -> None:
    adapter = linear()
    adapter.subscribe_messages(list(PAIRS))
    parsed = adapter.parse(LINEAR_ACK, RECEIVED_AT)
    assert (parsed.kind, parsed.symbols) == (FrameKind.ACK, [])
    echoed = LINEAR_ACK.replace('"req_id":""', '"req_id":"1"')
    assert adapter.parse(echoed, RECEIVED_AT).symbols == list(PAIRS)


def test_forgotten_requests_are_bounded() -> None:
    adapter = spot("BTC/USDT")
    first = req_ids(adapter.subscribe_messages(["BTC/USDT"]))[0]
    for _ in range(2000):
        adapter.subscribe_messages(["BTC/USDT"])
    assert adapter.parse(SPOT_ACK % first, RECEIVED_AT).symbols == []
    assert len(adapter._requests) <= 1024


@pytest.mark.parametrize(
    ("ret_msg", "expected"),
    [
        ("error:handler not found,topic:tickers.ETHUSDT", ["ETH/USDT"]),
        ("error:already subscribed,topic:tickers.BTCUSDT", ["BTC/USDT"]),
        ("Invalid topic: invalid.topic.BTCUSDT", ["BTC/USDT", "ETH/USDT"]),
        ("error:handler not found,topic:tickers.NOPEUSDT", ["BTC/USDT", "ETH/USDT"]),
        ("args size >10", ["BTC/USDT", "ETH/USDT"]),
    ],
)
def test_subscribe_error(ret_msg: str, expected: list[str]) -> None:
    adapter = spot()
    [req_id] = req_ids(adapter.subscribe_messages(list(PAIRS)))
    frame = {
        "success": False, "ret_msg": ret_msg, "conn_id": "da7tmhs21nld3jk6lb70-8csm4",
        "req_id": req_id, "op": "subscribe",
    }  # fmt: skip
    parsed = adapter.parse(json.dumps(frame), RECEIVED_AT)
    assert (parsed.kind, parsed.message, parsed.symbols) == (FrameKind.ERROR, ret_msg, expected)


def test_error_from_exchanges_md_without_req_id() -> None:
    frame = (
        '{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"c",'
        '"op":"subscribe"}'
    )
    parsed = spot().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message, parsed.symbols) == (
        FrameKind.ERROR, "Invalid topic: invalid.topic.BTCUSDT", [],
    )  # fmt: skip


@pytest.mark.parametrize(
    "frame",
    [
        '{"success":false,"ret_msg":"Failed to decode incoming data","conn_id":"c"}',
        '{"success":false,"ret_msg":"error:invalid op","conn_id":"c","req_id":"","op":"nope"}',
        '{"success":false,"ret_msg":"bad ping","conn_id":"c","op":"ping"}',
    ],
)
def test_other_refusals_are_errors(frame: str) -> None:
    parsed = linear().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.ERROR, json.loads(frame)["ret_msg"])


@pytest.mark.parametrize("frame", [SPOT_PONG, LINEAR_PONG, OPTION_PONG])
def test_pongs_are_heartbeats(frame: str) -> None:
    for adapter in (spot(), linear()):
        parsed = adapter.parse(frame, RECEIVED_AT)
        assert (parsed.kind, parsed.feeds, parsed.message) == (FrameKind.HEARTBEAT, [], "pong")


@pytest.mark.parametrize("success", ["true", "false"])
def test_unsubscribe_replies_are_info(success: str) -> None:
    frame = f'{{"success":{success},"ret_msg":"unsubscribe","conn_id":"c","op":"unsubscribe"}}'
    parsed = spot().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.INFO, "unsubscribe")


# --- requests -------------------------------------------------------------------------------


def test_subscribe_batches_ten_topics_per_request() -> None:
    pairs = [f"C{i}/USDT" for i in range(25)]
    for adapter in (spot(*pairs), linear(*pairs)):
        messages = [json.loads(m) for m in adapter.subscribe_messages(pairs)]
        assert [list(m) for m in messages] == [["req_id", "op", "args"]] * 3
        assert [m["op"] for m in messages] == ["subscribe"] * 3
        assert [len(m["args"]) for m in messages] == [10, 10, 5]
        assert [a for m in messages for a in m["args"]] == [f"tickers.C{i}USDT" for i in range(25)]
        assert len({m["req_id"] for m in messages}) == 3


def test_resubscribe_unsubscribes_first() -> None:
    adapter = spot("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert json.loads(adapter.subscribe_messages(["BTC/USDT", "ETH/USDT"])[0]) == {
        "req_id": "1",
        "op": "subscribe",
        "args": ["tickers.BTCUSDT", "tickers.ETHUSDT"],
    }
    again = [
        json.loads(m)
        for m in adapter.subscribe_messages(["ETH/USDT", "SOL/USDT"], resubscribe=True)
    ]
    assert again == [
        {"req_id": "2", "op": "unsubscribe", "args": ["tickers.ETHUSDT", "tickers.SOLUSDT"]},
        {"req_id": "3", "op": "subscribe", "args": ["tickers.ETHUSDT", "tickers.SOLUSDT"]},
    ]


def test_ping_message() -> None:
    adapter = linear()
    pings = [json.loads(adapter.ping_message()) for _ in range(2)]
    assert pings == [{"req_id": "1", "op": "ping"}, {"req_id": "2", "op": "ping"}]


# --- bad frames -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        ("", "malformed"),
        (SPOT_TICKER[:-1], "malformed"),
        ('{"topic":"tickers.BTCUSDT","ts":1,"type":"snapshot","data":{"symbol":"\ud800"}}',
         "malformed"),
        ("[1, 2]", "schema"),
        ("{}", "schema"),
        ('{"topic":5}', "schema"),
        ('{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT"}}', "schema"),
        ('{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1}', "schema"),
        ('{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":null}', "schema"),
        ('{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":[]}', "schema"),
        ('{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{}}', "schema"),
        (SPOT_TICKER.replace('"21109.77"', '"abc"'), "schema"),
        (SPOT_TICKER.replace('"21109.77"', '""'), "schema"),
        (SPOT_TICKER.replace('"21109.77"', "true"), "schema"),
        (SPOT_TICKER.replace("1673853746003", '"1673853746003"'), "schema"),
        (SPOT_TICKER.replace("1673853746003", "1673853746003.5"), "schema"),
        (SPOT_TICKER.replace("1673853746003", "9" * 30), "schema"),
        (SPOT_TICKER.replace("1673853746003", "-99999999999999999"), "schema"),
        (SPOT_TICKER.replace("2588407389", '"x"'), "schema"),
        ('{"success":"yes","op":"subscribe"}', "schema"),
        ('{"ret_msg":"","op":"subscribe"}', "schema"),
        ('{"success":true,"ret_msg":""}', "unknown_type"),
        ('{"topic":"orderbook.1.BTCUSDT","ts":1,"type":"snapshot","data":{}}', "unknown_type"),
        ('{"success":true,"ret_msg":"","op":"auth","conn_id":"c"}', "unknown_type"),
        ('{"success":true,"conn_id":"c","data":{"failTopics":[]},"type":"COMMAND_RESP"}',
         "unknown_type"),
    ],
)  # fmt: skip
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    for adapter in (spot(), linear()):
        with pytest.raises(InvalidFrame) as caught:
            adapter.parse(frame, RECEIVED_AT)
        assert caught.value.reason == reason


SUBSTITUTES: list[Any] = [
    None, "", "NaN", "-Infinity", "1e999", 10**40, -(10**40), 1.5, True, [], {}, "\u0000",
    "tickers.", "delta", "snapshot", 0,
]  # fmt: skip


def mutations(frame: str, rng: random.Random) -> Iterator[str | bytes]:
    """Truncations, and each value replaced by hostile ones, at random."""
    for cut in range(0, len(frame), 7):
        yield frame[:cut]
        yield frame[:cut].encode()
    raw = json.loads(frame)
    for _ in range(300):
        mutated = json.loads(frame)
        target = mutated["data"] if "data" in mutated and rng.random() < 0.6 else mutated
        if isinstance(target, dict) and target:
            key = rng.choice(sorted(target))
            if rng.random() < 0.1:
                del target[key]
            else:
                target[key] = rng.choice(SUBSTITUTES)
        yield json.dumps(mutated)
    yield json.dumps(raw)


@pytest.mark.parametrize(
    "frame",
    [SPOT_TICKER, LINEAR_SNAPSHOT, SPOT_ACK % "1", LINEAR_PONG, OPTION_PONG,
     linear_frame("delta", 1, 1, lastPrice="1")],
)  # fmt: skip
def test_fuzzed_frames_raise_only_invalid_frame(frame: str) -> None:
    rng = random.Random(frame)
    for adapter in (spot(), linear()):
        adapter.subscribe_messages(list(PAIRS))
        if isinstance(adapter, BybitLinearAdapter):  # so deltas reach the merge
            adapter.parse(LINEAR_SNAPSHOT, RECEIVED_AT)
        reasons = set()
        for mutated in mutations(frame, rng):
            try:
                parsed = adapter.parse(mutated, RECEIVED_AT)
            except InvalidFrame as exc:
                reasons.add(exc.reason)
            else:
                assert isinstance(parsed, ParsedFrame)
        assert reasons <= {"malformed", "schema", "unknown_type"}
        assert "malformed" in reasons


# --- the fast path against the full path ----------------------------------------------------


def fast_and_full(frame: str) -> tuple[list[PriceFeed] | None, list[PriceFeed]]:
    return fastpath.fast_and_full(spot, frame, RECEIVED_AT)


@pytest.mark.parametrize(
    ("key", "earlier"),
    [
        ("lastPrice", '"x"'), ("lastPrice", '"1e5"'), ("lastPrice", "null"),
        ("lastPrice", "true"), ("volume24h", '"01"'), ("volume24h", "[1]"),
        ("volume24h", '"-1"'), ("volume24h", '""'),
    ],
)  # fmt: skip
def test_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str) -> None:
    """JSON lets a key repeat: both paths read a ticker's numbers from the last one (the full
    path types them from ``msgspec.Raw``), so an earlier bad value changes nothing. One that is
    neither a string nor null fails the fast Struct (its fields are ``str | None``): the fast
    path gives up and the full path makes the same feed."""
    frame = SPOT_TICKER.replace('"data":{', f'"data":{{"{key}":{earlier},', 1)
    fast, full = fast_and_full(frame)
    assert full == fast_and_full(SPOT_TICKER)[1]
    assert [str(full[0].price), str(full[0].volume)] == ["21109.77", "6780.866843"]
    assert fast == (full if earlier.startswith('"') or earlier == "null" else None)


@pytest.mark.parametrize("key", ["lastPrice", "volume24h"])
def test_repeated_key_a_bad_last_one_is_schema(key: str) -> None:
    """A good value then a bad one: the last counts, so the full path refuses the frame and the
    fast path gives up."""
    frame = SPOT_TICKER.replace('"data":{', f'"data":{{"{key}":"1",', 1)
    frame = frame.replace('"21109.77"' if key == "lastPrice" else '"6780.866843"', '"1e5"')
    assert fastpath.fast_only(spot, frame, RECEIVED_AT) is None
    with pytest.raises(InvalidFrame) as caught:
        spot().parse(frame.replace('"1e5"', '"x"'), RECEIVED_AT)
    assert (caught.value.reason, caught.value.detail) == (
        "schema", f"Invalid decimal string - at `$.{key}`",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lastPrice", "x", "Invalid decimal string - at `$.lastPrice`"),
        ("lastPrice", "", "Invalid decimal string - at `$.lastPrice`"),
        ("lastPrice", True, "Expected `decimal | null`, got `bool` - at `$.lastPrice`"),
        ("volume24h", [1], "Expected `decimal | null`, got `array` - at `$.volume24h`"),
        ("volume24h", {}, "Expected `decimal | null`, got `object` - at `$.volume24h`"),
    ],
)
def test_a_bad_number_is_typed_before_the_symbol(key: str, value: Any, message: str) -> None:
    """Kept raw, a number is typed before the symbol is looked at: ``schema`` with msgspec's
    message and path, as when it was a typed field, for a symbol not held too."""
    for symbol in ("BTCUSDT", "DOGEUSDT"):
        raw = json.loads(SPOT_TICKER)
        raw["data"].update({"symbol": symbol, key: value})
        with pytest.raises(InvalidFrame) as caught:
            spot().parse(json.dumps(raw), RECEIVED_AT)
        assert (caught.value.reason, caught.value.detail) == ("schema", message)


@pytest.mark.parametrize(
    ("key", "value"),
    [("volume24h", None), ("lastPrice", "21109.770000000000000000001"),
     ("volume24h", "1" * 21), ("lastPrice", "1.5e3"), ("lastPrice", "0")],
)  # fmt: skip
def test_what_the_fast_path_leaves_to_the_full_path(key: str, value: str | None) -> None:
    """No volume (Bybit always sends one), a text not in the store's form or out of its range,
    a zero price: the fast path gives up, and the full path decides."""
    raw = json.loads(SPOT_TICKER)
    raw["data"][key] = value
    raw["data"] = {k: v for k, v in raw["data"].items() if v is not None}
    frame = json.dumps(raw)
    assert fastpath.fast_only(spot, frame, RECEIVED_AT) is None
    parsed = spot().parse(frame, RECEIVED_AT)
    if key == "volume24h" and value is None:
        assert one_feed(parsed).volume is None


def test_the_fast_path_takes_the_docs_ticker() -> None:
    """The docs' ticker, digit for digit as the full path reads it."""
    fast, full = fast_and_full(SPOT_TICKER)
    assert fast == full
    assert fast is not None
    [feed] = fast
    assert feed.text is not None
    assert (str(feed.price), feed.text.price, feed.text.volume) == (
        "21109.77", "21109.77", "6780.866843",
    )  # fmt: skip
