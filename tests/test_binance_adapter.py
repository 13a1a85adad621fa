"""The Binance and Binance.US adapters against recorded frames and hand-made edge cases.

Expected values are worked out here from the raw text with the stdlib (``json``, ``Decimal``,
``datetime``), never with the adapter's own code. The recordings hold ``@bookTicker`` frames
only; the ``24hrTicker`` frames are built from docs/exchanges.md's example, keeping its invariants.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chrono.errors import InvalidFrame
from chrono.exchanges.base import FrameKind, ParsedFrame
from chrono.exchanges.binance import (
    EXCHANGE,
    MAX_PENDING_REQUESTS,
    US_EXCHANGE,
    BinanceAdapter,
    BookTickerAdapter,
    TickerAdapter,
)
from chrono.model import PriceFeed
from tests import fastpath
from tests.recorded import events

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
BOOK = EXCHANGE.protocols["bookTicker"]
US_BOOK = US_EXCHANGE.protocols["bookTicker"]
# The pairs of the two recordings: Binance symbols carry no separator (docs/exchanges.md §8).
RECORDED_PAIRS = {
    "nknusdt": "NKN/USDT",
    "blzeth": "BLZ/ETH",
    "lrcbtc": "LRC/BTC",
    "runeeur": "RUNE/EUR",
    "crvusdt": "CRV/USDT",
    "compusdt": "COMP/USDT",
    "omgbusd": "OMG/BUSD",
    "zrxusdt": "ZRX/USDT",
}


def ticker_adapter(*symbols: str, aliases: dict[str, str] | None = None) -> BinanceAdapter:
    symbol_map = EXCHANGE.symbol_map(symbols or ("BTC/USDT", "ETH/BTC"), aliases)
    return EXCHANGE.adapter(symbol_map, "worker-1")  # type: ignore[return-value]


def book_adapter(*symbols: str) -> BinanceAdapter:
    return BOOK.adapter(BOOK.symbol_map(symbols or ("NKN/USDT",)), "worker-1")  # type: ignore[return-value]


def ticker_event(**fields: Any) -> dict[str, Any]:
    """A 24hrTicker event from docs/exchanges.md's example; derived fields follow its invariants."""
    event: dict[str, Any] = {
        "e": "24hrTicker", "E": 1754006400123, "s": "BTCUSDT", "p": "", "P": "",
        "w": "116902.11234567", "x": "117200.01000000", "c": "116687.66000000",
        "Q": "0.00120000", "b": "116687.65000000", "B": "3.21870000",
        "a": "116687.66000000", "A": "1.94532000", "o": "117200.00000000",
        "h": "118020.00000000", "l": "115800.12000000", "v": "12876.43215000",
        "q": "1505273611.34567812", "O": 0, "C": 0, "F": 5102293112, "L": 5104321987, "n": 0,
    }  # fmt: skip
    event.update(fields)
    change = Decimal(event["c"]) - Decimal(event["o"])
    event["p"] = f"{change:.8f}"
    event["P"] = f"{100 * change / Decimal(event['o']):.3f}"
    event["C"] = event["E"]
    event["O"] = event["C"] - 86_400_000
    event["n"] = event["L"] - event["F"] + 1
    return {key: value for key, value in event.items() if value is not None}


def broken(**fields: Any) -> str:
    """A combined ticker frame with ``fields`` replaced after the invariants (None: removed)."""
    event = {**ticker_event(), **fields}
    return combined({key: value for key, value in event.items() if value is not None})


def combined(event: dict[str, Any], stream: str = "btcusdt@ticker") -> str:
    return json.dumps({"stream": stream, "data": event})


def book_event(**fields: Any) -> dict[str, Any]:
    event = {"u": 499869768, "s": "NKNUSDT", "b": "0.35210000", "B": "672.00000000"}
    event |= {"a": "0.35260000", "A": "3199.00000000"}
    event.update(fields)
    return event


def expected_time(epoch_ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)


# --- registry ---------------------------------------------------------------------------


