"""The Kraken adapters (v2 and v1) against recorded frames and hand-made edge cases.

Expected values are worked out here from the raw text with the stdlib (``json`` with
``parse_float=Decimal``, ``Decimal``, ``datetime.fromisoformat``), never with the adapter's own
code; the v1 -> canonical symbol mapping is written out again below.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind, ParsedFrame
from chrono.exchanges.kraken import EXCHANGE, KrakenAdapter
from chrono.exchanges.kraken_common import BATCH_SYMBOLS, canonical_symbol
from chrono.exchanges.kraken_v1 import V1_EXCHANGE, KrakenV1Adapter
from chrono.model import PriceFeed
from tests import fastpath
from tests.recorded import received, sent

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
CAPTURE = "kraken-v1-ticker"
V1_TO_CANONICAL = {"XBT": "BTC", "XDG": "DOGE"}  # written out independently of the adapter


def v2(*symbols: str) -> KrakenAdapter:
    adapter = EXCHANGE.adapter(EXCHANGE.symbol_map(symbols or ("BTC/USD", "ETH/USD")), "w-2")
    assert isinstance(adapter, KrakenAdapter)
    return adapter


def v1(*symbols: str) -> KrakenV1Adapter:
    symbol_map = V1_EXCHANGE.symbol_map(symbols or ("BTC/USD", "ETH/USD"))
    adapter = V1_EXCHANGE.adapter(symbol_map, "w-1")
    assert isinstance(adapter, KrakenV1Adapter)
    return adapter


def canonical(pair: str) -> str:
    base, quote = pair.split("/")
    return f"{V1_TO_CANONICAL.get(base, base)}/{V1_TO_CANONICAL.get(quote, quote)}"


def v2_ticker(*entries: dict[str, Any], kind: str = "update") -> str:
    return json.dumps({"channel": "ticker", "type": kind, "data": list(entries)})


def v2_entry(**fields: Any) -> dict[str, Any]:
    entry = {
        "symbol": "BTC/USD",
        "bid": 67234.5,
        "bid_qty": 0.5,
        "ask": 67234.6,
        "ask_qty": 1.25,
        "last": 67234.5,
        "volume": 1234.56789,
        "timestamp": "2026-01-02T03:04:05.123456Z",
    }
    entry.update(fields)
    return {key: value for key, value in entry.items() if value is not None}


def v1_ticker(pair: str = "XBT/USD", **fields: Any) -> str:
    payload = {
        "a": ["56218.30000", 0, "0.13690578"],
        "b": ["56119.10000", 0, "0.03333108"],
        "c": ["56218.30000", "0.01309422"],
        "v": ["27.65107371", "37.46739855"],
        "t": [1300, 1955],
    }
    payload.update(fields)
    payload = {key: value for key, value in payload.items() if value is not None}
    return json.dumps([468, payload, "ticker", pair])


def only(parsed: ParsedFrame, kind: FrameKind) -> ParsedFrame:
    assert parsed.kind is kind
    assert (parsed.feeds, parsed.skipped) == ([], [])
    return parsed


# --- registry and symbols -------------------------------------------------------------------


def test_registry_entries() -> None:
    assert (EXCHANGE.name, EXCHANGE.version) == ("kraken", "v2")
    assert EXCHANGE.default_url == "wss://ws.kraken.com/v2"
    assert (V1_EXCHANGE.name, V1_EXCHANGE.version) == ("kraken", "v1")
    assert V1_EXCHANGE.default_url == "wss://ws.kraken.com"
    assert EXCHANGE.protocol("v1") is V1_EXCHANGE
    assert EXCHANGE.protocol("v2") is EXCHANGE
    assert EXCHANGE.protocol(None) is EXCHANGE
    with pytest.raises(KeyError):
        EXCHANGE.protocol("v3")
    assert EXCHANGE.quote_aliases == {} == V1_EXCHANGE.quote_aliases
    assert EXCHANGE.limits == V1_EXCHANGE.limits
    assert EXCHANGE.limits.max_symbols >= BATCH_SYMBOLS
    assert EXCHANGE.ping_interval_s == V1_EXCHANGE.ping_interval_s == 30.0


def test_native_symbols() -> None:
    assert EXCHANGE.native_symbol("BTC/USD") == "BTC/USD"
    assert EXCHANGE.native_symbol("DOGE/USD") == "DOGE/USD"
    assert V1_EXCHANGE.native_symbol("BTC/USD") == "XBT/USD"
    assert V1_EXCHANGE.native_symbol("DOGE/BTC") == "XDG/XBT"
    assert V1_EXCHANGE.native_symbol("ETH/USDT") == "ETH/USDT"
    symbol_map = V1_EXCHANGE.symbol_map(["BTC/USD", "DOGE/EUR", "ETH/BTC"])
    assert symbol_map.natives() == ["XBT/USD", "XDG/EUR", "ETH/XBT"]
    assert symbol_map.to_canonical("XDG/EUR") == "DOGE/EUR"
    assert EXCHANGE.symbol_map(["BTC/USD"]).natives() == ["BTC/USD"]  # quotes stay strict


def test_canonical_symbol() -> None:
    assert canonical_symbol("XBT/USD") == "BTC/USD"
    assert canonical_symbol("XDG/XBT") == "DOGE/BTC"
    assert canonical_symbol("BTC/USD") == "BTC/USD"
    assert canonical_symbol("waves/eur") == "WAVES/EUR"
    for bad in ("XBTUSD", "XBT-USD", "/USD", "XBT/"):
        with pytest.raises(ValueError, match="BASE/QUOTE"):
            canonical_symbol(bad)


# --- v1: the recording ----------------------------------------------------------------------


def test_v1_replay_every_recorded_frame() -> None:
    [request] = sent(CAPTURE)
    pairs = json.loads(request)["pair"]
    adapter = v1(*[canonical(pair) for pair in pairs])
    assert adapter.subscribe_messages([canonical(p) for p in pairs]) == [
        json.dumps(json.loads(request) | {"reqid": 1}, separators=(",", ":"))
    ]
    kinds: dict[FrameKind, int] = dict.fromkeys(FrameKind, 0)
    acked: list[str] = []
    for frame in received(CAPTURE):
        parsed = adapter.parse(frame, RECEIVED_AT)
        kinds[parsed.kind] += 1
        raw = json.loads(frame, parse_float=Decimal)
        if isinstance(raw, list):
            assert parsed.feeds == [expected_v1_feed(raw)]
            assert parsed.skipped == []
        elif raw["event"] == "subscriptionStatus":
            assert (parsed.kind, parsed.message) == (FrameKind.ACK, raw["pair"])
            acked.extend(parsed.symbols)
        else:
            assert parsed.kind is {"systemStatus": FrameKind.INFO}.get(
                raw["event"], FrameKind.HEARTBEAT
            )
    assert acked == [canonical(pair) for pair in pairs]
    assert {"BTC/CHF", "KSM/BTC"} <= set(acked)
    assert kinds == {
        FrameKind.DATA: 18, FrameKind.ACK: 10, FrameKind.INFO: 1, FrameKind.HEARTBEAT: 31,
        FrameKind.ERROR: 0, FrameKind.RECONNECT: 0,
    }  # fmt: skip


def expected_v1_feed(raw: list[Any]) -> PriceFeed:
    _channel_id, payload, name, pair = raw
    assert name == "ticker"
    return PriceFeed(
        symbol=canonical(pair),
        price=Decimal(payload["c"][0]),
        timestamp=RECEIVED_AT,
        received_at=RECEIVED_AT,
        source="kraken",
        worker_id="w-1",
        volume=Decimal(payload["v"][1]),
        bid=Decimal(payload["b"][0]),
        ask=Decimal(payload["a"][0]),
        metadata={"native_symbol": pair},
    )


def test_v1_replay_keeps_every_digit() -> None:
    adapter = v1("XMR/USD", "GRT/ETH", "BTC/CHF")
    prices = {}
    for frame in received(CAPTURE):
        for feed in adapter.parse(frame, RECEIVED_AT).feeds:
            prices[feed.symbol] = str(feed.price)
    assert prices == {"XMR/USD": "353.81000000", "GRT/ETH": "0.000839800", "BTC/CHF": "56218.30000"}


def test_v1_unheld_pairs_are_skipped() -> None:
    adapter = v1("BTC/CHF")
    skipped = [s for f in received(CAPTURE) for s in adapter.parse(f, RECEIVED_AT).skipped]
    assert skipped == ["unknown_symbol"] * 17


# --- v1: hand-made frames -------------------------------------------------------------------


def test_v1_repeated_ticker_is_skipped() -> None:
    adapter = v1()
    first = adapter.parse(v1_ticker(), RECEIVED_AT)
    assert [str(feed.price) for feed in first.feeds] == ["56218.30000"]
    again = adapter.parse(v1_ticker(), RECEIVED_AT.replace(second=59))  # a resubscribe's snapshot
    assert (again.kind, again.feeds, again.skipped) == (FrameKind.DATA, [], ["repeat"])
    drifted = adapter.parse(v1_ticker(v=["27.65107371", "30.1"], t=[1300, 1900]), RECEIVED_AT)
    assert drifted.skipped == ["repeat"]  # only the rolling 24 h figures moved: no trade
    same_price = adapter.parse(v1_ticker(v=["27.7", "37.5"], t=[1301, 1956]), RECEIVED_AT)
    assert len(same_price.feeds) == 1  # a new trade at the same price and size
    other = adapter.parse(v1_ticker("ETH/USD"), RECEIVED_AT)
    assert [feed.symbol for feed in other.feeds] == ["ETH/USD"]  # remembered per pair


def test_v1_ticker_without_last_trade_is_skipped() -> None:
    for frame in (v1_ticker(c=None), v1_ticker(c=[])):
        parsed = v1().parse(frame, RECEIVED_AT)
        assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["no_price"])


def test_v1_ticker_with_only_a_price() -> None:
    [feed] = (
        v1().parse(json.dumps([1, {"c": ["1.5", "2"]}, "ticker", "XBT/USD"]), RECEIVED_AT).feeds
    )
    assert (feed.price, feed.bid, feed.ask, feed.volume) == (Decimal("1.5"), None, None, None)
    assert feed.timestamp == RECEIVED_AT


def test_v1_control_frames() -> None:
    adapter = v1()
    assert only(adapter.parse('{"event":"heartbeat"}', RECEIVED_AT), FrameKind.HEARTBEAT)
    pong = only(adapter.parse('{"event":"pong","reqid":42}', RECEIVED_AT), FrameKind.HEARTBEAT)
    assert pong.message == "pong"
    status = (
        '{"connectionID":18446744073709551615123,"event":"systemStatus",'
        '"status":"maintenance","version":"1.9.5"}'
    )
    assert only(adapter.parse(status, RECEIVED_AT), FrameKind.INFO).message == (
        "systemStatus maintenance (version 1.9.5)"
    )
    rate = only(adapter.parse(b'{"Error":"Exceeded msg rate"}', RECEIVED_AT), FrameKind.ERROR)
    assert rate.message == "Exceeded msg rate"
    error = '{"errorMessage":"Malformed request","event":"error"}'
    assert only(adapter.parse(error, RECEIVED_AT), FrameKind.ERROR).message == "Malformed request"


def test_v1_subscription_status() -> None:
    adapter = v1()
    ack = (
        '{"channelID":1,"channelName":"ticker","event":"subscriptionStatus","pair":"XBT/USD",'
        '"status":"subscribed","subscription":{"name":"ticker"}}'
    )
    parsed = only(adapter.parse(ack, RECEIVED_AT), FrameKind.ACK)
    assert (parsed.message, parsed.symbols) == ("XBT/USD", ["BTC/USD"])
    foreign = ack.replace("XBT/USD", "XBT/EUR")
    assert only(adapter.parse(foreign, RECEIVED_AT), FrameKind.ACK).symbols == []
    gone = ack.replace('"subscribed"', '"unsubscribed"')
    assert only(adapter.parse(gone, RECEIVED_AT), FrameKind.INFO).symbols == []
    book = ack.replace('{"name":"ticker"}', '{"name":"book"}')
    assert only(adapter.parse(book, RECEIVED_AT), FrameKind.INFO)
    refused = (
        '{"errorMessage":"Currency pair not in ISO 4217-A3 format XBT-USDT",'
        '"event":"subscriptionStatus","pair":"XBT-USDT","status":"error",'
        '"subscription":{"name":"ticker"}}'
    )
    parsed = only(adapter.parse(refused, RECEIVED_AT), FrameKind.ERROR)
    assert parsed.message == "XBT-USDT: Currency pair not in ISO 4217-A3 format XBT-USDT"
    assert parsed.symbols == []
    mine = refused.replace('"XBT-USDT"', '"XBT/USD"')
    assert only(adapter.parse(mine, RECEIVED_AT), FrameKind.ERROR).symbols == ["BTC/USD"]


# --- v2 -------------------------------------------------------------------------------------


def test_v2_doc_example() -> None:
    frame = (
        '{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,'
        '"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,'
        '"volume":997038.98383185,"vwap":0.10148,"low":0.09979,"high":0.10285,'
        '"change":-0.00017,"change_pct":-0.17,"timestamp":"2023-09-25T09:04:31.742648Z"}]}'
    )
    [feed] = v2("ALGO/USD").parse(frame, RECEIVED_AT).feeds
    raw = json.loads(frame, parse_float=Decimal)["data"][0]
    assert feed == PriceFeed(
        symbol="ALGO/USD",
        price=raw["last"],
        timestamp=datetime(2023, 9, 25, 9, 4, 31, 742648, tzinfo=UTC),
        received_at=RECEIVED_AT,
        source="kraken",
        worker_id="w-2",
        volume=raw["volume"],
        bid=raw["bid"],
        ask=raw["ask"],
        metadata={"native_symbol": "ALGO/USD"},
    )
    assert (str(feed.price), str(feed.volume)) == ("0.10035", "997038.98383185")
    assert feed.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    "number", ["67234.5", "67234.50000", "0.000000012345678901", "1.5E-7", "65000", "-1.0"]
)
def test_v2_json_numbers_decode_digit_for_digit(number: str) -> None:
    frame = v2_ticker(v2_entry()).replace('"last": 67234.5', f'"last": {number}')
    [feed] = v2().parse(frame, RECEIVED_AT).feeds
    assert feed.price == Decimal(number)
    assert str(feed.price) == str(Decimal(number))  # same digits and exponent, never a float


def test_v2_several_tickers_in_one_frame() -> None:
    frame = v2_ticker(
        v2_entry(),
        v2_entry(symbol="ETH/USD", last=3456.78, timestamp="2026-01-02T05:04:05.000001+02:00"),
        v2_entry(symbol="SOL/USD"),
        v2_entry(symbol="ETH/USD", last=None),
    )
    parsed = v2().parse(frame, RECEIVED_AT)
    assert parsed.kind is FrameKind.DATA
    assert [(f.symbol, str(f.price)) for f in parsed.feeds] == [
        ("BTC/USD", "67234.5"),
        ("ETH/USD", "3456.78"),
    ]
    assert parsed.feeds[1].timestamp == datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC)
    assert parsed.feeds[1].timestamp.tzinfo is UTC
    assert parsed.skipped == ["unknown_symbol", "no_price"]


def test_v2_ticker_without_timestamp_uses_received_at() -> None:
    [feed] = v2().parse(v2_ticker(v2_entry(timestamp=None)), RECEIVED_AT).feeds
    assert feed.timestamp == RECEIVED_AT


def test_v2_ticker_with_nothing_but_symbol_and_last() -> None:
    frame = '{"channel":"ticker","data":[{"symbol":"BTC/USD","last":1}]}'
    [feed] = v2().parse(frame.encode(), RECEIVED_AT).feeds
    assert (feed.price, feed.bid, feed.ask, feed.volume) == (Decimal(1), None, None, None)


def test_v2_control_frames() -> None:
    adapter = v2()
    status = (
        '{"channel":"status","type":"update","data":[{"api_version":"v2",'
        '"connection_id":13834774380200032777,"system":"online","version":"2.0.0"}]}'
    )
    assert only(adapter.parse(status, RECEIVED_AT), FrameKind.INFO).message == (
        "system online (version 2.0.0)"
    )
    beat = only(adapter.parse('{"channel":"heartbeat"}', RECEIVED_AT), FrameKind.HEARTBEAT)
    assert beat.message == "heartbeat"
    pong = (
        '{"method":"pong","req_id":101,"time_in":"2023-09-25T09:04:31.742599Z",'
        '"time_out":"2023-09-25T09:04:31.742648Z"}'
    )
    assert only(adapter.parse(pong, RECEIVED_AT), FrameKind.HEARTBEAT).message == "pong"
    malformed = '{"error":"Malformed request","method":"error","success":false}'
    assert only(adapter.parse(malformed, RECEIVED_AT), FrameKind.ERROR).message == (
        "Malformed request"
    )


def test_v2_subscribe_replies() -> None:
    adapter = v2()
    ack = (
        '{"method":"subscribe","result":{"channel":"ticker","symbol":"BTC/USD","snapshot":true,'
        '"warnings":["x"]},"success":true,"time_in":"2023-09-25T09:04:31.742599Z",'
        '"time_out":"2023-09-25T09:04:31.742648Z","req_id":1}'
    )
    parsed = only(adapter.parse(ack, RECEIVED_AT), FrameKind.ACK)
    assert (parsed.message, parsed.symbols) == ("BTC/USD", ["BTC/USD"])
    assert only(adapter.parse(ack.replace("BTC/USD", "SOL/USD"), RECEIVED_AT), FrameKind.ACK)
    other = ack.replace('"channel":"ticker"', '"channel":"book"')
    assert only(adapter.parse(other, RECEIVED_AT), FrameKind.INFO)
    refused = (
        '{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,'
        '"symbol":"XBT/USD","time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}'
    )
    parsed = only(adapter.parse(refused, RECEIVED_AT), FrameKind.ERROR)
    assert parsed.message == "subscribe XBT/USD: Currency pair not supported XBT/USD"
    assert parsed.symbols == []
    again = '{"error":"Already subscribed","method":"subscribe","success":false,"symbol":"ETH/USD"}'
    parsed = only(adapter.parse(again, RECEIVED_AT), FrameKind.ERROR)
    assert (parsed.message, parsed.symbols) == (
        "subscribe ETH/USD: Already subscribed",
        ["ETH/USD"],
    )
    bare = '{"error":"Exceeded msg rate","method":"subscribe","success":false}'
    assert only(adapter.parse(bare, RECEIVED_AT), FrameKind.ERROR).message == (
        "subscribe: Exceeded msg rate"
    )


def test_v2_unsubscribe_replies() -> None:
    adapter = v2()
    done = (
        '{"method":"unsubscribe","result":{"channel":"ticker","symbol":"BTC/USD"},'
        '"success":true,"req_id":2}'
    )
    assert only(adapter.parse(done, RECEIVED_AT), FrameKind.INFO).message == (
        "unsubscribed ticker BTC/USD"
    )
    missing = (
        '{"error":"Subscription Not Found","method":"unsubscribe","success":false,'
        '"symbol":"BTC/USD"}'
    )
    parsed = only(adapter.parse(missing, RECEIVED_AT), FrameKind.ERROR)
    assert (parsed.message, parsed.symbols) == (
        "unsubscribe BTC/USD: Subscription Not Found",
        ["BTC/USD"],
    )


# --- requests -------------------------------------------------------------------------------


def test_v2_subscribe_and_resubscribe_messages() -> None:
    adapter = v2("BTC/USD", "ETH/USD", "DOGE/USD")
    [first] = adapter.subscribe_messages(["BTC/USD", "ETH/USD", "DOGE/USD"])
    assert json.loads(first) == {
        "method": "subscribe",
        "params": {
            "channel": "ticker",
            "symbol": ["BTC/USD", "ETH/USD", "DOGE/USD"],
            "snapshot": True,
        },
        "req_id": 1,
    }
    unsubscribe, subscribe = map(
        json.loads, adapter.subscribe_messages(["DOGE/USD"], resubscribe=True)
    )
    assert unsubscribe == {
        "method": "unsubscribe",
        "params": {"channel": "ticker", "symbol": ["DOGE/USD"]},
        "req_id": 2,
    }
    assert subscribe["params"]["symbol"] == ["DOGE/USD"]
    assert subscribe["req_id"] == 3
    assert json.loads(adapter.ping_message()) == {"method": "ping", "req_id": 4}


def test_v1_subscribe_and_resubscribe_messages() -> None:
    adapter = v1("BTC/USD", "DOGE/EUR", "ETH/BTC")
    [first] = adapter.subscribe_messages(["BTC/USD", "DOGE/EUR", "ETH/BTC"])
    assert json.loads(first) == {
        "event": "subscribe",
        "pair": ["XBT/USD", "XDG/EUR", "ETH/XBT"],
        "subscription": {"name": "ticker"},
        "reqid": 1,
    }
    again = [
        json.loads(m) for m in adapter.subscribe_messages(["ETH/BTC", "BTC/USD"], resubscribe=True)
    ]
    assert [(m["event"], m["pair"], m["reqid"]) for m in again] == [
        ("unsubscribe", ["ETH/XBT", "XBT/USD"], 2),
        ("subscribe", ["ETH/XBT", "XBT/USD"], 3),
    ]
    assert json.loads(adapter.ping_message()) == {"event": "ping", "reqid": 4}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_subscribes_are_batched(version: str) -> None:
    symbols = [f"C{i:03d}/USD" for i in range(EXCHANGE.limits.max_symbols)]
    adapter = v1(*symbols) if version == "v1" else v2(*symbols)
    key = "pair" if version == "v1" else "symbol"

    def listed(message: str) -> list[str]:
        request = json.loads(message)
        return list(request[key] if version == "v1" else request["params"][key])

    batches = [listed(m) for m in adapter.subscribe_messages(symbols)]
    assert [len(b) for b in batches] == [BATCH_SYMBOLS] * (len(symbols) // BATCH_SYMBOLS)
    assert [symbol for batch in batches for symbol in batch] == symbols
    quiet = symbols[: BATCH_SYMBOLS + 1]
    again = [listed(m) for m in adapter.subscribe_messages(quiet, resubscribe=True)]
    assert again == [quiet[:BATCH_SYMBOLS]] * 2 + [quiet[BATCH_SYMBOLS:]] * 2


# --- bad frames -----------------------------------------------------------------------------

BAD_COMMON = [
    ("not json", "malformed"),
    (b"\xff\xfe", "malformed"),
    ("", "malformed"),
    ('{"event":"heartbeat"', "malformed"),
    ('{"channel":"heartbeat",}', "malformed"),
    ('{"x":"\ud800"}', "malformed"),
    (b'{"channel":"\xff","event":"\xff"}', "malformed"),
    ("5", "schema"),
    ("null", "schema"),
]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        *BAD_COMMON,
        ("[1, 2]", "schema"),
        ("{}", "schema"),
        ('{"channel":5}', "schema"),
        ('{"method":["subscribe"]}', "schema"),
        ('{"channel":"ticker"}', "schema"),
        ('{"channel":"ticker","data":{}}', "schema"),
        (v2_ticker(v2_entry(last="abc")), "schema"),
        (v2_ticker(v2_entry(last="")), "schema"),
        (v2_ticker(v2_entry(last=True)), "schema"),
        (v2_ticker(v2_entry(symbol=7)), "schema"),
        (v2_ticker(v2_entry(symbol=None)), "schema"),
        (v2_ticker(v2_entry(timestamp="2026-01-02T03:04:05")), "schema"),
        (v2_ticker(v2_entry(timestamp="yesterday")), "schema"),
        (v2_ticker(v2_entry(timestamp="0001-01-01T00:00:00+01:00")), "schema"),
        ('{"method":"subscribe","success":"yes"}', "schema"),
        ('{"method":"pong","req_id":"1"}', "schema"),
        ('{"channel":"book","data":[]}', "unknown_type"),
        ('{"channel":"trade"}', "unknown_type"),
        ('{"method":"add_order"}', "unknown_type"),
        ('{"event":"heartbeat"}', "schema"),  # v1 on a v2 link
    ],
)
def test_v2_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        v2().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        *BAD_COMMON,
        ("[]", "schema"),
        ("[1]", "schema"),
        ("{}", "schema"),
        ('{"event":5}', "schema"),
        ('{"Error":5}', "schema"),
        ('[1,{},5,"XBT/USD"]', "schema"),
        ('[1,{},"ticker"]', "schema"),
        ('[1,{},{},"ticker","XBT/USD"]', "schema"),
        ('[1,[],"ticker","XBT/USD"]', "schema"),
        ('[1,{},"ticker",7]', "schema"),
        (v1_ticker(c=["abc", "1"]), "schema"),
        (v1_ticker(c=["", "1"]), "schema"),
        (v1_ticker(c="56218.3"), "schema"),
        (v1_ticker(t=["1", "2"]), "schema"),
        (v1_ticker(a=[True, 0, "1"]), "schema"),
        ('{"event":"subscriptionStatus","status":5}', "schema"),
        ('{"event":"pong","reqid":"x"}', "schema"),
        ('[1,{"a":[]},"book-10","XBT/USD"]', "unknown_type"),
        ('[1,[["1","2","3"]],"trade","XBT/USD"]', "unknown_type"),
        ('{"event":"addOrderStatus"}', "unknown_type"),
        ('{"channel":"heartbeat"}', "schema"),  # v2 on a v1 link
    ],
)
def test_v1_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        v1().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


def test_unknown_type_names_the_type() -> None:
    with pytest.raises(InvalidFrame) as caught:
        v2().parse('{"channel":"book"}', RECEIVED_AT)
    assert caught.value.detail == "book"
    with pytest.raises(InvalidFrame) as caught:
        v1().parse('[1,{},"spread","XBT/USD"]', RECEIVED_AT)
    assert caught.value.detail == "spread"


def test_nan_and_huge_numbers_are_reported_not_judged() -> None:
    """Price rules are FeedRules' job: the adapter passes on what was sent, digit for digit."""
    [feed] = v1().parse(v1_ticker(c=["NaN", "1"]), RECEIVED_AT).feeds
    assert feed.price.is_nan()
    [feed] = v2().parse(v2_ticker(v2_entry()).replace("67234.5,", "1e400,", 1), RECEIVED_AT).feeds
    assert feed.bid == Decimal("1e400")
    huge = "9" * 400
    [feed] = v2().parse(v2_ticker(v2_entry(last=int(huge))), RECEIVED_AT).feeds
    assert feed.price == Decimal(huge)


