"""The Gemini adapter (current API, ``wss://ws.gemini.com``) against documented frames.

There is no recording for this API in tests/captures: the frames are docs/exchanges.md §5's
bookTicker, response envelope and error, varied field by field. Expected values are worked out
here with the stdlib (``json``, ``Decimal``, integer arithmetic on ``E``), never with the
adapter's own code.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind
from chrono.exchanges.gemini import (
    EXCHANGE,
    MAX_PENDING_REQUESTS,
    MAX_STREAMS_PER_REQUEST,
    GeminiAdapter,
)
from chrono.model import PriceFeed
from tests import fastpath

RECEIVED_AT = datetime(2025, 9, 30, 13, 46, 41, 5, tzinfo=UTC)
# docs/exchanges.md §5, verbatim
DOC_BOOK_TICKER = (
    '{"u":12345678,"E":1759240000123456789,"s":"btcusd","b":"109876.12","B":"0.5",'
    '"a":"109876.45","A":"1.25","c":"109876.30","C":"0.01"}'
)
DOC_ERROR = '{"id":"1","status":400,"error":{"code":-1002,"msg":"Invalid stream"}}'


def adapter(*symbols: str) -> GeminiAdapter:
    return GeminiAdapter(EXCHANGE.symbol_map(symbols or ("BTC/USD", "ETH/USD")), "worker-1")


def book_ticker(**fields: Any) -> str:
    """The documented frame with ``fields`` replaced (``None`` removes a key)."""
    frame = json.loads(DOC_BOOK_TICKER)
    frame.update(fields)
    return json.dumps({key: value for key, value in frame.items() if value is not None})


def expected_time(nanos: int) -> datetime:
    """ns -> UTC by integer arithmetic: whole seconds, then µs truncated (never rounded)."""
    seconds, rest = divmod(nanos, 10**9)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=rest // 1000)


def test_registry_entry() -> None:
    assert EXCHANGE.name == "gemini"
    assert EXCHANGE.default_url == "wss://ws.gemini.com"
    assert EXCHANGE.native_symbol("BTC/USD") == "btcusd"
    assert EXCHANGE.native_symbol("ETH/GUSD") == "ethgusd"
    assert EXCHANGE.quote_aliases == {}
    assert EXCHANGE.ping_interval_s is not None
    assert EXCHANGE.ping_interval_s > 0
    assert isinstance(EXCHANGE.adapter(EXCHANGE.symbol_map(["ETH/BTC"]), "w"), GeminiAdapter)


def test_limits_stay_inside_the_binance_model() -> None:
    """Nothing documented for this API: at or below Binance's 5 msg/s and 1024 streams."""
    limits = EXCHANGE.limits
    assert limits.messages_per_s <= 5
    assert limits.max_symbols <= 1024
    assert limits.connects / limits.connects_window_s <= 1


def test_symbol_map_keeps_quotes_strict_unless_aliased() -> None:
    strict = EXCHANGE.symbol_map(["BTC/USD", "BTC/USDT", "ETH/GUSD"])
    assert strict.natives() == ["btcusd", "btcusdt", "ethgusd"]
    aliased = EXCHANGE.symbol_map(["BTC/USD"], {"USD": "GUSD"})
    assert aliased.natives() == ["btcgusd"]
    parser = GeminiAdapter(aliased, "w")
    [feed] = parser.parse(book_ticker(s="btcgusd"), RECEIVED_AT).feeds
    assert (feed.symbol, feed.metadata["native_symbol"]) == ("BTC/USD", "btcgusd")


