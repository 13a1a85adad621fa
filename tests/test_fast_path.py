"""Every adapter's fast path against its full path: the same feeds, or ``None``.

For a read (a list of frames), the full path is what the collector does without a fast path
(``chrono.collect.session``): each frame through ``parse`` and every feed through
``FeedRules.check``. The fast path (``chrono.exchanges.fast.FastPath``) may give up (``None``);
when it does not, the full path must have seen nothing but data frames and heartbeats, no frame
invalid, no tick skipped or refused, and the same feeds in the same order; and every fast feed's
``text`` must be exactly what the store would have formatted for it (``feed_text``).

Inputs: every recorded frame (``tests/captures``), frames the exchange's simulator renders, and
hypothesis variants of those (random decimal and time texts, wrong JSON types, missing, added
and repeated keys, bad UTF-8, truncations, random bytes), alone and mixed into reads of good
frames, under rules with fewer places or bounds for one symbol; and reads in a row on one
adapter, so that an adapter with state leaves it as the full path would. The fast path must
also be taken for the common frames: one that always gives up fails here.
Run deeper with ``CHRONO_FUZZ_EXAMPLES=5000``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrono.errors import InvalidFeed, InvalidFrame
from chrono.exchanges import binance, bitstamp, bybit, coinbase, gemini, kraken, kraken_v1, okx
from chrono.exchanges.base import Adapter, Exchange, FrameKind
from chrono.exchanges.fast import FastPath, Received, TextRules
from chrono.feeds import Feeds, metadata_text
from chrono.model import Bounds, FeedRules, PriceFeed, feed_text
from chrono.testing.simulators.base import Simulator
from chrono.testing.simulators.binance import BinanceSimulator
from chrono.testing.simulators.bitstamp import BitstampSimulator
from chrono.testing.simulators.bybit import BybitSimulator
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from chrono.testing.simulators.gemini import GeminiSimulator
from chrono.testing.simulators.kraken import KrakenSimulator
from chrono.testing.simulators.okx import OkxSimulator
from tests.recorded import received

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
RECEIVED = Received.of(RECEIVED_AT)
FUZZ = settings(
    max_examples=int(os.environ.get("CHRONO_FUZZ_EXAMPLES", "200")),  # more for a deep run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The products of the recordings (tests/captures), canonical.
COINBASE_RECORDED = ("SKL/USD", "SKL/BTC", "BAND/GBP", "NMR/EUR", "BAND/BTC", "YFI/BTC",
                     "DASH/BTC", "NU/GBP", "CRV/EUR", "SKL/GBP")  # fmt: skip
KRAKEN_V1_RECORDED = ("WAVES/EUR", "XMR/USD", "KSM/BTC", "GRT/ETH", "SC/EUR", "ETH/CHF",
                      "OCEAN/BTC", "OMG/USD", "BTC/CHF", "ADA/BTC")  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One adapter: its registry entry, the symbols it serves, and where its frames come from.

    ``symbols`` are the simulator's (canonical); ``capture_symbols`` those of the recordings.
    ``channels`` picks the simulator's rendered frames this adapter reads; ``client`` is the
    simulated connection's state for ``heartbeats`` (topics, protocol state).
    """

    id: str
    exchange: Exchange
    simulator: Callable[[Sequence[str]], Simulator]
    symbols: tuple[str, ...]
    channels: tuple[str, ...]
    captures: tuple[str, ...] = ()
    capture_symbols: tuple[str, ...] = ()
    heartbeat_topics: tuple[str, ...] = ()
    heartbeat_state: dict[str, Any] = field(default_factory=dict)
    heartbeat_frames: tuple[bytes, ...] = ()  # heartbeats the simulator does not render

    def adapter(self) -> Adapter:
        symbols = dict.fromkeys((*self.symbols, *self.capture_symbols))
        return self.exchange.adapter(self.exchange.symbol_map(list(symbols)), "worker-1")

    def natives(self) -> list[str]:
        return self.exchange.symbol_map(self.symbols).natives()