def fuzz_frames() -> list[str]:
    """Every truncation and a few hundred seeded mutations of real-looking frames."""
    seeds = [*received(CAPTURE)[:14], v1_ticker(), v2_ticker(v2_entry(), v2_entry())]
    seeds.append(
        '{"method":"subscribe","result":{"channel":"ticker","symbol":"BTC/USD"},"success":true}'
    )
    frames = [seed[:cut] for seed in seeds for cut in range(0, len(seed), 7)]
    rng = random.Random(7)
    junk = ['"', "[", "]", "{", "}", ",", ":", "-", "e", "9" * 30, "null", "NaN", '""', "\\u0000"]
    for _ in range(600):
        seed = rng.choice(seeds)
        at = rng.randrange(len(seed))
        frames.append(seed[:at] + rng.choice(junk) + seed[at + rng.randrange(3) :])
    return frames


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_fuzzed_frames_raise_only_invalid_frame(version: str) -> None:
    adapter = v1() if version == "v1" else v2()
    reasons: list[str] = []
    parsed = 0
    for frame in fuzz_frames():
        try:
            adapter.parse(frame, RECEIVED_AT)
        except InvalidFrame as exc:
            reasons.append(exc.reason)
        else:
            parsed += 1
    assert set(reasons) <= {"malformed", "schema", "unknown_type"}
    assert len(reasons) > 100
    assert parsed > 10