def test_registry_entries() -> None:
    assert (EXCHANGE.name, EXCHANGE.version) == ("binance", "ticker")
    assert EXCHANGE.default_url == "wss://stream.binance.com:9443/stream"
    assert (US_EXCHANGE.name, US_EXCHANGE.version) == ("binance_us", "ticker")
    assert US_EXCHANGE.default_url == "wss://stream.binance.us:9443/stream"
    assert EXCHANGE.protocol(None) is EXCHANGE
    assert EXCHANGE.protocol("bookTicker") is BOOK
    for default, book in ((EXCHANGE, BOOK), (US_EXCHANGE, US_BOOK)):
        assert (book.name, book.version, book.default_url) == (
            default.name, "bookTicker", default.default_url,
        )  # fmt: skip
        assert book.limits == default.limits
        assert book.quote_aliases == default.quote_aliases
        assert default.ping_interval_s is None
        assert default.rotate_after_s == book.rotate_after_s == 23 * 3600
        symbols = default.symbol_map(["ETH/BTC"])
        assert isinstance(default.adapter(symbols, "w"), TickerAdapter)
        assert isinstance(book.adapter(symbols, "w"), BookTickerAdapter)


def test_limits_stay_within_the_published_ones() -> None:
    limits = EXCHANGE.limits
    assert limits.connects / limits.connects_window_s * 300 <= 300 / 2  # 300 per 5 min per IP
    assert limits.messages_per_s <= 3  # 5 per second, pings and pongs included
    assert limits.max_symbols == 1024


def test_symbol_mapping_and_quote_aliases() -> None:
    assert EXCHANGE.native_symbol("BTC/USDT") == "BTCUSDT"
    assert EXCHANGE.quote_aliases == {"USD": "USDT"}
    assert US_EXCHANGE.quote_aliases == {}
    assert EXCHANGE.symbol_map(["BTC/USD"]).natives() == ["BTCUSDT"]
    assert EXCHANGE.symbol_map(["BTC/USD"], {}).natives() == ["BTCUSD"]
    assert US_EXCHANGE.symbol_map(["BTC/USD", "BTC/USDT"]).natives() == ["BTCUSD", "BTCUSDT"]


def test_usd_alias_feeds_come_back_as_usd() -> None:
    parser = ticker_adapter("BTC/USD")
    [message] = parser.subscribe_messages(["BTC/USD"])
    assert json.loads(message)["params"] == ["btcusdt@ticker"]
    [feed] = parser.parse(combined(ticker_event()), RECEIVED_AT).feeds
    assert feed.symbol == "BTC/USD"
    assert feed.metadata["native_symbol"] == "BTCUSDT"


def test_binance_us_feeds_carry_its_name() -> None:
    symbols = US_EXCHANGE.symbol_map(["BTC/USD"])
    frame = combined(ticker_event(s="BTCUSD"), "btcusd@ticker")
    [feed] = US_EXCHANGE.adapter(symbols, "w").parse(frame, RECEIVED_AT).feeds
    assert (feed.symbol, feed.source) == ("BTC/USD", "binance_us")
    book = json.dumps({"stream": "btcusd@bookTicker", "data": book_event(s="BTCUSD")})
    [feed] = US_BOOK.adapter(symbols, "w").parse(book, RECEIVED_AT).feeds
    assert (feed.symbol, feed.source) == ("BTC/USD", "binance_us")


# --- recorded bookTicker frames ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "exchange", "count"),
    [("binance-bookticker", BOOK, 84), ("binance-us-bookticker", US_BOOK, 128)],
)
def test_replay_recorded_book_tickers(name: str, exchange: Any, count: int) -> None:
    recording = events(name)
    [url] = [e.url for e in recording if e.event == "connect"]
    streams = parse_qs(urlsplit(url).query)["streams"][0].split("/")
    pairs = [RECORDED_PAIRS[s.partition("@")[0]] for s in streams if s.endswith("@bookTicker")]
    symbols = exchange.symbol_map(pairs, {})
    assert symbols.natives() == [s.split("@")[0].upper() for s in streams if "@bookTicker" in s]
    parser = exchange.adapter(symbols, "worker-1")
    frames = [e for e in recording if e.event == "recv"]
    assert len(frames) == count
    for event in frames:
        received_at = datetime.fromtimestamp(event.t, UTC)
        parsed = parser.parse(event.frame, received_at)
        raw = json.loads(event.frame)
        data = raw["data"]
        assert raw["stream"] == f"{data['s'].lower()}@bookTicker"
        mid = (Decimal(data["b"]) + Decimal(data["a"])) / 2
        assert (parsed.kind, parsed.skipped) == (FrameKind.DATA, [])
        [feed] = parsed.feeds
        assert feed.symbol == RECORDED_PAIRS[data["s"].lower()]
        assert feed.price == mid
        assert str(feed.price) == str(mid)  # exact, with the exchange's 8 decimals or more
        assert (str(feed.bid), str(feed.ask), feed.volume) == (data["b"], data["a"], None)
        assert feed.timestamp == feed.received_at == received_at
        assert (feed.source, feed.worker_id) == (exchange.name, "worker-1")
        assert feed.metadata == {"native_symbol": data["s"], "update_id": data["u"], "price": "mid"}


