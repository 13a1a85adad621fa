"""The Coinbase adapter against recorded frames and hand-made edge cases.

Expected values are worked out here from the raw text with the stdlib (``json``, ``Decimal``,
``datetime.fromisoformat``), never with the adapter's own code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges import EXCHANGES
from chrono.exchanges.base import FrameKind
from chrono.exchanges.coinbase import EXCHANGE, CoinbaseAdapter
from tests.recorded import received

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def recorded_frames() -> list[str]:
    return received("coinbase-ticker")


def adapter(*symbols: str) -> CoinbaseAdapter:
    return CoinbaseAdapter(EXCHANGE.symbol_map(symbols or ("BTC/USD", "ETH/USD")), "worker-1")


def ticker(**fields: Any) -> str:
    frame = {
        "type": "ticker",
        "sequence": 93525999403,
        "product_id": "BTC-USD",
        "price": "99728.83",
        "volume_24h": "9756.91661100",
        "best_bid": "99718.01",
        "best_ask": "99728.83",
        "time": "2024-12-07T18:00:00.542551Z",
        "trade_id": 734680334,
    }
    frame.update(fields)
    return json.dumps({key: value for key, value in frame.items() if value is not None})


def expected_time(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def test_registry_entry() -> None:
    assert EXCHANGES["coinbase"] is EXCHANGE
    assert EXCHANGE.default_url == "wss://ws-feed.exchange.coinbase.com"
    assert EXCHANGE.native_symbol("BTC/USD") == "BTC-USD"
    assert EXCHANGE.native_symbol("USDT/USD") == "USDT-USD"
    assert isinstance(EXCHANGE.adapter(EXCHANGE.symbol_map(["ETH/BTC"]), "w"), CoinbaseAdapter)


def test_replay_recorded_frames() -> None:
    frames = recorded_frames()
    parser = adapter()
    feeds, acks = [], []
    for frame in frames:
        parsed = parser.parse(frame, RECEIVED_AT)
        if parsed.kind is FrameKind.ACK:
            acks.append(parsed)
        else:
            assert parsed.kind is FrameKind.DATA
            assert parsed.skipped == []
            [feed] = parsed.feeds
            feeds.append(feed)
    raw_tickers = [raw for raw in map(json.loads, frames) if raw["type"] == "ticker"]
    assert (len(feeds), len(acks), len(raw_tickers)) == (107, 3, 107)
    for feed, raw in zip(feeds, raw_tickers, strict=True):
        base, quote = raw["product_id"].split("-")
        assert feed.symbol == f"{base}/{quote}"
        assert str(feed.price) == raw["price"]
        assert str(feed.volume) == raw["volume_24h"]
        assert (str(feed.bid), str(feed.ask)) == (raw["best_bid"], raw["best_ask"])
        assert feed.timestamp == expected_time(raw["time"])
        assert feed.timestamp.tzinfo is UTC
        assert feed.timestamp.microsecond == int(raw["time"][-7:-1])
        assert feed.received_at == RECEIVED_AT
        assert (feed.source, feed.worker_id) == ("coinbase", "worker-1")
        assert feed.metadata == {
            "native_symbol": raw["product_id"],
            "sequence": raw["sequence"],
            "trade_id": raw["trade_id"],
        }


def test_replay_acks_name_ticker_products() -> None:
    frames = [raw for raw in recorded_frames() if json.loads(raw)["type"] == "subscriptions"]
    messages = [adapter().parse(frame, RECEIVED_AT).message for frame in frames]
    expected = []
    for frame in frames:
        channels = json.loads(frame)["channels"]
        expected.append(
            ",".join(p for c in channels if c["name"] == "ticker" for p in c["product_ids"])
        )
    assert messages == expected
    assert messages[0] == ""  # the first ack lists level2 only
    assert len(messages[2].split(",")) == 10


def test_ticker_keeps_trailing_zeros_and_accepts_bytes() -> None:
    frame = ticker(price="67234.56000000", product_id="ETH-USD")
    for raw in (frame, frame.encode()):
        [feed] = adapter().parse(raw, RECEIVED_AT).feeds
        assert str(feed.price) == "67234.56000000"
        assert feed.symbol == "ETH/USD"
        assert feed.timestamp == datetime(2024, 12, 7, 18, 0, 0, 542551, tzinfo=UTC)


def test_ticker_for_unlisted_product_maps_its_symbol() -> None:
    [feed] = adapter("BTC/USD").parse(ticker(product_id="USDT-USDC"), RECEIVED_AT).feeds
    assert feed.symbol == "USDT/USDC"
    assert feed.metadata["native_symbol"] == "USDT-USDC"


def test_ticker_with_offset_is_converted_to_utc() -> None:
    [feed] = adapter().parse(ticker(time="2024-12-07T20:00:00.000001+02:00"), RECEIVED_AT).feeds
    assert feed.timestamp == datetime(2024, 12, 7, 18, 0, 0, 1, tzinfo=UTC)
    assert feed.timestamp.tzinfo is UTC


def test_untraded_zero_ticker_is_skipped() -> None:
    frame = (
        '{"type":"ticker","sequence":1,"product_id":"HBAR-USD","price":"0","open_24h":"0",'
        '"volume_24h":"0","low_24h":"0","high_24h":"0","volume_30d":"0",'
        '"best_bid":"0.00000","best_ask":"0.00000"}'
    )
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["untraded"])


def test_ticker_without_time_is_skipped() -> None:
    parsed = adapter().parse(ticker(time=None, trade_id=None), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["no_time"])


def test_heartbeat() -> None:
    frame = (
        '{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",'
        '"time":"2014-11-07T08:19:28.464459Z"}'
    )
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.message) == (FrameKind.HEARTBEAT, [], "BTC-USD")


def test_error_frame() -> None:
    frame = (
        '{"type":"error","message":"Failed to subscribe","reason":"BTC-XYZ is not a valid product"}'
    )
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert parsed.kind is FrameKind.ERROR
    assert parsed.message == "Failed to subscribe: BTC-XYZ is not a valid product"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        ('{"type":"ticker","product_id":"BTC-USD"', "malformed"),
        ('{"type":"ticker","product_id":"BTC-USD","price":"1",}', "malformed"),
        (b'{"type":"ticker","product_id":"\xff","price":"1"}', "malformed"),
        ('{"type":"ticker","product_id":"\ud800","price":"1"}', "malformed"),
        ("", "malformed"),
        ("[1, 2]", "schema"),
        ('{"product_id":"BTC-USD"}', "schema"),
        ('{"type":5}', "schema"),
        (ticker(price="abc"), "schema"),
        (ticker(price=None), "schema"),
        (ticker(product_id=7), "schema"),
        (ticker(product_id="BTCUSD"), "schema"),
        (ticker(time="2024-12-07T18:00:00"), "schema"),
        (ticker(time="yesterday"), "schema"),
        (ticker(time="0001-01-01T00:00:00+01:00"), "schema"),
        (ticker(trade_id="12"), "schema"),
        ('{"type":"subscriptions","channels":"ticker"}', "schema"),
        ('{"type":"l2update","product_id":"BTC-USD"}', "unknown_type"),
        ('{"type":"ticker2","broken":', "malformed"),
    ],
)
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


def test_unknown_type_names_the_type() -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse('{"type":"l2update"}', RECEIVED_AT)
    assert caught.value.detail == "l2update"


def test_subscribe_message_lists_products_per_channel() -> None:
    [message] = adapter("BTC/USD", "ETH/BTC").subscribe_messages(["BTC/USD", "ETH/BTC"])
    assert json.loads(message) == {
        "type": "subscribe",
        "channels": [
            {"name": "ticker", "product_ids": ["BTC-USD", "ETH-BTC"]},
            {"name": "heartbeat", "product_ids": ["BTC-USD", "ETH-BTC"]},
        ],
    }


def test_price_is_not_validated_by_the_adapter() -> None:
    """Negative or absurd prices are FeedRules' job; the adapter reports what was sent."""
    [feed] = adapter().parse(ticker(price="-1.5"), RECEIVED_AT).feeds
    assert feed.price == Decimal("-1.5")