# --- the fast path against the full path ------------------------------------------------------


def fast_and_full(version: str, frame: str) -> tuple[list[PriceFeed] | None, list[PriceFeed]]:
    return fastpath.fast_and_full(v1 if version == "v1" else v2, frame, RECEIVED_AT)


def test_both_paths_make_the_same_feeds_digit_for_digit() -> None:
    for version, frame in (("v1", v1_ticker()), ("v2", v2_ticker(v2_entry(), v2_entry()))):
        fast, full = fast_and_full(version, frame)
        assert fast == full
        assert fast
        assert all(feed.text is not None for feed in fast)
    [feed] = fastpath.fast_only(v1, v1_ticker(), RECEIVED_AT) or []
    assert feed.text is not None
    assert [feed.text.price, feed.text.volume, feed.text.bid, feed.text.ask] == [
        "56218.30000", "37.46739855", "56119.10000", "56218.30000",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "earlier",
    ['"yesterday"', '"2026-01-02T03:04:05"', '"2026-02-30T03:04:05.123456Z"', "5", "null"],
)
def test_v2_repeated_timestamp_the_last_one_counts_on_both_paths(earlier: str) -> None:
    """JSON lets a key repeat: both paths read ``timestamp`` from the last one (the full path
    types it from ``msgspec.Raw``), so an earlier bad value changes nothing. One that is not a
    string or null fails the fast Struct (``str | None``): the fast path gives up and the full
    path makes the same feed."""
    good = v2_ticker(v2_entry())
    frame = good.replace("[{", f'[{{"timestamp": {earlier}, ', 1)
    fast, full = fast_and_full("v2", frame)
    assert full == fast_and_full("v2", good)[1]
    assert [feed.timestamp for feed in full] == [datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)]
    assert fast == (None if earlier == "5" else full)