# --- 24hrTicker -------------------------------------------------------------------------


def test_ticker_feed() -> None:
    event = ticker_event()
    assert (event["p"], event["P"]) == ("-512.34000000", "-0.437")  # docs/exchanges.md's values
    for frame in (combined(event), json.dumps(event), combined(event).encode()):
        parsed = ticker_adapter().parse(frame, RECEIVED_AT)
        assert (parsed.kind, parsed.skipped) == (FrameKind.DATA, [])
        [feed] = parsed.feeds
        assert feed.symbol == "BTC/USDT"
        assert str(feed.price) == "116687.66000000"
        assert (str(feed.bid), str(feed.ask)) == ("116687.65000000", "116687.66000000")
        assert str(feed.volume) == "12876.43215000"
        assert feed.timestamp == datetime(2025, 8, 1, 0, 0, 0, 123000, tzinfo=UTC)
        assert feed.timestamp == expected_time(event["E"])
        assert feed.received_at == RECEIVED_AT
        assert (feed.source, feed.worker_id) == ("binance", "worker-1")
        assert feed.metadata == {
            "native_symbol": "BTCUSDT", "first_trade_id": 5102293112, "last_trade_id": 5104321987,
        }  # fmt: skip


@pytest.mark.parametrize("epoch_ms", [0, 1, 999, 1754006400001, 253402300799999])
def test_ticker_time_is_exact_to_the_millisecond(epoch_ms: int) -> None:
    [feed] = ticker_adapter().parse(combined(ticker_event(E=epoch_ms)), RECEIVED_AT).feeds
    assert feed.timestamp == expected_time(epoch_ms)
    assert feed.timestamp.tzinfo is UTC


def test_ticker_for_another_symbol_is_skipped() -> None:
    parsed = ticker_adapter().parse(combined(ticker_event(s="DOGEUSDT")), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["unknown_symbol"])


def test_ticker_without_a_trade_is_skipped() -> None:
    event = ticker_event(c="0.00000000", o="1.00000000")
    parsed = ticker_adapter().parse(combined(event), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["no_price"])


def test_ticker_with_an_empty_book_side_has_no_quote() -> None:
    frame = broken(b="0.00000000", B="0.00000000", v=None)
    [feed] = ticker_adapter().parse(frame, RECEIVED_AT).feeds
    assert (feed.bid, str(feed.ask), feed.volume) == (None, "116687.66000000", None)


def test_a_json_number_price_is_read_from_its_text() -> None:
    frame = broken().replace('"c": "116687.66000000"', '"c": 116687.660000001')
    [feed] = ticker_adapter().parse(frame, RECEIVED_AT).feeds
    assert feed.price.as_tuple() == Decimal("116687.660000001").as_tuple()


def test_price_is_not_validated_by_the_adapter() -> None:
    """Negative or absurd prices are FeedRules' job; the adapter reports what was sent."""
    [feed] = ticker_adapter().parse(combined(ticker_event(c="-1.5")), RECEIVED_AT).feeds
    assert feed.price == Decimal("-1.5")


# --- bookTicker -------------------------------------------------------------------------


def test_book_ticker_bare_and_combined() -> None:
    event = book_event(b="0.00000001", a="0.00000002")
    for frame in (json.dumps(event), combined(event, "nknusdt@bookTicker")):
        [feed] = book_adapter().parse(frame, RECEIVED_AT).feeds
        assert feed.price.as_tuple() == Decimal("0.000000015").as_tuple()
        assert feed.metadata == {"native_symbol": "NKNUSDT", "update_id": 499869768, "price": "mid"}