def test_documented_book_ticker_is_one_exact_feed() -> None:
    raw = json.loads(DOC_BOOK_TICKER)
    parsed = adapter().parse(DOC_BOOK_TICKER, RECEIVED_AT)
    assert (parsed.kind, parsed.skipped) == (FrameKind.DATA, [])
    assert parsed.feeds == [
        PriceFeed(
            symbol="BTC/USD",
            price=Decimal(raw["c"]),
            timestamp=expected_time(raw["E"]),
            received_at=RECEIVED_AT,
            source="gemini",
            worker_id="worker-1",
            volume=None,
            bid=Decimal(raw["b"]),
            ask=Decimal(raw["a"]),
            metadata={"native_symbol": "btcusd", "update_id": 12345678, "last_size": "0.01"},
        )
    ]
    [feed] = parsed.feeds
    assert feed.timestamp == datetime(2025, 9, 30, 13, 46, 40, 123456, tzinfo=UTC)
    assert feed.timestamp.tzinfo is UTC
    assert str(feed.price) == "109876.30"


def test_nanoseconds_are_truncated_not_rounded() -> None:
    for nanos, micro in ((1759240000000000999, 0), (1759240000000001000, 1), (999, 0)):
        [feed] = adapter().parse(book_ticker(E=nanos), RECEIVED_AT).feeds
        assert feed.timestamp == expected_time(nanos)
        assert feed.timestamp.microsecond == micro


def test_frame_as_bytes_and_trailing_zeros() -> None:
    frame = book_ticker(c="67234.56000000", s="ethusd")
    for raw in (frame, frame.encode()):
        [feed] = adapter().parse(raw, RECEIVED_AT).feeds
        assert (feed.symbol, str(feed.price)) == ("ETH/USD", "67234.56000000")


def test_json_number_prices_stay_exact() -> None:
    frame = DOC_BOOK_TICKER.replace('"c":"109876.30"', '"c":109876.30')
    [feed] = adapter().parse(frame, RECEIVED_AT).feeds
    assert str(feed.price) == "109876.30"


@pytest.mark.parametrize(
    ("fields", "bid", "ask"),
    [
        ({"b": ""}, None, "109876.45"),  # the production frame that crashed a strict parser
        ({"b": "", "B": ""}, None, "109876.45"),
        ({"a": "", "A": ""}, "109876.12", None),
        ({"b": "", "a": ""}, None, None),
        ({"b": None, "B": None}, None, "109876.45"),
    ],
)
def test_empty_levels_are_none(fields: dict[str, Any], bid: str | None, ask: str | None) -> None:
    [feed] = adapter().parse(book_ticker(**fields), RECEIVED_AT).feeds
    assert feed.bid == (None if bid is None else Decimal(bid))
    assert feed.ask == (None if ask is None else Decimal(ask))
    assert str(feed.price) == "109876.30"


@pytest.mark.parametrize("fields", [{"c": None, "C": None}, {"c": "", "C": ""}, {"c": None}])
def test_book_ticker_without_trade_is_skipped(fields: dict[str, Any]) -> None:
    parsed = adapter().parse(book_ticker(**fields), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["no_trade"])


def test_c_null_is_no_trade() -> None:
    frame = DOC_BOOK_TICKER.replace('"c":"109876.30"', '"c":null')
    assert adapter().parse(frame, RECEIVED_AT).skipped == ["no_trade"]


def test_last_size_absent_is_none() -> None:
    [feed] = adapter().parse(book_ticker(C=None), RECEIVED_AT).feeds
    assert feed.metadata["last_size"] is None


def test_unknown_symbol_is_skipped_not_guessed() -> None:
    parsed = adapter("BTC/USD").parse(book_ticker(s="solusd"), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["unknown_symbol"])
    # the legacy API's uppercase spelling is not this API's symbol
    assert adapter("BTC/USD").parse(book_ticker(s="BTCUSD"), RECEIVED_AT).skipped == [
        "unknown_symbol"
    ]