@pytest.mark.parametrize(
    ("key", "earlier"),
    [
        ("c", '["x", "1"]'), ("c", '["1e5", "1"]'), ("c", "null"), ("c", '["1"]'),
        ("b", '["01", 0, "1"]'), ("a", '"56218.3"'), ("v", '["-1", "NaN"]'),
    ],
)  # fmt: skip
def test_v1_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str) -> None:
    """Both paths read a decimal list from its last key (the full path types it from
    ``msgspec.Raw``). An earlier list of Kraken's shape, whatever its texts, passes the fast
    Struct and changes nothing; one of another shape fails it, and the full path decides."""
    good = v1_ticker()
    frame = good.replace('{"a": ', f'{{"{key}": {earlier}, "a": ', 1)
    fast, full = fast_and_full("v1", frame)
    assert full == fast_and_full("v1", good)[1]
    assert [(str(f.price), str(f.bid), str(f.ask), str(f.volume)) for f in full] == [
        ("56218.30000", "56119.10000", "56218.30000", "37.46739855")
    ]
    assert fast == (full if earlier.startswith("[") and earlier != '["1"]' else None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"c": ["x", "1"]}, "Invalid decimal string - at `$.c[0]`"),
        ({"a": ["1", True, "1"]}, "Expected `decimal`, got `bool` - at `$.a[1]`"),
        ({"v": {"x": "1"}}, "Expected `array`, got `object` - at `$.v`"),
        ({"b": "1"}, "Expected `array`, got `str` - at `$.b`"),
    ],
)
def test_v1_a_bad_decimal_is_typed_before_the_pair(fields: dict[str, Any], message: str) -> None:
    """Kept raw, a decimal list is typed before the pair is looked at: ``schema`` with
    msgspec's message and path (the item's, for a bad item), as when it was a typed field."""
    for pair in ("XBT/USD", "ADA/USD"):
        with pytest.raises(InvalidFrame) as caught:
            v1().parse(v1_ticker(pair, **fields), RECEIVED_AT)
        assert (caught.value.reason, caught.value.detail) == ("schema", message)
        assert fastpath.fast_only(v1, v1_ticker(pair, **fields), RECEIVED_AT) is None


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        ("yesterday", "Invalid RFC3339 encoded datetime"),
        ("2026-02-30T03:04:05.123456Z", "Invalid RFC3339 encoded datetime"),
        ("2026-01-02T03:04:05.123456", "Expected `datetime` with a timezone component"),
        (5, "Expected `datetime | null`, got `int`"),
    ],
)
def test_v2_a_bad_timestamp_is_typed_before_the_pair(timestamp: Any, message: str) -> None:
    """Kept raw, every entry's ``timestamp`` is typed before any entry is looked at:
    ``schema`` with msgspec's message and path, for a pair not held or without ``last`` too.
    February 30th matches ``TIME_RE``: the fast path gives up on it (``time_of_fixed``)."""
    bad = v2_entry(timestamp=timestamp)
    for entries in ([bad], [v2_entry(symbol="ADA/USD"), bad | {"symbol": "ADA/USD"}]):
        frame = v2_ticker(*entries)
        with pytest.raises(InvalidFrame) as caught:
            v2().parse(frame, RECEIVED_AT)
        at = f"data[{len(entries) - 1}].timestamp"
        assert (caught.value.reason, caught.value.detail) == ("schema", f"{message} - at `$.{at}`")
        assert fastpath.fast_only(v2, frame, RECEIVED_AT) is None
    frame = v2_ticker(v2_entry(last=None, timestamp=timestamp))
    with pytest.raises(InvalidFrame):
        v2().parse(frame, RECEIVED_AT)


@pytest.mark.parametrize(
    "payload",
    [
        {"c": ["1.5", "2"]},
        {"c": ["1.5", "2", "3"], "v": ["1", "2"], "a": ["1", 0, "1"], "b": ["1", 0, "1"]},
        {"c": ["1.5", "2"], "v": ["1", "2"], "a": ["1", "0", "1"], "b": ["1", 0, "1"]},
        {"c": ["1.5", "2"], "v": ["1", "2"], "a": ["1", 0, "1"], "b": ["1", 0, "1e2"]},
    ],
)
def test_v1_a_ticker_of_another_shape_is_the_full_paths(payload: dict[str, Any]) -> None:
    """The fast path takes Kraken's one shape (``a``/``b`` of three items, the whole-lot volume
    an int, ``c``/``v`` of two, every text plain); anything else the full path takes."""
    fast, full = fast_and_full("v1", json.dumps([1, payload, "ticker", "XBT/USD"]))
    assert fast is None
    assert [feed.price for feed in full] == [Decimal("1.5")]