CASES = [
    Case(
        "coinbase",
        coinbase.EXCHANGE,
        lambda natives: CoinbaseSimulator(symbols=natives),
        ("BTC/USD", "ETH/USD"),
        ("ticker",),
        captures=("coinbase-ticker",),
        capture_symbols=COINBASE_RECORDED,
        heartbeat_topics=("heartbeat",),
    ),
    Case(
        "binance-ticker",
        binance.EXCHANGE,
        lambda natives: BinanceSimulator(symbols=natives),
        ("BTC/USD", "ETH/BTC"),
        ("ticker",),
    ),
    Case(
        "binance-bookTicker",
        binance.EXCHANGE.protocol(binance.BOOK_TICKER),
        lambda natives: BinanceSimulator(symbols=natives),
        ("BTC/USD", "ETH/BTC"),
        ("bookTicker",),
        captures=("binance-bookticker",),
        capture_symbols=("NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"),
    ),
    Case(
        "binance-us-bookTicker",
        binance.US_EXCHANGE.protocol(binance.BOOK_TICKER),
        lambda natives: BinanceSimulator(symbols=natives),
        ("BTC/USD", "ETH/USDT"),
        ("bookTicker",),
        captures=("binance-us-bookticker",),
        capture_symbols=("CRV/USDT", "COMP/USDT", "OMG/BUSD", "ZRX/USDT"),
    ),
]
CASES += [
    Case(
        "okx",
        okx.EXCHANGE,
        lambda natives: OkxSimulator(symbols=natives),
        ("BTC/USDT", "ETH/USDT"),
        ("tickers",),
        captures=("okx-tickers",),
        capture_symbols=("BTC/USDT",),
        heartbeat_frames=(b"pong",),
    ),
    Case(
        "bybit-spot",
        bybit.EXCHANGE,
        lambda natives: BybitSimulator(symbols=natives),
        ("BTC/USDT", "ETH/USDT"),
        ("tickers",),  # the spot channel
        heartbeat_frames=(
            b'{"success":true,"ret_msg":"pong","conn_id":"0970e817-b73e","op":"ping"}',
            b'{"args":["1672916271846"],"op":"pong"}',
        ),
    ),
]
CASES += [
    Case(
        "kraken-v2",
        kraken.EXCHANGE,
        lambda natives: KrakenSimulator(symbols=natives),
        ("BTC/USD", "ETH/USD"),
        ("ticker",),
        heartbeat_topics=("ticker",),
    ),
    Case(
        "kraken-v1",
        kraken_v1.V1_EXCHANGE,
        lambda natives: KrakenSimulator(symbols=natives),
        ("BTC/USD", "ETH/USD"),
        ("v1:ticker",),
        captures=("kraken-v1-ticker",),
        capture_symbols=KRAKEN_V1_RECORDED,
        heartbeat_topics=("v1:ticker",),
        heartbeat_state={"version": "v1"},
    ),
]
CASES += [
    Case(
        "bitstamp",
        bitstamp.EXCHANGE,
        lambda natives: BitstampSimulator(symbols=natives),
        ("BTC/USD", "ETH/USD"),
        ("order_book", "live_trades"),
        heartbeat_frames=(b'{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}',),
    ),
]
CASES += [
    Case(
        "gemini",
        gemini.EXCHANGE,
        lambda natives: GeminiSimulator(symbols=natives),
        ("BTC/USD", "ETH/USD"),
        ("bookTicker",),
    ),
]
IDS = [case.id for case in CASES]


# --- the two paths ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one path made of a read."""

    feeds: list[PriceFeed]
    clean: bool  # only data frames and heartbeats, nothing invalid, skipped or refused
    notes: list[str]
    data: bool  # any data frame: what freshness counts (the session's ``data``)