def test_repeated_last_trade_at_a_later_time_is_a_new_feed() -> None:
    """bookTicker repeats ``c`` on every book change; the feed identity includes the time."""
    parser = adapter()
    [first] = parser.parse(DOC_BOOK_TICKER, RECEIVED_AT).feeds
    later = book_ticker(u=12345679, E=1759240000223456789, b="109876.20")
    [again] = parser.parse(later, RECEIVED_AT).feeds
    [same] = parser.parse(DOC_BOOK_TICKER, RECEIVED_AT).feeds
    assert first.price == again.price
    assert first.key() != again.key()
    assert first.key() == same.key()


def test_subscribe_message_shape() -> None:
    parser = adapter("BTC/USD", "ETH/BTC")
    [message] = parser.subscribe_messages(["BTC/USD", "ETH/BTC"])
    assert json.loads(message) == {
        "id": "1",
        "method": "subscribe",
        "params": ["btcusd@bookTicker", "ethbtc@bookTicker"],
    }


def test_subscribe_batches_within_the_cap_and_acks_name_each_batch() -> None:
    symbols = [f"C{n}/USD" for n in range(2 * MAX_STREAMS_PER_REQUEST + 20)]
    assert len(symbols) <= EXCHANGE.limits.max_symbols
    parser = adapter(*symbols)
    messages = [json.loads(m) for m in parser.subscribe_messages(symbols)]
    sizes = [len(m["params"]) for m in messages]
    assert sizes == [MAX_STREAMS_PER_REQUEST, MAX_STREAMS_PER_REQUEST, 20]
    assert [m["id"] for m in messages] == ["1", "2", "3"]
    assert [p for m in messages for p in m["params"]] == [
        f"c{n}usd@bookTicker" for n in range(len(symbols))
    ]
    for message in reversed(messages):  # responses may come in any order
        ack = parser.parse(json.dumps({"id": message["id"], "status": 200}), RECEIVED_AT)
        assert ack.kind is FrameKind.ACK
        assert ack.symbols == [p.split("@")[0].upper()[:-3] + "/USD" for p in message["params"]]
        assert ack.message == ",".join(p.split("@")[0] for p in message["params"])


def test_resubscribe_is_a_plain_subscribe_with_a_new_id() -> None:
    parser = adapter()
    parser.subscribe_messages(["BTC/USD", "ETH/USD"])
    [again] = parser.subscribe_messages(["ETH/USD"])
    assert json.loads(again) == {"id": "2", "method": "subscribe", "params": ["ethusd@bookTicker"]}
    ack = parser.parse('{"id":"2","status":200,"result":null}', RECEIVED_AT)
    assert (ack.kind, ack.symbols) == (FrameKind.ACK, ["ETH/USD"])


def test_ack_accepts_an_integer_id_and_is_used_once() -> None:
    parser = adapter()
    parser.subscribe_messages(["BTC/USD"])
    assert parser.parse('{"id":1,"status":200}', RECEIVED_AT).symbols == ["BTC/USD"]
    assert parser.parse('{"id":"1","status":200}', RECEIVED_AT).kind is FrameKind.INFO


def test_error_names_the_refused_symbols() -> None:
    parser = adapter()
    parser.subscribe_messages(["BTC/USD", "ETH/USD"])
    parsed = parser.parse(DOC_ERROR, RECEIVED_AT)
    assert parsed.kind is FrameKind.ERROR
    assert parsed.symbols == ["BTC/USD", "ETH/USD"]
    assert parsed.message == "Invalid stream (code -1002, status 400, id 1)"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (DOC_ERROR, "Invalid stream (code -1002, status 400, id 1)"),
        (
            '{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid request"}}',
            "Invalid request (code -1000, status 400, id None)",
        ),
        ('{"id":"9","status":503}', "error (status 503, id 9)"),
        ('{"id":"9","status":200,"error":{"msg":"odd"}}', "odd (status 200, id 9)"),
    ],
)
def test_error_shapes(frame: str, message: str) -> None:
    parsed = adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message, parsed.symbols) == (FrameKind.ERROR, message, [])