@pytest.mark.parametrize(
    ("bid", "ask"), [("", "1.0"), ("1.0", ""), ("0.00000000", "1.0"), ("1", "0")]
)
def test_book_ticker_without_both_sides_is_skipped(bid: str, ask: str) -> None:
    parsed = book_adapter().parse(json.dumps(book_event(b=bid, a=ask)), RECEIVED_AT)
    assert (parsed.kind, parsed.feeds, parsed.skipped) == (FrameKind.DATA, [], ["no_quote"])


def test_book_ticker_for_another_symbol_is_skipped() -> None:
    parsed = book_adapter().parse(json.dumps(book_event(s="BTCUSDT")), RECEIVED_AT)
    assert parsed.skipped == ["unknown_symbol"]


def test_each_version_refuses_the_others_stream() -> None:
    with pytest.raises(InvalidFrame) as caught:
        ticker_adapter().parse(combined(book_event(), "nknusdt@bookTicker"), RECEIVED_AT)
    assert (caught.value.reason, caught.value.detail) == ("unknown_type", "nknusdt@bookTicker")
    with pytest.raises(InvalidFrame) as caught:
        ticker_adapter().parse(json.dumps(book_event()), RECEIVED_AT)
    assert (caught.value.reason, caught.value.detail) == ("unknown_type", "bookTicker")
    with pytest.raises(InvalidFrame) as caught:
        book_adapter().parse(json.dumps(ticker_event()), RECEIVED_AT)
    assert (caught.value.reason, caught.value.detail) == ("unknown_type", "24hrTicker")


# --- control frames ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [ticker_adapter, book_adapter])
def test_ack_names_the_symbols_of_its_request(make: Any) -> None:
    parser = make("BTC/USDT", "ETH/BTC", "NKN/USDT")
    first = json.loads(parser.subscribe_messages(["BTC/USDT", "NKN/USDT"])[0])
    second = json.loads(parser.subscribe_messages(["ETH/BTC"])[0])
    assert (first["id"], second["id"]) == (1, 2)
    ack = parser.parse('{"result":null,"id":2}', RECEIVED_AT)
    assert (ack.kind, ack.symbols, ack.message) == (FrameKind.ACK, ["ETH/BTC"], "ETHBTC")
    ack = parser.parse('{"result": null, "id": 1}', RECEIVED_AT)
    assert ack.symbols == ["BTC/USDT", "NKN/USDT"]
    again = parser.parse('{"result":null,"id":1}', RECEIVED_AT)  # an ack is used once
    assert (again.kind, again.symbols) == (FrameKind.ACK, [])


def test_answers_other_than_acks_are_info() -> None:
    parsed = ticker_adapter().parse('{"result":["btcusdt@ticker"],"id":7}', RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.INFO, 'request 7: ["btcusdt@ticker"]')
    parsed = ticker_adapter().parse('{"result":true,"id":"abc"}', RECEIVED_AT)
    assert parsed.kind is FrameKind.INFO


@pytest.mark.parametrize(
    "frame",
    [
        '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}',
        '{"code":2,"msg":"Invalid request: invalid stream","id":1}',
    ],
)
def test_both_error_shapes(frame: str) -> None:
    parser = ticker_adapter()
    parser.subscribe_messages(["ETH/BTC"])
    parsed = parser.parse(frame, RECEIVED_AT)
    assert parsed.kind is FrameKind.ERROR
    assert parsed.message == "Invalid request: invalid stream (code 2, request 1)"
    assert parsed.symbols == ["ETH/BTC"]


def test_error_without_a_request_id() -> None:
    frame = '{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"},"id":null}'
    parsed = ticker_adapter().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.symbols) == (FrameKind.ERROR, [])
    assert parsed.message.startswith("Invalid JSON")
    assert ticker_adapter().parse('{"code":0,"msg":"Unknown property"}', RECEIVED_AT).kind is (
        FrameKind.ERROR
    )