def full_path(
    case: Case, frames: Sequence[bytes], rules: FeedRules, adapter: Adapter | None = None
) -> Outcome:
    """The collector's frame-by-frame path (``_parse_each`` and ``_valid_feeds``), on a new
    adapter unless given one."""
    adapter = case.adapter() if adapter is None else adapter
    feeds: list[PriceFeed] = []
    notes: list[str] = []
    data = False
    for frame in frames:
        try:
            parsed = adapter.parse(frame, RECEIVED_AT)
        except InvalidFrame as exc:
            notes.append(f"invalid frame: {exc.reason}")
            continue
        if parsed.kind is FrameKind.HEARTBEAT:
            continue
        if parsed.kind is not FrameKind.DATA:
            notes.append(f"control frame: {parsed.kind.value}")
            continue
        data = True
        notes.extend(f"skipped: {reason}" for reason in parsed.skipped)
        for feed in parsed.feeds:
            try:
                rules.check(feed)
            except InvalidFeed as exc:
                notes.append(f"invalid feed: {exc.reason}")
            else:
                feeds.append(feed)
    return Outcome(feeds, not notes, notes, data)


def carries_feeds_or_beats(case: Case, frame: bytes) -> bool:
    """Whether the full path makes a feed of ``frame`` alone or takes it as a heartbeat: such
    a frame alone must take the fast path (one that only moves state, e.g. a book, need not)."""
    full = full_path(case, [frame], FeedRules())
    return full.clean and (bool(full.feeds) or not full.data)


def fast_path(case: Case, frames: Sequence[bytes], rules: FeedRules) -> Feeds | None:
    adapter = case.adapter()
    assert isinstance(adapter, FastPath), f"{case.id} has no fast path"
    return adapter.parse_fast(list(frames), RECEIVED, TextRules(rules))


def check_read(case: Case, frames: Sequence[bytes], rules: FeedRules) -> bool:
    """Assert both paths agree on ``frames``; whether the fast path took the read."""
    fast = fast_path(case, frames, rules)
    if fast is None:
        return False
    full = full_path(case, frames, rules)
    assert full.clean, f"fast path took a read the full path has notes on: {full.notes}"
    assert fast == full.feeds
    assert bool(fast) == full.data, "the session takes a fast read's data from its feeds"
    # The store keeps the columns' texts: the metadata's JSON as the full path's would be.
    assert fast.metadata == [metadata_text(f.metadata) for f in full.feeds]
    assert fast.symbols == [f.symbol for f in full.feeds]
    for feed in fast:
        assert feed.text is not None, "a fast feed without its text"
        assert feed.text == feed_text(msgspec.structs.replace(feed, text=None)), feed
    return True


# --- the frames -------------------------------------------------------------------------------


def simulated(case: Case, trades: int = 20, seed: int = 0) -> list[bytes]:
    """Data frames the simulator renders for ``trades`` trades per market, with heartbeats
    between rounds."""
    natives = case.natives()
    sim = case.simulator(natives)
    topics = {(channel, native) for channel in case.heartbeat_topics for native in natives}
    client: Any = SimpleNamespace(topics=topics, muted=set(), state=dict(case.heartbeat_state))
    frames: list[bytes] = []
    for _ in range(trades):
        for market in sim.markets.values():
            frames.extend(f for ch, f in sim.render(market, market.trade()) if ch in case.channels)
        frames.extend(sim.heartbeats(client))
        frames.extend(case.heartbeat_frames)
    random.Random(seed).shuffle(frames)
    return frames


def recorded(case: Case) -> list[bytes]:
    return [frame.encode() for name in case.captures for frame in received(name)]


BOUNDED = "bounded"


