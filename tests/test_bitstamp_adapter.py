"""The Bitstamp adapter against the real frames quoted in docs/exchanges.md §4 and edge cases.

There is no Bitstamp recording in tests/captures: the frames below are docs/exchanges.md's real
captures (trade, ack, error, reconnect request) and the cryptofeed capture's book shape.
Expected values are worked out here from the raw text with the stdlib (``json``, ``Decimal``,
``datetime``), never with the adapter's own code.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind
from chrono.exchanges.bitstamp import EXCHANGE, BitstampAdapter
from chrono.model import PriceFeed
from tests import fastpath

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
# docs/exchanges.md §4, real capture
TRADE = (
    '{"data":{"id":216000477,"timestamp":"1641343699","amount":0.0792,"amount_str":"0.07920000",'
    '"price":3805.44,"price_str":"3805.44","type":0,"microtimestamp":"1641343699596000",'
    '"buy_order_id":1443875737346049,"sell_order_id":1443875731320832},'
    '"channel":"live_trades_ethusd","event":"trade"}'
)
ACK = '{"event":"bts:subscription_succeeded","channel":"diff_order_book_ethusd","data":{}}'
ERROR = '{"event":"bts:error","channel":"","data":{"code":null,"message":"Incorrect JSON format."}}'
RECONNECT = '{"event":"bts:request_reconnect","channel":"","data":{}}'
HEARTBEAT = '{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}'
# The cryptofeed capture's levels (diff_order_book_ethusd), on the order_book channel.
BOOK = (
    '{"data":{"timestamp":"1641343691","microtimestamp":"1641343691947415",'
    '"bids":[["3802.38","1.31417521"],["3798.06","2.73248242"]],'
    '"asks":[["3805.47","8.26964788"],["3809.13","2.62839156"]]},'
    '"channel":"order_book_ethusd","event":"data"}'
)


def adapter(*symbols: str) -> BitstampAdapter:
    return BitstampAdapter(EXCHANGE.symbol_map(symbols or ("BTC/USD", "ETH/USD")), "worker-1")


def trade(**fields: Any) -> str:
    raw = json.loads(TRADE)
    channel = fields.pop("channel", raw["channel"])
    raw["data"].update(fields)
    raw["data"] = {key: value for key, value in raw["data"].items() if value is not None}
    return json.dumps(raw | {"channel": channel})


def book(bids: list[list[str]], asks: list[list[str]], channel: str = "order_book_ethusd") -> str:
    raw = json.loads(BOOK)
    raw["data"] |= {"bids": bids, "asks": asks}
    return json.dumps(raw | {"channel": channel})


def epoch_us(text: str) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(text))


def test_registry_entry() -> None:
    assert EXCHANGE.name == "bitstamp"
    assert EXCHANGE.default_url == "wss://ws.bitstamp.net"
    assert EXCHANGE.native_symbol("BTC/USD") == "btcusd"
    assert EXCHANGE.native_symbol("USDT/EUR") == "usdteur"
    assert EXCHANGE.quote_aliases == {}
    assert EXCHANGE.ping_interval_s == 30
    assert EXCHANGE.rotate_after_s == 89 * 24 * 3600
    assert isinstance(EXCHANGE.adapter(EXCHANGE.symbol_map(["ETH/BTC"]), "w"), BitstampAdapter)


def test_symbol_map_keeps_quotes_strict() -> None:
    symbols = EXCHANGE.symbol_map(["BTC/USD", "BTC/USDT", "ETH/EUR"])
    assert symbols.natives() == ["btcusd", "btcusdt", "etheur"]
    assert symbols.to_canonical("btcusdt") == "BTC/USDT"
    aliased = EXCHANGE.symbol_map(["BTC/USD"], {"USD": "USDC"})
    assert aliased.natives() == ["btcusdc"]
    assert aliased.to_canonical("btcusdc") == "BTC/USD"


def test_real_trade_before_any_book() -> None:
    raw = json.loads(TRADE)["data"]
    parsed = adapter().parse(TRADE, RECEIVED_AT)
    assert (parsed.kind, parsed.skipped) == (FrameKind.DATA, [])
    [feed] = parsed.feeds
    assert feed.symbol == "ETH/USD"
    assert feed.price == Decimal(raw["price_str"])
    assert str(feed.price) == "3805.44"
    assert feed.timestamp == datetime(2022, 1, 5, 0, 48, 19, 596000, tzinfo=UTC)
    assert feed.timestamp == epoch_us(raw["microtimestamp"])
    assert feed.timestamp.tzinfo is UTC
    assert feed.received_at == RECEIVED_AT
    assert (feed.source, feed.worker_id) == ("bitstamp", "worker-1")
    assert (feed.volume, feed.bid, feed.ask) == (None, None, None)
    assert feed.metadata == {"native_symbol": "ethusd", "trade_id": 216000477, "side": "buy"}


def test_trade_takes_the_cached_top_of_book() -> None:
    parser = adapter()
    parsed = parser.parse(BOOK, RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], [])
    [feed] = parser.parse(trade(type=1), RECEIVED_AT).feeds
    raw = json.loads(BOOK)["data"]
    assert (feed.bid, feed.ask) == (Decimal(raw["bids"][0][0]), Decimal(raw["asks"][0][0]))
    assert (str(feed.bid), str(feed.ask)) == ("3802.38", "3805.47")
    assert feed.metadata["side"] == "sell"


def test_book_is_cached_per_pair_and_replaced() -> None:
    parser = adapter()
    parser.parse(BOOK, RECEIVED_AT)
    parser.parse(book([["1.10", "1"]], [["1.20", "1"]], "order_book_btcusd"), RECEIVED_AT)
    [btc] = parser.parse(trade(channel="live_trades_btcusd"), RECEIVED_AT).feeds
    assert (btc.symbol, btc.bid, btc.ask) == ("BTC/USD", Decimal("1.10"), Decimal("1.20"))
    parser.parse(book([], [["3806.00", "1"]]), RECEIVED_AT)
    [eth] = parser.parse(TRADE, RECEIVED_AT).feeds
    assert (eth.bid, eth.ask) == (None, Decimal("3806.00"))


def test_diff_book_does_not_touch_the_cache() -> None:
    parser = adapter()
    parsed = parser.parse(book([["1", "1"]], [["2", "1"]], "diff_order_book_ethusd"), RECEIVED_AT)
    assert (parsed.kind, parsed.skipped) == (FrameKind.DATA, ["unused_channel"])
    [feed] = parser.parse(TRADE, RECEIVED_AT).feeds
    assert (feed.bid, feed.ask) == (None, None)


def test_frames_for_pairs_not_held_are_skipped() -> None:
    parser = adapter("BTC/USD")
    for frame in (TRADE, BOOK):
        parsed = parser.parse(frame, RECEIVED_AT)
        assert (parsed.kind, parsed.feeds, parsed.skipped) == (
            FrameKind.DATA,
            [],
            ["unknown_symbol"],
        )


def test_trade_falls_back_to_seconds_and_skips_without_time_or_price() -> None:
    [feed] = adapter().parse(trade(microtimestamp=None), RECEIVED_AT).feeds
    assert feed.timestamp == datetime.fromtimestamp(1641343699, UTC)
    no_time = adapter().parse(trade(microtimestamp=None, timestamp=None), RECEIVED_AT)
    assert (no_time.feeds, no_time.skipped) == ([], ["no_time"])
    no_price = adapter().parse(trade(price_str=None), RECEIVED_AT)
    assert (no_price.feeds, no_price.skipped) == ([], ["no_price"])


def test_trade_keeps_price_text_and_accepts_bytes() -> None:
    frame = trade(price_str="0.00001230", price=1.23e-05)
    for raw in (frame, frame.encode()):
        [feed] = adapter().parse(raw, RECEIVED_AT).feeds
        assert str(feed.price) == "0.00001230"


def test_price_is_not_validated_by_the_adapter() -> None:
    [feed] = adapter().parse(trade(price_str="-1.5"), RECEIVED_AT).feeds
    assert feed.price == Decimal("-1.5")


@pytest.mark.parametrize(
    ("frame", "kind", "message", "symbols"),
    [
        (ACK, FrameKind.ACK, "diff_order_book_ethusd", ["ETH/USD"]),
        (
            '{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}',
            FrameKind.ACK,
            "live_trades_btcusd",
            ["BTC/USD"],
        ),
        (
            '{"event":"bts:subscription_succeeded","channel":"live_trades_xrpeur","data":{}}',
            FrameKind.ACK,
            "live_trades_xrpeur",
            [],
        ),
        (ERROR, FrameKind.ERROR, "Incorrect JSON format.", []),
        (
            '{"event":"bts:error","channel":"live_trades_btcusd",'
            '"data":{"code":4009,"message":"Connection is unauthorized."}}',
            FrameKind.ERROR,
            "4009: Connection is unauthorized.",
            ["BTC/USD"],
        ),
        (
            '{"event":"bts:unsubscription_succeeded","channel":"live_trades_btcusd","data":{}}',
            FrameKind.INFO,
            "unsubscribed live_trades_btcusd",
            [],
        ),
        (HEARTBEAT, FrameKind.HEARTBEAT, "success", []),
        (RECONNECT, FrameKind.RECONNECT, "bts:request_reconnect", []),
        (
            '{"event":"bts:request_reconnect","channel":"","data":""}',
            FrameKind.RECONNECT,
            "bts:request_reconnect",
            [],
        ),
    ],
)
def test_control_frames(frame: str, kind: FrameKind, message: str, symbols: list[str]) -> None:
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message, parsed.symbols, parsed.feeds) == (
        kind,
        message,
        symbols,
        [],
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        ("", "malformed"),
        (b"\xff\xfe", "malformed"),
        (TRADE[:60], "malformed"),
        ('{"event":"trade","channel":"live_trades_btcusd",}', "malformed"),
        ('{"event":"trade","channel":"\ud800"}', "malformed"),
        ("[1, 2]", "schema"),
        ('{"channel":"live_trades_btcusd"}', "schema"),
        ('{"event":5}', "schema"),
        ('{"event":"trade","channel":"live_trades_ethusd"}', "schema"),
        (trade(price_str="abc"), "schema"),
        (trade(price_str=""), "schema"),
        (trade(price_str=[1]), "schema"),
        (trade(id="216000477"), "schema"),
        (trade(id=None), "schema"),
        (trade(type="buy"), "schema"),
        (trade(microtimestamp=1641343699596000), "schema"),
        (trade(microtimestamp=""), "schema"),
        (trade(microtimestamp="-1"), "schema"),
        (trade(microtimestamp="1.5"), "schema"),
        (trade(microtimestamp="١٢٣"), "schema"),
        (trade(microtimestamp="9" * 30), "schema"),
        (trade(microtimestamp="9" * 5000), "schema"),
        (trade(microtimestamp=None, timestamp="NaN"), "schema"),
        (book([["abc", "1"]], []), "schema"),
        (book([], [[]]), "schema"),
        (book([["1", "1"]], "x"), "schema"),  # type: ignore[arg-type]
        ('{"event":"data","channel":"order_book_ethusd","data":[]}', "schema"),
        ('{"event":"bts:error","data":{"message":7}}', "schema"),
        ('{"event":"order_created","channel":"live_orders_btcusd","data":{}}', "unknown_type"),
        ('{"event":"mystery","broken":', "malformed"),
    ],
)
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


def test_unknown_event_names_the_event() -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse('{"event":"order_created"}', RECEIVED_AT)
    assert caught.value.detail == "order_created"


def test_fuzzed_frames_raise_only_invalid_frame() -> None:
    """Truncations, wrong types, huge numbers, NaN and empty strings in every field."""
    parser = adapter()
    frames: list[str | bytes] = [TRADE[:n] for n in range(len(TRADE))]
    frames += [BOOK[:n] for n in range(0, len(BOOK), 3)]
    values: list[Any] = ["", "NaN", "-Infinity", "1e999999", 10**40, -1, 1.5, [], {}, True, None]
    for key in ("id", "price_str", "microtimestamp", "timestamp", "type"):
        frames += [trade(**{key: value}) for value in values]
    frames += [book([[value, "1"]], [[value]]) for value in values]
    for frame in frames:
        with contextlib.suppress(InvalidFrame):
            parser.parse(frame, RECEIVED_AT)


def test_subscribe_messages_one_channel_each_book_first() -> None:
    messages = adapter("BTC/USD", "ETH/EUR").subscribe_messages(["BTC/USD", "ETH/EUR"])
    assert [json.loads(message) for message in messages] == [
        {"event": "bts:subscribe", "data": {"channel": "order_book_btcusd"}},
        {"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}},
        {"event": "bts:subscribe", "data": {"channel": "order_book_etheur"}},
        {"event": "bts:subscribe", "data": {"channel": "live_trades_etheur"}},
    ]


def test_resubscribe_sends_only_the_named_pairs() -> None:
    messages = adapter("BTC/USD", "ETH/USD").subscribe_messages(["ETH/USD"])
    channels = [json.loads(message)["data"]["channel"] for message in messages]
    assert channels == ["order_book_ethusd", "live_trades_ethusd"]


def test_ping_message() -> None:
    assert json.loads(adapter().ping_message()) == {"event": "bts:heartbeat"}


def test_limits_are_conservative() -> None:
    limits = EXCHANGE.limits
    assert limits.connects / limits.connects_window_s <= 1
    assert limits.messages_per_s <= 10
    assert 2 * limits.max_symbols / limits.messages_per_s <= 60  # a full subscribe within 1 min


# --- the fast path against the full path ------------------------------------------------


def fast_and_full(frame: str) -> tuple[list[PriceFeed] | None, list[PriceFeed]]:
    return fastpath.fast_and_full(adapter, frame, RECEIVED_AT)


@pytest.mark.parametrize("earlier", ['"x"', '"3.805e3"', '""', "null", "[1]", "3805.44"])
def test_repeated_price_the_last_one_counts_on_both_paths(earlier: str) -> None:
    """JSON lets a key repeat: both paths read ``price_str`` from the last one (the full path
    types it from ``msgspec.Raw``), so an earlier bad value changes nothing. One that is not a
    string or null fails the fast Struct (``str | None``): the fast path gives up and the full
    path makes the same feed."""
    frame = TRADE.replace('"data":{', f'"data":{{"price_str":{earlier},', 1)
    fast, full = fast_and_full(frame)
    assert full == fast_and_full(TRADE)[1]
    assert str(full[0].price) == "3805.44"
    assert fast == (full if earlier[0] in '"n' else None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "Invalid decimal string - at `$.data.price_str`"),
        ([1], "Expected `decimal | null`, got `array` - at `$.data.price_str`"),
    ],
)
def test_a_bad_price_is_typed_before_the_pair(value: Any, message: str) -> None:
    """Kept raw, ``price_str`` is typed before the pair is looked at: ``schema`` with msgspec's
    message and path, as when it was a typed field, for a pair not held too."""
    for channel in ("live_trades_ethusd", "live_trades_dogeusd"):
        with pytest.raises(InvalidFrame) as caught:
            adapter().parse(trade(price_str=value, channel=channel), RECEIVED_AT)
        assert (caught.value.reason, caught.value.detail) == ("schema", message)