@pytest.mark.parametrize("make", [ticker_adapter, book_adapter])
@pytest.mark.parametrize(
    "frame",
    [
        '{"e":"serverShutdown","E":1770123456789}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    ],
)
def test_server_shutdown_asks_for_a_reconnect(make: Any, frame: str) -> None:
    parsed = make().parse(frame, RECEIVED_AT)
    assert (parsed.kind, parsed.message) == (FrameKind.RECONNECT, "serverShutdown")


def test_no_application_ping() -> None:
    assert ticker_adapter().ping_message() is None
    assert book_adapter().ping_message() is None


# --- subscribe --------------------------------------------------------------------------


def test_subscribe_message_shape() -> None:
    parser = ticker_adapter("BTC/USDT", "ETH/BTC")
    assert [json.loads(m) for m in parser.subscribe_messages(["BTC/USDT", "ETH/BTC"])] == [
        {"method": "SUBSCRIBE", "params": ["btcusdt@ticker", "ethbtc@ticker"], "id": 1}
    ]
    [resubscribe] = parser.subscribe_messages(["ETH/BTC"])  # Binance accepts a repeat
    assert json.loads(resubscribe) == {"method": "SUBSCRIBE", "params": ["ethbtc@ticker"], "id": 2}
    [book] = book_adapter("NKN/USDT").subscribe_messages(["NKN/USDT"])
    assert json.loads(book)["params"] == ["nknusdt@bookTicker"]


def test_subscribe_batches_a_full_connection() -> None:
    symbols = [f"C{i}/USDT" for i in range(EXCHANGE.limits.max_symbols)]
    parser = ticker_adapter(*symbols)
    requests = [json.loads(m) for m in parser.subscribe_messages(symbols)]
    assert [len(r["params"]) for r in requests] == [200] * 5 + [24]
    assert [r["id"] for r in requests] == [1, 2, 3, 4, 5, 6]
    assert [p for r in requests for p in r["params"]] == [f"c{i}usdt@ticker" for i in range(1024)]
    assert all(len(m) < 8192 for m in parser.subscribe_messages(symbols))
    ack = parser.parse('{"result":null,"id":6}', RECEIVED_AT)
    assert ack.symbols == symbols[1000:]


def test_pending_requests_are_bounded() -> None:
    parser = ticker_adapter("BTC/USDT")
    for _ in range(MAX_PENDING_REQUESTS + 1):
        parser.subscribe_messages(["BTC/USDT"])
    assert parser.parse('{"result":null,"id":1}', RECEIVED_AT).symbols == []
    assert parser.parse('{"result":null,"id":2}', RECEIVED_AT).symbols == ["BTC/USDT"]


# --- bad frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed"),
        ("", "malformed"),
        (b"\xff\xfe", "malformed"),
        ('{"stream":"btcusdt@ticker","data":{"e":"24hrTicker"', "malformed"),
        ('{"stream":"btcusdt@ticker","data":{"s":"\xff"}}'.encode("latin-1"), "malformed"),
        ('{"result":null,"id":1,}', "malformed"),
        ("[1, 2]", "schema"),
        ("{}", "schema"),
        ('{"stream":5,"data":{}}', "schema"),
        ('{"stream":"btcusdt@ticker"}', "schema"),
        ('{"stream":"btcusdt@ticker","data":null}', "schema"),
        ('{"stream":"btcusdt@ticker","data":[]}', "schema"),
        ('{"result":null,"id":1.5}', "schema"),
        ('{"result":null,"id":true}', "schema"),
        ('{"error":"oops","id":1}', "schema"),
        ('{"error":{"code":"2","msg":"x"},"id":1}', "schema"),
        ('{"e":5}', "schema"),
        (broken(c="abc"), "schema"),
        (broken(c=None), "schema"),
        (broken(c=""), "schema"),
        (broken(s=7), "schema"),
        (broken(E="1754006400123"), "schema"),
        (broken(E=-1), "schema"),
        (broken(E=10**20), "schema"),
        (broken(E=253402300800000), "schema"),  # year 10000
        (broken(F="12"), "schema"),
        ('{"stream":"btcusdt@depth","data":{}}', "unknown_type"),
        ('{"e":"aggTrade","E":1,"s":"BTCUSDT"}', "unknown_type"),
    ],
)
def test_bad_frames_raise_invalid_frame(frame: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        ticker_adapter().parse(frame, RECEIVED_AT)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"b": "abc"}, "schema"),
        ({"b": 0.35}, "schema"),
        ({"a": None}, "schema"),
        ({"u": "1"}, "schema"),
        ({"s": None}, "schema"),
        ({"b": "sNaN"}, "schema"),
        ({"b": "Infinity", "a": "-Infinity"}, "schema"),
        ({"b": "1e-999999", "a": "1e999999"}, "schema"),  # no exact mid in 60 digits
    ],
)
def test_bad_book_tickers_raise_invalid_frame(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        book_adapter().parse(json.dumps(book_event(**fields)), RECEIVED_AT)
    assert caught.value.reason == reason


FUZZ_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 10**30, -(10**30), 10**400, float("nan"), "", "NaN", "sNaN",
    "-Infinity", "1e999999999",
    "0", "abc", [], {}, "\u0000", "9" * 5000,
]  # fmt: skip