def rules_for(case: Case) -> dict[str, FeedRules]:
    """Default rules, fewer places, and bounds for one symbol that cut through its prices."""
    sample = full_path(case, simulated(case), FeedRules()).feeds
    first = sample[0].symbol
    prices = sorted(f.price for f in sample if f.symbol == first)
    middle = prices[len(prices) // 2]
    return {
        "default": FeedRules(),
        "places": FeedRules(max_places=2),
        BOUNDED: FeedRules(bounds={first: Bounds(prices[0], middle)}),
        "high": FeedRules(bounds={first: Bounds(None, middle)}),
        "low": FeedRules(bounds={first: Bounds(middle, None)}),
    }


# --- recorded and simulated frames: both paths agree, and the fast path is taken -------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_simulated_frames_take_the_fast_path(case: Case) -> None:
    frames = simulated(case)
    assert frames
    for frame in frames:
        taken = check_read(case, [frame], FeedRules())
        assert taken or not carries_feeds_or_beats(case, frame), frame
    assert check_read(case, frames, FeedRules())
    assert fast_path(case, frames, FeedRules())  # feeds, not only heartbeats


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bounds_make_the_fast_path_give_up(case: Case) -> None:
    """A price out of a symbol's bounds is the full path's to count."""
    rules = rules_for(case)
    frames = simulated(case)
    priced = [f for f in frames if full_path(case, [f], FeedRules()).feeds]
    taken = [check_read(case, [frame], rules[BOUNDED]) for frame in priced]
    assert any(taken)
    assert not all(taken)
    assert not check_read(case, frames, rules[BOUNDED])
    for rule in rules.values():
        check_read(case, frames, rule)
        for frame in frames:
            check_read(case, [frame], rule)


@pytest.mark.parametrize("case", [c for c in CASES if c.captures], ids=lambda c: c.id)
def test_recorded_frames(case: Case) -> None:
    """Each recorded frame alone, the whole recording as one read, and its clean frames as one
    read, which the fast path must take."""
    frames = recorded(case)
    clean = []
    for frame in frames:
        check_read(case, [frame], FeedRules())
        if full_path(case, [frame], FeedRules()).clean:
            clean.append(frame)
            taken = check_read(case, [frame], FeedRules())
            assert taken or not carries_feeds_or_beats(case, frame), frame
    check_read(case, frames, FeedRules())
    assert clean
    assert check_read(case, clean, FeedRules())
    for chunk in range(0, len(frames), 7):
        check_read(case, frames[chunk : chunk + 7], FeedRules())


# --- fuzzed frames ----------------------------------------------------------------------------

LITERAL_AMOUNTS = [
    "01.5", "1.50", "1e5", "1E5", "+1", "-1", "0", "0.0", "0.000", "00", " 1", "1 ", "1_0",
    "1.", ".5", "NaN", "nan", "Infinity", "-0", "0.00000001", "1" * 38, "1" * 39,
    "0." + "0" * 17 + "1", "0." + "0" * 18 + "1", "1." + "0" * 18, "1." + "0" * 19, "",
    "\u0661\u0662", "1,5", "0x10", "1.5.5", "67234.56", "67234.560000000",
    "1E-999999999", "1E+999999999", "1" + "0" * 70, "0." + "0" * 70 + "1",
]  # fmt: skip
TIME_FORMS = [
    "{d}T{t}.{f6}Z", "{d}T{t}.{f6}+00:00", "{d}T{t}.{f6}+01:00", "{d}T{t}.{f6}-00:00",
    "{d}T{t}Z", "{d}T{t}.{f3}Z", "{d}T{t}.{f9}Z", "{d}T{t}.{f6}", "{d} {t}.{f6}Z",
    "{d}T{t}.{f6}z", "{d}t{t}.{f6}Z", "{d}T{t},{f6}Z",
]  # fmt: skip
BAD_DATES = ["2024-02-30", "2023-02-29", "2024-13-01", "0000-01-01", "9999-12-31", "2024-1-01"]


@st.composite
def amounts(draw: st.DrawFn) -> str:
    whole = draw(st.sampled_from(["", "0", "00", "1", "9", "67234", "1" * 30, "-1", "+1"]))
    places = draw(st.integers(0, 25))
    fraction = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=places,
                                     max_size=places)))  # fmt: skip
    dot = draw(st.sampled_from([".", ".", "", "e", "E-"]))
    return draw(st.sampled_from([f"{whole}{dot}{fraction}", f"{whole}.{fraction}0"]))


