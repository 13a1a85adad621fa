"""The OKX adapter against the recorded frames and hand-made edge cases.

Expected values are worked out here from the raw text with the stdlib (``json``, ``Decimal``,
``datetime.fromtimestamp``), never with the adapter's own code.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind, Limits, ParsedFrame
from chrono.exchanges.okx import EXCHANGE, MAX_REQUEST_BYTES, OkxAdapter
from chrono.model import PriceFeed
from tests import fastpath
from tests.recorded import received, sent

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
NOTICE = (
    '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service'
    ' upgrade. Please reconnect.","connId":"a4d3ae55"}'
)
ERROR_60018 = (
    '{"event":"error","msg":"Wrong URL or channel:tickers,instId:BTC-XYZ doesn\'t exist. Please'
    ' use the correct URL, channel and parameters referring to API document.","code":"60018",'
    '"connId":"ed8c407d"}'
)


def adapter(*symbols: str) -> OkxAdapter:
    return OkxAdapter(EXCHANGE.symbol_map(symbols or ("BTC/USDT", "ETH/USDT")), "worker-1")


def item(**fields: Any) -> dict[str, Any]:
    """The docs/exchanges.md ticker item (a real capture), with ``fields`` replaced or removed."""
    base = {
        "instType": "SPOT", "instId": "BTC-USDT", "last": "30236", "lastSz": "0.0002",
        "askPx": "30228.7", "askSz": "1.55896972", "bidPx": "30228.6", "bidSz": "0.23393",
        "open24h": "29700.4", "high24h": "31073", "low24h": "28020.3", "sodUtc0": "29028.8",
        "sodUtc8": "30337.7", "volCcy24h": "525802090.62716611", "vol24h": "17602.13085371",
        "ts": "1652459224956",
    }  # fmt: skip
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def push(*items: dict[str, Any], channel: str = "tickers") -> str:
    arg = {
        "channel": channel,
        "instId": items[0].get("instId", "BTC-USDT") if items else "BTC-USDT",
    }
    return json.dumps({"arg": arg, "data": list(items)})


def expected_time(ts: str) -> datetime:
    millis = int(ts)
    return datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)


def expected_feed(raw: dict[str, Any], symbol: str) -> PriceFeed:
    def number(key: str) -> Decimal | None:
        return Decimal(raw[key]) if raw.get(key) else None

    return PriceFeed(
        symbol=symbol,
        price=Decimal(raw["last"]),
        timestamp=expected_time(raw["ts"]),
        received_at=RECEIVED_AT,
        source="okx",
        worker_id="worker-1",
        volume=number("vol24h"),
        bid=number("bidPx"),
        ask=number("askPx"),
        metadata={"native_symbol": raw["instId"], "instType": raw["instType"]},
    )


def test_registry_entry() -> None:
    assert EXCHANGE.name == "okx"
    assert EXCHANGE.default_url == "wss://ws.okx.com:8443/ws/v5/public"
    assert EXCHANGE.native_symbol("BTC/USDT") == "BTC-USDT"
    assert EXCHANGE.quote_aliases == {}
    assert EXCHANGE.ping_interval_s == 20.0
    assert EXCHANGE.limits == Limits(
        connects=1,
        connects_window_s=1.0,
        messages_per_s=1.0,
        max_symbols=200,
        subscribes_per_hour=400,  # below OKX's 480 per connection per hour
    )
    assert isinstance(EXCHANGE.adapter(EXCHANGE.symbol_map(["ETH/BTC"]), "w"), OkxAdapter)
    assert adapter().ping_message() == "ping"


def test_quotes_stay_strict() -> None:
    symbols = EXCHANGE.symbol_map(["BTC/USD", "BTC/USDT", "ETH/USDC"])
    assert symbols.natives() == ["BTC-USD", "BTC-USDT", "ETH-USDC"]
    aliased = EXCHANGE.symbol_map(["BTC/USD"], {"USD": "USDT"})
    assert aliased.natives() == ["BTC-USDT"]
    [feed] = OkxAdapter(aliased, "w").parse(push(item()), RECEIVED_AT).feeds
    assert feed.symbol == "BTC/USD"
    assert feed.metadata["native_symbol"] == "BTC-USDT"


def recorded_spot_symbols() -> dict[str, str]:
    """The SPOT tickers instIds the recording subscribed (``BASE-QUOTE``), native -> canonical."""
    inst_ids = {
        arg["instId"]
        for frame in sent("okx-tickers")
        for arg in json.loads(frame)["args"]
        if arg["channel"] == "tickers"
    }
    spot = {inst_id for inst_id in inst_ids if inst_id.count("-") == 1}
    return {inst_id: inst_id.replace("-", "/") for inst_id in sorted(spot)}


def expected_parse(raw: dict[str, Any], spot: dict[str, str]) -> ParsedFrame:
    if raw.get("event") == "subscribe":
        inst_id = raw["arg"]["instId"]
        symbols = [spot[inst_id]] if inst_id in spot else []
        return ParsedFrame(FrameKind.ACK, message=f"tickers:{inst_id}", symbols=symbols)
    parsed = ParsedFrame(FrameKind.DATA)
    for data in raw["data"]:
        if data["instId"] in spot:
            parsed.feeds.append(expected_feed(data, spot[data["instId"]]))
        else:
            parsed.skipped.append("unknown_symbol")
    return parsed


def test_replay_every_recorded_frame() -> None:
    spot = recorded_spot_symbols()
    assert spot == {"BTC-USDT": "BTC/USDT"}
    parser = OkxAdapter(EXCHANGE.symbol_map(list(spot.values())), "worker-1")
    frames = received("okx-tickers")
    results = [parser.parse(frame, RECEIVED_AT) for frame in frames]
    assert results == [expected_parse(json.loads(frame), spot) for frame in frames]
    kinds = [r.kind for r in results]
    assert (len(frames), kinds.count(FrameKind.ACK), kinds.count(FrameKind.DATA)) == (37, 9, 28)
    assert sum(len(r.feeds) for r in results) == 25
    assert sum(r.skipped == ["unknown_symbol"] for r in results) == 3  # the future and the swap
    assert sum(r.symbols == ["BTC/USDT"] for r in results) == 3  # BTC-USDT acked thrice


def test_replayed_feed_keeps_digits_and_utc() -> None:
    frames = received("okx-tickers")
    [feed] = adapter("BTC/USDT").parse(frames[11], RECEIVED_AT).feeds
    assert str(feed.price) == "30236"
    assert str(feed.volume) == "17602.13085371"
    assert (str(feed.bid), str(feed.ask)) == ("30228.6", "30228.7")
    assert feed.timestamp == datetime(2022, 5, 13, 16, 27, 4, 956000, tzinfo=UTC)
    assert feed.timestamp.tzinfo is UTC


def test_documented_ticker_and_bytes() -> None:
    frame = push(item(last="67234.56000000"))
    for raw in (frame, frame.encode()):
        parsed = adapter().parse(raw, RECEIVED_AT)
        assert parsed == ParsedFrame(
            FrameKind.DATA, feeds=[expected_feed(item(last="67234.56000000"), "BTC/USDT")]
        )
        assert str(parsed.feeds[0].price) == "67234.56000000"


def test_one_feed_per_item_and_reasons_for_the_rest() -> None:
    items = [
        item(instId="ETH-USDT", last="3456.78"),
        item(instId="BTC-USDT-SWAP", instType="SWAP"),
        item(instId="SOL-USDT"),
        item(last=""),
        item(),
    ]
    parsed = adapter().parse(push(*items), RECEIVED_AT)
    assert parsed.kind is FrameKind.DATA
    assert parsed.feeds == [
        expected_feed(items[0], "ETH/USDT"),
        expected_feed(items[4], "BTC/USDT"),
    ]
    assert parsed.skipped == ["unknown_symbol", "unknown_symbol", "no_price"]


def test_non_spot_item_for_a_held_inst_id_is_skipped() -> None:
    parsed = adapter().parse(push(item(instType="MARGIN")), RECEIVED_AT)
    assert (parsed.feeds, parsed.skipped) == ([], ["not_spot"])


def test_empty_book_and_volume_are_none() -> None:
    [feed] = adapter().parse(push(item(bidPx="", askPx="", vol24h=None)), RECEIVED_AT).feeds
    assert (feed.bid, feed.ask, feed.volume) == (None, None, None)
    assert feed.price == Decimal("30236")


def test_empty_data_is_a_data_frame_without_feeds() -> None:
    parsed = adapter().parse(
        '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[]}', RECEIVED_AT
    )
    assert parsed == ParsedFrame(FrameKind.DATA)


def test_pong_before_json() -> None:
    for frame in ("pong", b"pong"):
        assert adapter().parse(frame, RECEIVED_AT) == ParsedFrame(
            FrameKind.HEARTBEAT, message="pong"
        )


def test_acks() -> None:
    ack = (
        '{"id":"1512","event":"subscribe","arg":{"channel":"tickers","instId":"ETH-USDT"},'
        '"connId":"a4d3ae55"}'
    )
    assert adapter().parse(ack, RECEIVED_AT) == ParsedFrame(
        FrameKind.ACK, message="tickers:ETH-USDT", symbols=["ETH/USDT"]
    )
    other = '{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT-SWAP"}}'
    assert adapter().parse(other, RECEIVED_AT).symbols == []
    trades = '{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"}}'
    assert adapter().parse(trades, RECEIVED_AT) == ParsedFrame(
        FrameKind.ACK, message="trades:BTC-USDT"
    )


def test_unsubscribe_ack_is_info() -> None:
    frame = (
        '{"id":"7","event":"unsubscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},'
        '"connId":"a"}'
    )
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.INFO, "unsubscribed tickers:BTC-USDT")


def test_errors() -> None:
    bad = (
        '{"id":"1512","event":"error","code":"60012",'
        '"msg":"Invalid request: {\\"op\\":\\"x\\"}","connId":"a4d3ae55"}'
    )
    assert adapter().parse(bad, RECEIVED_AT) == ParsedFrame(
        FrameKind.ERROR, message='60012: Invalid request: {"op":"x"}'
    )
    unknown = adapter("BTC/XYZ", "BTC/USDT").parse(ERROR_60018, RECEIVED_AT)
    assert unknown.kind is FrameKind.ERROR
    assert unknown.message.startswith("60018: Wrong URL or channel:tickers,instId:BTC-XYZ")
    assert unknown.symbols == ["BTC/XYZ"]
    assert adapter("BTC/USDT").parse(ERROR_60018, RECEIVED_AT).symbols == []
    frequent = '{"event":"error","code":"60014","msg":"Requests too frequent."}'
    assert adapter().parse(frequent, RECEIVED_AT).message == "60014: Requests too frequent."


def test_notice_64008_is_reconnect() -> None:
    parsed = adapter().parse(NOTICE, RECEIVED_AT)
    assert parsed.kind is FrameKind.RECONNECT
    assert parsed.message == (
        "64008: The connection will soon be closed for a service upgrade. Please reconnect."
    )
    other = '{"event":"notice","code":"64009","msg":"something else"}'
    assert adapter().parse(other, RECEIVED_AT).kind is FrameKind.INFO


def test_channel_conn_count() -> None:
    count = '{"event":"channel-conn-count","channel":"orders","connCount":"2","connId":"abcd1234"}'
    parsed = adapter().parse(count, RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.INFO, "channel-conn-count orders: 2")
    over = '{"event":"channel-conn-count-error","channel":"orders","connCount":"30","connId":"a"}'
    assert adapter().parse(over, RECEIVED_AT).kind is FrameKind.ERROR


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        ("ping", "malformed"),
        ("Pong", "malformed"),
        ("", "malformed"),
        (b"\xff\xfe", "malformed"),
        ('{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[', "malformed"),
        ('{"event":"error","msg":"\ud800"}', "malformed"),
        ("[1, 2]", "schema"),
        ('"pong"', "schema"),
        ("{}", "schema"),
        ('{"arg":{"channel":"tickers","instId":"BTC-USDT"}}', "schema"),
        ('{"data":[]}', "schema"),
        ('{"event":5}', "schema"),
        ('{"event":"subscribe"}', "schema"),
        ('{"event":"error","code":60012}', "schema"),
        (push(item(last="abc")), "schema"),
        (push(item(last="NaN")), "schema"),
        (push(item(last="Infinity")), "schema"),
        (push(item(last=" 1")), "schema"),
        (push(item(last="1_000")), "schema"),
        (push(item(last=30236)), "schema"),
        (push(item(last=None)), "schema"),
        (push(item(bidPx="1.2.3")), "schema"),
        (push(item(last="0e001000000000000000000")), "schema"),  # Decimal refuses the exponent
        (push(item(askPx="1E+1000000000000000000")), "schema"),
        (push(item(instId=None)), "schema"),
        (push(item(ts="")), "schema"),
        (push(item(ts="1652459224956.5")), "schema"),
        (push(item(ts=1652459224956)), "schema"),
        (push(item(ts="-1")), "schema"),
        (push(item(ts="253402300800000")), "schema"),  # year 10000
        (push(item(ts="9" * 5000)), "schema"),
        (push(item(ts="\u0661\u0662")), "schema"),  # Arabic-Indic digits
        ('{"arg":{"channel":"tickers"},"data":{"last":"1"}}', "schema"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1"}]}', "unknown_type"),
        ('{"arg":{"channel":"books","instId":"BTC-USDT"},"data":[]}', "unknown_type"),
        ('{"event":"login","code":"0","msg":""}', "unknown_type"),
        ('{"event":"login","code":0}', "unknown_type"),
    ],
)
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


def test_unknown_kinds_are_named() -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse('{"event":"login","code":"0"}', RECEIVED_AT)
    assert caught.value.detail == "login"
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse(push(item(), channel="bbo-tbt"), RECEIVED_AT)
    assert caught.value.detail == "bbo-tbt"


def test_huge_numbers_stay_exact() -> None:
    huge = "9" * 60 + "." + "1" * 40
    [feed] = adapter().parse(push(item(last=huge, vol24h="1e-8")), RECEIVED_AT).feeds
    assert str(feed.price) == huge
    assert feed.volume == Decimal("1e-8")


def fuzzed_frames() -> list[str | bytes]:
    """Truncations of real frames, each field of a ticker retyped, and odd values."""
    real = [received("okx-tickers")[i] for i in (0, 11)] + [NOTICE, ERROR_60018]
    frames: list[str | bytes] = [f[:n] for f in real for n in range(len(f))]
    frames += [f.encode()[:n] + b"\xff" for f in real[:2] for n in range(0, len(f), 7)]
    odd: list[Any] = [None, "", 0, -1, 1.5, 10**40, "NaN", "-0", "1e999999999", [], {}, True]
    for key in item():
        frames += [push(item(**{key: value})) for value in odd]
    for key in ("event", "arg", "data", "code", "msg", "connId", "channel", "connCount"):
        frames += [json.dumps({"event": "notice", key: value}) for value in odd]
        frames += [json.dumps({"arg": {"channel": "tickers"}, key: value}) for value in odd]
    return frames


def test_fuzz_only_invalid_frame_escapes() -> None:
    parser = adapter("BTC/USDT")
    outcomes: Counter[str] = Counter()
    for frame in fuzzed_frames():
        try:
            parsed = parser.parse(frame, RECEIVED_AT)
        except InvalidFrame as exc:
            outcomes[exc.reason] += 1
        else:
            outcomes[parsed.kind.value] += 1
    assert set(outcomes) <= {"malformed", "schema", "unknown_type", *(k.value for k in FrameKind)}
    assert outcomes["data"] > 10
    assert outcomes["malformed"] + outcomes["schema"] > 1000


def test_subscribe_message_shape() -> None:
    parser = adapter("BTC/USDT", "ETH/USDC")
    [first] = parser.subscribe_messages(["BTC/USDT", "ETH/USDC"])
    assert json.loads(first) == {
        "id": "1",
        "op": "subscribe",
        "args": [
            {"channel": "tickers", "instId": "BTC-USDT"},
            {"channel": "tickers", "instId": "ETH-USDC"},
        ],
    }
    assert list(json.loads(first)) == ["id", "op", "args"]
    [again] = parser.subscribe_messages(["ETH/USDC"])  # a resubscribe: no unsubscribe first
    assert json.loads(again) == {
        "id": "2",
        "op": "subscribe",
        "args": [{"channel": "tickers", "instId": "ETH-USDC"}],
    }


def test_subscribe_batches_stay_well_under_64_kb() -> None:
    symbols = [f"COIN{n}/USDT" for n in range(2_000)]
    parser = OkxAdapter(EXCHANGE.symbol_map(symbols), "w")
    messages = parser.subscribe_messages(symbols)
    assert len(messages) > 1
    assert all(len(m.encode()) <= MAX_REQUEST_BYTES < 64_000 for m in messages)
    args = [arg for m in messages for arg in json.loads(m)["args"]]
    assert [arg["instId"] for arg in args] == [s.replace("/", "-") for s in symbols]
    assert len({json.loads(m)["id"] for m in messages}) == len(messages)


def test_max_symbols_fit_one_request() -> None:
    """Keeps subscribes rare (480 per connection per hour): a full connection is one request."""
    symbols = [f"LONGBASE{n:04d}/USDC" for n in range(EXCHANGE.limits.max_symbols)]
    parser = OkxAdapter(EXCHANGE.symbol_map(symbols), "w")
    assert len(parser.subscribe_messages(symbols)) == 1


# --- the fast path: the same feeds as the full path, or none --------------------------------


def fast_feeds(frame: str) -> list[PriceFeed] | None:
    return fastpath.fast_feeds(adapter, frame, RECEIVED_AT)


@pytest.mark.parametrize(
    ("key", "earlier", "fast"),
    [
        ("last", '"x"', True),
        ("last", '""', True),
        ("last", "null", False),
        ("ts", '"yesterday"', True),
        ("ts", "1652459224956", False),
        ("bidPx", "[1]", False),
        ("vol24h", '"1e999999999"', True),
    ],
)
def test_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str, fast: bool) -> None:
    """JSON lets a key repeat: both paths read an item's numbers and ``ts`` from the last one
    (the full path types them from ``msgspec.Raw``), so an earlier bad value changes nothing.
    An earlier value that is not a string fails the fast Struct (its fields are ``str``): the
    fast path gives up and the full path makes the same feed."""
    frame = push(item()).replace('{"instType"', f'{{"{key}": {earlier}, "instType"', 1)
    assert (fast_feeds(frame) is not None) is fast
    [feed] = adapter().parse(frame, RECEIVED_AT).feeds
    assert feed == expected_feed(item(), "BTC/USDT")


@pytest.mark.parametrize("missing", ["bidPx", "askPx", "vol24h"])
def test_missing_or_empty_amounts_take_the_fast_path(missing: str) -> None:
    for value in (None, ""):
        [feed] = fast_feeds(push(item(**{missing: value}))) or []
        assert feed == expected_feed(item(**{missing: value}), "BTC/USDT")


@pytest.mark.parametrize(
    ("key", "text"),
    [("last", "1e5"), ("last", "01"), ("last", "1\n"), ("last", ""), ("bidPx", "1."),
     ("vol24h", "-1"), ("ts", "1652459224956\n"), ("ts", "1" * 17), ("last", "1,2")],
)  # fmt: skip
def test_text_not_in_canonical_form_is_left_to_the_full_path(key: str, text: str) -> None:
    """Text the store would not keep as sent: the full path decides (a feed, a skip or a bad
    frame)."""
    assert fast_feeds(push(item(**{key: text}))) is None