def _parse_or_invalid(parser: BinanceAdapter, frame: str | bytes) -> ParsedFrame | None:
    try:
        return parser.parse(frame, RECEIVED_AT)
    except InvalidFrame:
        return None


@pytest.mark.parametrize("make", [ticker_adapter, book_adapter])
def test_fuzz_only_invalid_frame_escapes(make: Any) -> None:
    rng = random.Random(7)
    parser = make("BTC/USDT", "NKN/USDT")
    samples = [
        combined(ticker_event()),
        json.dumps(ticker_event()),
        combined(book_event(), "nknusdt@bookTicker"),
        json.dumps(book_event()),
        '{"result":null,"id":1}',
        '{"error":{"code":2,"msg":"x"},"id":2}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
    ]
    for sample in samples:
        for cut in range(len(sample)):
            _parse_or_invalid(parser, sample[:cut])
            _parse_or_invalid(parser, sample.encode()[:cut])
        raw = json.loads(sample)
        body = raw.get("data", raw)
        for key in list(body):
            for value in FUZZ_VALUES:
                _parse_or_invalid(parser, json.dumps({**raw, **_with(raw, key, value)}))
    for _ in range(2000):
        frame = bytearray(rng.choice(samples).encode())
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        _parse_or_invalid(parser, bytes(frame))


def _with(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    if "data" in raw and isinstance(raw["data"], dict):
        return {"data": {**raw["data"], key: value}}
    return {key: value}


# --- the fast path against the full path ------------------------------------------------


def fast_and_full(frame: str) -> tuple[list[PriceFeed] | None, list[PriceFeed]]:
    return fastpath.fast_and_full(ticker_adapter, frame, RECEIVED_AT)


@pytest.mark.parametrize(
    ("key", "earlier"),
    [("c", '"x"'), ("c", '"1e5"'), ("c", "null"), ("b", '"01"'), ("a", "[1]"), ("v", '"-1"')],
)
def test_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str) -> None:
    """JSON lets a key repeat: both paths read a ticker's decimals from the last one (the full
    path types them from ``msgspec.Raw``), so an earlier bad value changes nothing. One that is
    not a string fails the fast Struct (its fields are ``str``): the fast path gives up and the
    full path makes the same feed."""
    good = json.dumps({"stream": "btcusdt@ticker", "data": ticker_event()}, separators=(",", ":"))
    frame = good.replace('"data":{', f'"data":{{"{key}":{earlier},', 1)
    fast, full = fast_and_full(frame)
    assert full == fast_and_full(good)[1]
    assert [str(full[0].price), str(full[0].bid), str(full[0].volume)] == [
        "116687.66000000", "116687.65000000", "12876.43215000",
    ]  # fmt: skip
    assert fast == (full if earlier.startswith('"') else None)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("c", "x", "Invalid decimal string - at `$.c`"),
        ("c", None, "Expected `decimal`, got `null` - at `$.c`"),
        ("v", [1], "Expected `decimal | null`, got `array` - at `$.v`"),
    ],
)
def test_a_bad_decimal_is_typed_before_the_symbol(key: str, value: Any, message: str) -> None:
    """Kept raw, a decimal is typed before the symbol is looked at: ``schema`` with msgspec's
    message and path, as when it was a typed field, for a symbol not held too."""
    for symbol in ("BTCUSDT", "DOGEUSDT"):
        with pytest.raises(InvalidFrame) as caught:
            ticker_adapter().parse(combined(ticker_event(s=symbol) | {key: value}), RECEIVED_AT)
        assert (caught.value.reason, caught.value.detail) == ("schema", message)


def test_a_ticker_missing_a_quote_or_volume_is_the_full_paths() -> None:
    """Binance always sends ``b``, ``a`` and ``v``; a ticker without one is left to the full
    path, which takes it."""
    for missing in ("b", "a", "v"):
        fast, full = fast_and_full(broken(**{missing: None}))
        assert fast is None
        assert len(full) == 1