@st.composite
def times(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    date = draw(st.sampled_from([moment.strftime("%Y-%m-%d"), *BAD_DATES]))
    clock = draw(st.sampled_from([moment.strftime("%H:%M:%S"), "24:00:00", "23:59:60"]))
    micro = f"{moment.microsecond:06d}"
    form = draw(st.sampled_from(TIME_FORMS))
    return form.format(d=date, t=clock, f6=micro, f3=micro[:3], f9=micro + "123")


JUNK_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(0, 2**41),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just([]),
    st.just({}),
    st.text(max_size=12),
    st.sampled_from(["BTC-USD", "btcusdt", "XBT/USD", "BTCUSDT", "FOO-BAR", "ticker", "pong"]),
)
VALUES = st.one_of(st.sampled_from(LITERAL_AMOUNTS), amounts(), times(), JUNK_VALUES)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in decoded JSON, leaves and containers."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index)))
    return found


def mutate(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> None:
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new


EXTRA_KEYS = [
    "method", "channel", "type", "event", "op", "id", "error", "code", "msg", "success",
    "stream", "data", "topic", "result", "arg", "e", "u", "ts", "time", "price",
]  # fmt: skip


def near(text: str) -> list[str]:
    """Texts one small edit from ``text``: a digit more, a case changed, a character less."""
    return [text + "0", "0" + text, text.upper(), text.lower(), text[:-1], text.strip("0")]


@st.composite
def json_variants(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with one to three places replaced by other values, removed, or added; and
    maybe a key repeated before itself with another value (JSON lets a key repeat: the last
    one counts, but a decoder checks every one)."""
    try:
        value = json.loads(base)
    except ValueError:  # "pong"
        return draw(byte_variants(base))
    for _ in range(draw(st.integers(1, 3))):
        places = paths(value)
        if not places:
            break
        path = draw(st.sampled_from(places))
        original = _at(value, path)
        new: Any
        if isinstance(original, str) and draw(st.booleans()):
            new = draw(st.sampled_from(near(original)))
        else:
            new = draw(VALUES)
        action = draw(st.sampled_from(["replace"] * 4 + ["delete", "add"]))
        if action == "add":
            parent = _at(value, path[:-1])
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(EXTRA_KEYS))] = new
            continue
        mutate(value, path, new, delete=action == "delete")
    text = json.dumps(value, separators=(",", ":"))
    keys = [p[-1] for p in paths(value) if isinstance(p[-1], str)]
    if keys and draw(st.integers(0, 3)) == 0:
        key = json.dumps(draw(st.sampled_from(keys)))
        at = text.find(key + ":")
        if at >= 0:
            junk = json.dumps(draw(st.one_of(VALUES, st.just(_at(value, ())))))
            text = f"{text[:at]}{key}:{junk},{text[at:]}"
    return text.encode()


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    """The value at ``path`` (``()``: the whole)."""
    for key in path:
        value = value[key]
    return value


@st.composite
def byte_variants(draw: st.DrawFn, base: bytes) -> bytes:
    """Truncated, with bad UTF-8 in it, or random bytes."""
    kind = draw(st.sampled_from(["truncate", "utf8", "random", "splice"]))
    if kind == "truncate":
        return base[: draw(st.integers(0, max(0, len(base) - 1)))]
    if kind == "utf8":
        at = draw(st.integers(0, len(base)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\x00"]))
        return base[:at] + bad + base[at:]
    if kind == "splice":
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.binary(max_size=8)) + base[at:]
    return draw(st.binary(max_size=64))


def frame_variants(bases: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(bases).flatmap(
        lambda base: st.one_of(
            json_variants(base), json_variants(base), json_variants(base), byte_variants(base)
        )
    )


_BASES: dict[str, list[bytes]] = {}
_RULES: dict[str, dict[str, FeedRules]] = {}


def bases(case: Case) -> list[bytes]:
    """Simulated frames and recorded data frames (decodable JSON), computed once per case."""
    if case.id not in _BASES:
        frames = simulated(case, trades=3)
        frames += [f for f in recorded(case) if full_path(case, [f], FeedRules()).clean]
        _BASES[case.id] = frames
    return _BASES[case.id]


def rules(case: Case) -> dict[str, FeedRules]:
    if case.id not in _RULES:
        _RULES[case.id] = rules_for(case)
    return _RULES[case.id]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@FUZZ
@given(data=st.data())
def test_fuzzed_frames(case: Case, data: st.DataObject) -> None:
    """One fuzzed frame alone, under every set of rules."""
    frame = data.draw(frame_variants(bases(case)), label="frame")
    for rule in rules(case).values():
        check_read(case, [frame], rule)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@FUZZ
@given(data=st.data())
def test_fuzzed_reads(case: Case, data: st.DataObject) -> None:
    """Reads mixing good frames with fuzzed ones: a bad frame anywhere decides the read."""
    good = bases(case)
    frames = data.draw(
        st.lists(st.one_of(st.sampled_from(good), frame_variants(good)), min_size=1, max_size=8),
        label="frames",
    )
    rule = rules(case)[data.draw(st.sampled_from(sorted(rules(case))), label="rules")]
    check_read(case, frames, rule)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@FUZZ
@given(price=st.one_of(st.sampled_from(LITERAL_AMOUNTS), amounts()), data=st.data())
def test_fuzzed_amounts(case: Case, price: str, data: st.DataObject) -> None:
    """Every string field of a good frame set to a random decimal text, one at a time."""
    base = data.draw(st.sampled_from([b for b in bases(case) if b[:1] in b"{["]), label="base")
    value = json.loads(base)
    strings = [p for p in paths(value) if isinstance(_at(value, p), str)]
    if not strings:
        return
    mutate(value, data.draw(st.sampled_from(strings), label="field"), price, delete=False)
    frame = json.dumps(value, separators=(",", ":")).encode()
    for rule in rules(case).values():
        check_read(case, [frame], rule)
        check_read(case, [base, frame, base], rule)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@FUZZ
@given(data=st.data())
def test_fuzzed_read_sequences(case: Case, data: st.DataObject) -> None:
    """Reads in a row on one adapter, as a session makes them (the fast path, else the full
    one), against the full path alone on another: an adapter with state (request ids, a last
    trade per pair) must leave it as the full path would, and untouched when it gives up."""
    good = bases(case)
    frame = st.one_of(st.sampled_from(good), st.sampled_from(good), frame_variants(good))
    reads = data.draw(st.lists(st.lists(frame, min_size=1, max_size=5), min_size=1, max_size=4))
    rule = rules(case)[data.draw(st.sampled_from(sorted(rules(case))), label="rules")]
    session, reference = case.adapter(), case.adapter()
    assert isinstance(session, FastPath)
    for frames in reads:
        expected = full_path(case, frames, rule, reference)
        fast = session.parse_fast(frames, RECEIVED, TextRules(rule))
        if fast is None:  # repr: a NaN volume (the full path takes one) is not equal to itself
            assert repr(full_path(case, frames, rule, session)) == repr(expected)
        else:
            assert expected.clean, expected.notes
            assert fast == expected.feeds


# --- what the harness found in full paths ---------------------------------------------------


def test_bitstamp_book_with_bad_utf8_is_malformed() -> None:
    """A book level is kept raw (unchecked) until read: bad UTF-8 in it escaped ``parse``."""
    adapter = bitstamp.EXCHANGE.adapter(bitstamp.EXCHANGE.symbol_map(["BTC/USD"]), "w")
    frame = b'{"data":{"bids":[["\xff1.5","1"]],"asks":[]},"channel":"order_book_btcusd",'
    with pytest.raises(InvalidFrame) as caught:
        adapter.parse(frame + b'"event":"data"}', RECEIVED_AT)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("size", ["1E+999999999", "1E-999999999"])
def test_gemini_size_too_long_to_write_out_is_schema(size: str) -> None:
    """``C`` is written out in metadata: an exponent of a billion ran the collector out of
    memory (the fuzzer's process was OOM-killed) instead of counting a bad frame."""
    adapter = gemini.EXCHANGE.adapter(gemini.EXCHANGE.symbol_map(["BTC/USD"]), "w")
    frame = {"u": 1, "E": 1759240000123456789, "s": "btcusd", "b": "1", "a": "2", "c": "1.5"}
    with pytest.raises(InvalidFrame) as caught:
        adapter.parse(json.dumps(frame | {"C": size}), RECEIVED_AT)
    assert caught.value.reason == "schema"


# --- Coinbase: a repeated key, and a ticker missing amounts ---------------------------------

COINBASE_TICKER = (
    '{"type":"ticker","sequence":9,"product_id":"BTC-USD","price":"67234.56",'
    '"volume_24h":"94381.28000000","best_bid":"67234.55","best_ask":"67234.57",'
    '"time":"2021-04-17T16:43:30.244075Z","trade_id":7}'
)


def coinbase_case() -> Case:
    [case] = [c for c in CASES if c.id == "coinbase"]
    return case


@pytest.mark.parametrize(
    ("key", "earlier"),
    [("price", '"x"'), ("price", "null"), ("time", '"yesterday"'), ("best_bid", "[1]")],
)
def test_coinbase_repeated_key_the_last_one_counts_on_both_paths(key: str, earlier: str) -> None:
    """JSON lets a key repeat: both paths read a ticker's numbers and time from the last one
    (the full path types them from ``msgspec.Raw``), so an earlier bad value changes nothing.
    An earlier value that is not a string fails the fast Struct (its fields are ``str``): the
    fast path gives up and the full path makes the same feed."""
    frame = COINBASE_TICKER.replace("{", f'{{"{key}":{earlier},', 1).encode()
    assert check_read(coinbase_case(), [frame], FeedRules()) == earlier.startswith('"')
    [feed] = full_path(coinbase_case(), [frame], FeedRules()).feeds
    assert (str(feed.price), str(feed.bid)) == ("67234.56", "67234.55")


@pytest.mark.parametrize("missing", ["volume_24h", "best_bid", "best_ask"])
def test_coinbase_ticker_missing_an_amount_takes_the_fast_path(missing: str) -> None:
    ticker = json.loads(COINBASE_TICKER)
    del ticker[missing]
    frame = json.dumps(ticker, separators=(",", ":")).encode()
    assert check_read(coinbase_case(), [frame], FeedRules())
    for bad in ("1.", "01", "1e5", " 1"):
        ticker["price"] = bad
        bad_frame = json.dumps(ticker, separators=(",", ":")).encode()
        assert fast_path(coinbase_case(), [bad_frame], FeedRules()) is None


def test_coinbase_full_path_takes_a_json_number_price() -> None:
    """A price sent as a JSON number is a ``Decimal`` digit for digit (``msgspec.Raw``, typed);
    the fast path leaves it to the full path."""
    frame = COINBASE_TICKER.replace('"price":"67234.56"', '"price":67234.560').encode()
    assert fast_path(coinbase_case(), [frame], FeedRules()) is None
    [feed] = full_path(coinbase_case(), [frame], FeedRules()).feeds
    assert str(feed.price) == "67234.560"