def test_ping_and_its_reply() -> None:
    parser = adapter()
    parser.subscribe_messages(["BTC/USD"])
    ping = json.loads(parser.ping_message())
    assert ping == {"id": "2", "method": "ping"}
    parsed = parser.parse('{"id":"2","status":200,"result":{}}', RECEIVED_AT)
    assert (parsed.kind, parsed.feeds) == (FrameKind.HEARTBEAT, [])


def test_responses_to_unknown_ids_are_info() -> None:
    parsed = adapter().parse('{"id":"77","status":200,"result":["btcusd@bookTicker"]}', RECEIVED_AT)
    assert parsed.kind is FrameKind.INFO
    assert parsed.message == 'id 77: ["btcusd@bookTicker"]'
    assert adapter().parse('{"id":"5","status":200}', RECEIVED_AT).kind is FrameKind.INFO
    odd = adapter().parse(b'{"id":"5","status":200,"result":"\xff"}', RECEIVED_AT)
    assert (odd.kind, odd.message) == (FrameKind.INFO, 'id 5: "\ufffd"')


def test_pending_requests_are_bounded() -> None:
    """The oldest unanswered ids are forgotten; their late answer reads as INFO."""
    parser = adapter()
    first = json.loads(parser.ping_message())["id"]
    for _ in range(MAX_PENDING_REQUESTS):
        parser.ping_message()
    late = parser.parse(json.dumps({"id": first, "status": 200}), RECEIVED_AT)
    assert late.kind is FrameKind.INFO
    newest = str(int(first) + MAX_PENDING_REQUESTS)
    assert parser.parse(json.dumps({"id": newest, "status": 200}), RECEIVED_AT).kind is (
        FrameKind.HEARTBEAT
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        ("", "malformed"),
        (DOC_BOOK_TICKER[:-1], "malformed"),
        ('{"u":1,"s":"\ud800"}', "malformed"),
        (b'{"u":1,"E":1,"s":"\xff"}', "malformed"),
        ("[1, 2]", "schema"),
        ("42", "schema"),
        (book_ticker(c="abc"), "schema"),
        (book_ticker(c="NaN-ish"), "schema"),
        (book_ticker(b="1.2.3"), "schema"),
        (book_ticker(C="x"), "schema"),
        (book_ticker(c=[1]), "schema"),
        (book_ticker(u="12"), "schema"),
        (book_ticker(E="1759240000123456789"), "schema"),
        (book_ticker(E=1.5), "schema"),
        (book_ticker(E=None), "schema"),
        (book_ticker(E=0), "schema"),
        (book_ticker(E=-1), "schema"),
        (book_ticker(E=10**30), "schema"),
        (book_ticker(s=None), "schema"),
        (book_ticker(s=5), "schema"),
        ('{"id":"1"}', "schema"),
        ('{"id":"1","status":"200"}', "schema"),
        ('{"id":true,"status":200}', "schema"),
        ('{"id":"1","status":400,"error":"bad"}', "schema"),
        ('{"e":"depthUpdate","E":1,"s":"btcusd","U":1,"u":2,"b":[],"a":[]}', "unknown_type"),
        ('{"E":1759240000123456789,"s":"btcusd","t":1,"p":"1","q":"1","m":true}', "unknown_type"),
        ('{"lastUpdateId":1,"bids":[],"asks":[]}', "unknown_type"),
        ("{}", "unknown_type"),
    ],
)
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


def test_unknown_type_names_the_event() -> None:
    with pytest.raises(InvalidFrame) as caught:
        adapter().parse('{"e":"depthUpdate","u":5}', RECEIVED_AT)
    assert caught.value.detail == "depthUpdate"


def mutations(rng: random.Random) -> list[str | bytes]:
    """Truncations, wrong types, huge numbers, NaN and empty strings, flipped bytes."""
    base = json.loads(DOC_BOOK_TICKER)
    values: list[Any] = [
        None, "", "NaN", "Infinity", "-0", "1e999999", 10**40, -(10**40), 1.5, True, [], {},
        "٣", " 1 ", "0x10", "1_000", "\u0000",
    ]  # fmt: skip
    frames: list[str | bytes] = []
    for text in (DOC_BOOK_TICKER, DOC_ERROR, '{"id":"1","status":200,"result":null}'):
        frames += [text[:cut] for cut in range(len(text))]
    for key in base:
        for value in values:
            frames.append(json.dumps(base | {key: value}))
    for text in (DOC_BOOK_TICKER, '{"id":"1","status":200,"result":{"serverTime":"x"}}'):
        for _ in range(300):
            data = bytearray(text.encode())
            data[rng.randrange(len(data))] = rng.randrange(256)
            frames.append(bytes(data))
    return frames


def test_fuzzed_frames_raise_only_invalid_frame() -> None:
    parser = adapter()
    parser.subscribe_messages(["BTC/USD"])
    outcomes: Counter[str] = Counter()
    for frame in mutations(random.Random(7)):
        try:
            parser.parse(frame, RECEIVED_AT)
        except InvalidFrame as exc:
            outcomes[exc.reason] += 1
        else:
            outcomes["parsed"] += 1
    assert {"parsed", "malformed", "schema"} <= set(outcomes)
    assert set(outcomes) <= {"parsed", "malformed", "schema", "unknown_type"}


def test_price_is_not_validated_by_the_adapter() -> None:
    """Negative, zero or NaN prices are FeedRules' job; the adapter reports what was sent."""
    for text in ("-1.5", "0", "NaN"):
        [feed] = adapter().parse(book_ticker(c=text), RECEIVED_AT).feeds
        assert str(feed.price) == text


# --- the fast path: the same feeds as the full path, or none --------------------------------


def fast_feeds(frame: str) -> list[PriceFeed] | None:
    return fastpath.fast_feeds(adapter, frame, RECEIVED_AT)


@pytest.mark.parametrize(
    ("key", "earlier", "fast"),
    [
        ("c", '"x"', True),
        ("c", '""', True),
        ("c", "null", False),
        ("b", "null", True),
        ("b", "[1]", False),
        ("a", "1.5", False),
        ("C", '"1E+999999999"', True),
    ],
)
def test_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str, fast: bool) -> None:
    """JSON lets a key repeat: both paths read the numbers from the last one (the full path
    types them from ``msgspec.Raw``), so an earlier bad value changes nothing. An earlier value
    the fast Struct's ``str`` (or ``str | None``) field refuses makes the fast path give up
    and the full path makes the same feed."""
    frame = DOC_BOOK_TICKER.replace("{", f'{{"{key}":{earlier},', 1)
    assert (fast_feeds(frame) is not None) is fast
    assert (
        adapter().parse(frame, RECEIVED_AT).feeds
        == adapter().parse(DOC_BOOK_TICKER, RECEIVED_AT).feeds
    )


@pytest.mark.parametrize("fields", [{"b": ""}, {"a": None}, {"C": ""}, {"C": None}, {"b": None}])
def test_missing_or_empty_levels_and_size_take_the_fast_path(fields: dict[str, Any]) -> None:
    frame = book_ticker(**fields)
    [feed] = fast_feeds(frame) or []
    assert feed == adapter().parse(frame, RECEIVED_AT).feeds[0]


@pytest.mark.parametrize(
    ("key", "text"),
    [("c", "1e5"), ("c", "01"), ("c", "1\n"), ("c", ""), ("b", "1."), ("a", "-1"),
     ("C", "1E+999999999"), ("C", "1" * 21), ("c", "1,2"), ("b", "1,2")],
)  # fmt: skip
def test_text_not_in_canonical_form_is_left_to_the_full_path(key: str, text: str) -> None:
    """Text the store would not keep as sent: the full path decides (a feed, a skip or a bad
    frame)."""
    assert fast_feeds(book_ticker(**{key: text})) is None
