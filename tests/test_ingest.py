"""``POST /internal/ingest`` over real HTTP against a whole service: keys, the envelope, each
feed checked on its own, digits kept, duplicates counted, rows really in SQLite, body limits."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from chrono.api.protocol import MAX_BODY_BYTES
from chrono.model import PriceFeed, decimal_text, time_text, utc_now
from chrono.service import Service
from chrono.store.sqlite import SQLiteStore
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY, Running, service_config
from tests.waiting import wait_until

# JSON numbers written from Decimal text as they are ("67234.560000", "1E-7"): no float.
_numbers = msgspec.json.Encoder(decimal_format="number")
_strings = msgspec.json.Encoder()
# Feed times a few minutes old, on whole seconds, distinct per test run.
T0 = utc_now().replace(microsecond=0) - timedelta(minutes=10)


@pytest.fixture
async def live(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """The service with a 20 ms batch interval, so that ingested rows reach SQLite at once."""
    service = Service(service_config(tmp_path, batch={"max_interval_ms": 20}))
    port = await nursery.start(service.run)
    yield Running(service, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    service.stop()


@pytest.fixture
async def http(live: Running) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {INTERNAL_KEY}"}
    async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=20) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


_DROP = object()  # feed(..., volume=_DROP) leaves the field out


def feed(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A feed as the seed sends it; ``i`` moves its time by i ms (a new feed key)."""
    item: dict[str, Any] = {
        "symbol": "BTC/USD",
        "price": "67234.56",
        "volume": "12.50",
        "source": "edge_coinbase",
        "timestamp": time_text(T0 + timedelta(milliseconds=i)),
        "metadata": {"trade_id": i},
    }
    item.update(fields)
    return {k: v for k, v in item.items() if v is not _DROP}


def envelope(feeds: list[dict[str, Any]], worker_id: str = "edge-1") -> dict[str, Any]:
    return {"worker_id": worker_id, "timestamp": time_text(utc_now()), "feeds": feeds}


async def post(
    http: httpx.AsyncClient, body: Any, *, numbers: bool = False, **kwargs: Any
) -> httpx.Response:
    encoder = _numbers if numbers else _strings
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return await http.post(
        "/internal/ingest", content=encoder.encode(body), headers=headers, **kwargs
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return body


def assert_reply(response: httpx.Response, **expected: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {
        "status",
        "ingested",
        "duplicates",
        "failed",
        "errors",
        "latency_ms",
        "message",
    }
    assert body["latency_ms"] >= 0
    assert body["message"]
    for key, value in expected.items():
        assert body[key] == value, (key, body)
    return body


async def stored(live: Running, count: int, symbol: str = "BTC/USD") -> list[PriceFeed]:
    """The rows of ``symbol`` once the writer has written ``count`` feeds in all."""
    await wait_until(lambda: live.service.writer.feeds_written >= count)
    start, end = T0 - timedelta(days=1), utc_now() + timedelta(days=1)
    return await live.service.store.feeds_between(symbol, start, end)


def raw_rows(live: Running, sql: str) -> list[tuple[Any, ...]]:
    """The SQLite text itself (read-only), where reading back through Decimal would hide it."""
    store = live.service.store
    assert isinstance(store, SQLiteStore)
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- success, keys -------------------------------------------------------------------------


async def test_feeds_are_stored_digit_for_digit(live: Running, http: httpx.AsyncClient) -> None:
    feeds = [
        feed(0, price=Decimal("67234.560000"), volume=Decimal("9756.91661100")),
        feed(1, price=Decimal("1E-7"), volume=Decimal("0"), symbol="PEPE/USD"),
        feed(2, price="67234.57000000", volume=_DROP, metadata=_DROP),
        feed(3, price=Decimal("1.5E+3"), symbol="ETH/USD", bid=Decimal("1499.99")),
    ]
    with trio.fail_after(20):
        reply = await post(http, envelope(feeds), numbers=True)
        body = assert_reply(reply, status="success", ingested=4, duplicates=0, failed=0)
        assert body["errors"] == []
        rows = await stored(live, 4)
        prices = raw_rows(live, "SELECT symbol, price, volume, bid FROM price_feeds ORDER BY id")
    assert prices == [
        ("BTC/USD", "67234.560000", "9756.91661100", None),
        ("PEPE/USD", "0.0000001", "0", None),
        ("BTC/USD", "67234.57000000", None, None),
        ("ETH/USD", "1500", "12.50", "1499.99"),
    ]
    assert [decimal_text(f.price) for f in rows] == ["67234.560000", "67234.57000000"]
    first = rows[0]
    assert first.worker_id == "edge-1"
    assert first.source == "edge_coinbase"
    assert first.timestamp == T0
    assert first.metadata == {"trade_id": 0}
    assert abs((utc_now() - first.received_at).total_seconds()) < 10  # no received_at: now
    assert rows[1].metadata == {}


async def test_ingested_prices_are_served(live: Running, http: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        reply = await post(
            http, envelope([feed(0, symbol="SOL/USD", price=Decimal("150.10"))]), numbers=True
        )
        assert_reply(reply, ingested=1)
        public = bearer(PUBLIC_KEY)
        while True:
            response = await http.get("/prices/latest?symbols=SOL/USD", headers=public)
            if response.status_code == 200:
                break
            await trio.sleep(0.02)
    [item] = [i for i in response.json()["data"] if i["symbol"] == "SOL/USD"]
    assert item["price"] == "150.10"


async def test_keys(live: Running) -> None:
    body = _strings.encode(envelope([feed(0)]))
    json = {"Content-Type": "application/json"}
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=live.url) as client:
            url = "/internal/ingest"
            assert_error(await client.post(url, content=body, headers=json), 401, "UNAUTHORIZED")
            unknown = json | bearer("no_such_key")
            assert_error(await client.post(url, content=body, headers=unknown), 401, "UNAUTHORIZED")
            public = json | bearer(PUBLIC_KEY)
            assert_error(await client.post(url, content=body, headers=public), 403, "FORBIDDEN")
            admin = await client.post(url, content=body, headers=json | bearer(ADMIN_KEY))
            assert_reply(admin, status="success", ingested=1)
            internal = await client.post(url, content=body, headers=json | bearer(INTERNAL_KEY))
            assert_reply(internal, status="success", ingested=0, duplicates=1)
            assert_error(
                await client.get(url, headers=bearer(INTERNAL_KEY)), 405, "METHOD_NOT_ALLOWED"
            )


# --- the envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"not json", ""),
        (b"", ""),
        (b'{"worker_id": "w", "feeds": [', ""),
        (b"[]", ""),
        (b'{"timestamp": "2026-11-20T12:00:00Z", "feeds": [{}]}', "worker_id"),
        (b'{"worker_id": 7, "timestamp": "2026-11-20T12:00:00Z", "feeds": [{}]}', "worker_id"),
        (b'{"worker_id": "", "timestamp": "2026-11-20T12:00:00Z", "feeds": [{}]}', "worker_id"),
        (
            b'{"worker_id": "'
            + b"w" * 65
            + b'", "timestamp": "2026-11-20T12:00:00Z", "feeds": []}',
            "worker_id",
        ),
        (b'{"worker_id": "w", "timestamp": "yesterday", "feeds": [{}]}', "timestamp"),
        (b'{"worker_id": "w", "timestamp": "2026-11-20T12:00:00", "feeds": [{}]}', "timestamp"),
        (b'{"worker_id": "w", "feeds": [{}]}', "timestamp"),
        (b'{"worker_id": "w", "timestamp": "2026-11-20T12:00:00Z", "feeds": {}}', "feeds"),
        (b'{"worker_id": "w", "timestamp": "2026-11-20T12:00:00Z"}', "feeds"),
        (b'{"worker_id": "w", "timestamp": "2026-11-20T12:00:00Z", "feeds": [], "x": 1}', "x"),
    ],
)
async def test_a_body_that_is_not_the_envelope_is_400(
    http: httpx.AsyncClient, content: bytes, field: str
) -> None:
    with trio.fail_after(20):
        response = await http.post(
            "/internal/ingest", content=content, headers={"Content-Type": "application/json"}
        )
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == field
    if field:
        assert body["error"]["message"].startswith(f"{field}: ")


async def test_only_a_json_body_is_taken(http: httpx.AsyncClient) -> None:
    content = _strings.encode(envelope([feed(0)]))
    with trio.fail_after(20):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = await http.post("/internal/ingest", content=content, headers=headers)
            body = assert_error(response, 400, "VALIDATION_ERROR")
            assert "JSON body is expected" in body["error"]["message"]
        charset = {"Content-Type": "application/json; charset=utf-8"}
        response = await http.post("/internal/ingest", content=content, headers=charset)
        assert_reply(response, ingested=1)


async def test_feed_count_is_1_to_100(live: Running, http: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        for count in (0, 101):
            body = assert_error(
                await post(http, envelope([feed(i) for i in range(count)])),
                400,
                "VALIDATION_ERROR",
            )
            assert body["error"]["details"]["field"] == "feeds"
            assert body["error"]["details"]["count"] == count
        assert_reply(await post(http, envelope([feed(i) for i in range(100)])), ingested=100)
        assert len(await stored(live, 100)) == 100


# --- each feed on its own -------------------------------------------------------------------

NAIVE = (T0 + timedelta(seconds=1)).replace(tzinfo=None).isoformat()


def bad_feeds() -> list[tuple[Any, str, str]]:
    """(feed, field, start of reason); built when the test runs: "in 2 minutes" is relative."""
    in_2_min = time_text(utc_now() + timedelta(minutes=2))
    return [
        (feed(price="-1"), "price", "price_not_positive: -1"),
        (feed(price=Decimal("-1")), "price", "price_not_positive: -1"),
        (feed(price="0"), "price", "price_not_positive: 0"),
        (feed(price=Decimal("0.00")), "price", "price_not_positive: 0.00"),
        (feed(price="NaN"), "price", "price_not_finite: NaN"),
        (feed(price="Infinity"), "price", "price_not_finite: Infinity"),
        (feed(price="-Infinity"), "price", "price_not_finite: -Infinity"),
        (feed(price="0.0000000000000000001"), "price", "price_too_precise"),
        (feed(price=Decimal("1E+50")), "price", "price_too_many_digits"),
        (feed(price="abc"), "price", "invalid_value: Invalid decimal string"),
        (feed(price=True), "price", "invalid_value: Expected `decimal`, got `bool`"),
        (feed(price=_DROP), "price", "missing_field: price is required"),
        (feed(symbol="btcusd"), "symbol", "bad_symbol: btcusd"),
        (feed(symbol="BTC-USD"), "symbol", "bad_symbol"),
        (feed(symbol=7), "symbol", "invalid_value: Expected `str`, got `int`"),
        (feed(source="Coin Base"), "source", "bad_source"),
        (feed(source=""), "source", "bad_source"),
        (feed(source="x" * 65), "source", "bad_source"),
        (feed(volume="-0.5"), "volume", "volume_negative: -0.5"),
        (feed(volume="NaN"), "volume", "volume_not_finite"),
        (feed(volume=Decimal("1E-30")), "volume", "volume_too_precise"),
        (feed(bid="-1"), "bid", "bid_negative"),
        (feed(ask="Infinity"), "ask", "ask_not_finite"),
        (feed(timestamp=in_2_min), "timestamp", "timestamp_in_future"),
        (feed(timestamp=NAIVE), "timestamp", "timestamp_naive"),
        (feed(timestamp="2026-11-20"), "timestamp", "invalid_value: Invalid RFC3339"),
        (feed(received_at=in_2_min), "received_at", "timestamp_in_future"),
        (feed(metadata=[1, 2]), "metadata", "metadata_not_object"),
        (feed(metadata="x"), "metadata", "metadata_not_object"),
        (feed(metadata={"bid": "cheap"}), "metadata.bid", "invalid_value: Invalid decimal string"),
        (feed(metadata={"ask": "-2"}), "metadata.ask", "ask_negative: -2"),
        (
            feed(metadata={"exchange_timestamp": "noon"}),
            "metadata.exchange_timestamp",
            "invalid_value",
        ),
        (
            feed(metadata={"exchange_timestamp": NAIVE}),
            "metadata.exchange_timestamp",
            "timestamp_naive",
        ),
        (feed(metadata={"exchange_timestamp": -5}), "metadata.exchange_timestamp", "invalid_value"),
        (
            feed(metadata={"exchange_timestamp": 1e300}),
            "metadata.exchange_timestamp",
            "invalid_value",
        ),
        (
            feed(metadata={"exchange_timestamp": in_2_min}),
            "metadata.exchange_timestamp",
            "timestamp_in_future",
        ),
        (feed(prices="1"), "prices", "unknown_field: unknown field 'prices'"),
        ([feed()], "feed", "invalid_value: Expected `object`, got `array`"),
    ]


async def test_each_bad_feed_is_reported_by_index_and_field(
    live: Running, http: httpx.AsyncClient
) -> None:
    """One good feed after each bad one: every bad one is an error entry, every good one is
    stored, whatever sits beside it."""
    cases = bad_feeds()
    items: list[Any] = []
    for n, (bad, _, _) in enumerate(cases):
        items += [bad, feed(1000 + n)]
    assert len(items) <= 100
    with trio.fail_after(20):
        reply = await post(http, envelope(items), numbers=True)
        body = assert_reply(
            reply, status="partial", ingested=len(cases), duplicates=0, failed=len(cases)
        )
        assert len(await stored(live, len(cases))) == len(cases)
    assert body["message"] == f"ingested {len(cases)}, duplicates 0, failed {len(cases)}"
    for n, ((_, field, reason), error) in enumerate(zip(cases, body["errors"], strict=True)):
        assert error["index"] == 2 * n
        assert (error["field"], error["reason"][: len(reason)]) == (field, reason), error


async def test_a_time_up_to_60_s_ahead_is_taken(http: httpx.AsyncClient) -> None:
    soon = time_text(utc_now() + timedelta(seconds=30))
    late = time_text(utc_now() + timedelta(seconds=90))
    with trio.fail_after(20):
        body = assert_reply(
            await post(http, envelope([feed(timestamp=soon), feed(timestamp=late)])),
            status="partial",
            ingested=1,
            failed=1,
        )
    [error] = body["errors"]
    assert error["index"] == 1
    assert error["field"] == "timestamp"
    assert error["reason"].startswith("timestamp_in_future: ")


async def test_99_good_and_1_bad(live: Running, http: httpx.AsyncClient) -> None:
    items = [feed(i) for i in range(100)]
    items[42] = feed(42, price="-67234.56")
    with trio.fail_after(20):
        body = assert_reply(
            await post(http, envelope(items)), status="partial", ingested=99, failed=1
        )
        rows = await stored(live, 99)
        await trio.sleep(0.1)  # nothing more arrives
        assert len(await stored(live, 99)) == 99
    assert body["errors"] == [
        {"index": 42, "field": "price", "reason": "price_not_positive: -67234.56"}
    ]
    assert T0 + timedelta(milliseconds=42) not in {row.timestamp for row in rows}


async def test_all_invalid_is_400_with_every_error(live: Running, http: httpx.AsyncClient) -> None:
    items = [feed(0, price="0"), feed(1, symbol="nope"), feed(2, source="UPPER")]
    with trio.fail_after(20):
        body = assert_error(await post(http, envelope(items)), 400, "VALIDATION_ERROR")
    assert body["error"]["message"] == "all 3 feeds are invalid"
    assert body["error"]["details"]["errors"] == [
        {"index": 0, "field": "price", "reason": "price_not_positive: 0"},
        {"index": 1, "field": "symbol", "reason": "bad_symbol: nope"},
        {"index": 2, "field": "source", "reason": "bad_source: 'UPPER' is not 1-64 of [a-z0-9_.-]"},
    ]
    assert live.service.fanout.feeds_in == 0


# --- metadata, times ------------------------------------------------------------------------


PLUS_2 = timezone(timedelta(hours=2))


def epoch_ms(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


async def test_metadata_bid_ask_and_exchange_time(live: Running, http: httpx.AsyncClient) -> None:
    got_at = T0 + timedelta(seconds=5)
    exchange_at = T0 + timedelta(seconds=4, microseconds=250_000)
    iso_meta = {
        "bid": Decimal("67234.550"),  # a JSON number
        "ask": "67234.57000000",
        "native_symbol": "BTC-USD",
        "exchange_timestamp": time_text(exchange_at),
    }
    epoch_meta = {"exchange_timestamp": Decimal(epoch_ms(exchange_at) + 1) + Decimal("0.5")}
    items = [
        # bid/ask from metadata, the exchange's time as ISO text
        feed(0, price="1", timestamp=time_text(got_at), metadata=iso_meta),
        # epoch milliseconds as a number (a fraction kept to the microsecond)
        feed(1, price="2", timestamp=time_text(got_at), metadata=epoch_meta),
        # a top-level bid wins, metadata.bid then stays metadata; received_at as given
        feed(2, price="3", bid="1.00", received_at=time_text(got_at), metadata={"bid": "2.00"}),
        # an offset is taken and stored as UTC
        feed(3, price="4", timestamp=(T0 + timedelta(seconds=3)).astimezone(PLUS_2).isoformat()),
    ]
    with trio.fail_after(20):
        assert_reply(await post(http, envelope(items), numbers=True), ingested=4)
        rows = sorted(await stored(live, 4), key=lambda f: f.price)
    iso, epoch, top, offset = rows
    assert (iso.timestamp, iso.received_at) == (exchange_at, got_at)
    assert (decimal_text(iso.bid or Decimal()), iso.ask) == ("67234.550", Decimal("67234.57"))
    assert decimal_text(iso.ask or Decimal()) == "67234.57000000"
    assert iso.metadata == {"native_symbol": "BTC-USD"}
    assert epoch.timestamp == exchange_at + timedelta(milliseconds=1, microseconds=500)
    assert epoch.received_at == got_at
    assert epoch.metadata == {}
    assert (top.bid, top.ask, top.timestamp) == (Decimal("1.00"), None, T0 + timedelta(0, 0, 0, 2))
    assert top.received_at == got_at
    assert top.metadata == {"bid": "2.00"}
    assert offset.timestamp == T0 + timedelta(seconds=3)
    assert offset.timestamp.utcoffset() == timedelta(0)


async def test_chrono_wire_shape_is_taken(live: Running, http: httpx.AsyncClient) -> None:
    """An edge forwarder sends WireFeed as is: every field known, worker_id the envelope's."""
    wire = {
        "symbol": "ETH/USD",
        "price": "3000.10",
        "volume": None,
        "bid": "3000.00",
        "ask": None,
        "timestamp": time_text(T0),
        "received_at": time_text(T0 + timedelta(0, 1)),
        "source": "kraken",
        "worker_id": "kraken-1",
        "metadata": {"native_symbol": "ETH/USD"},
    }
    with trio.fail_after(20):
        assert_reply(await post(http, envelope([wire], worker_id="edge-7")), ingested=1)
        [row] = await stored(live, 1, "ETH/USD")
    assert row.worker_id == "edge-7"
    assert (row.price, row.bid, row.volume) == (Decimal("3000.10"), Decimal("3000.00"), None)
    assert row.received_at == T0 + timedelta(seconds=1)


# --- duplicates, concurrency ------------------------------------------------------------------


async def test_the_same_batch_twice_is_stored_once(live: Running, http: httpx.AsyncClient) -> None:
    items = [feed(i) for i in range(50)]
    with trio.fail_after(20):
        assert_reply(await post(http, envelope(items)), status="success", ingested=50)
        again = await post(http, envelope(items, worker_id="edge-2"))
        assert_reply(again, status="success", ingested=0, duplicates=50, failed=0)
        repeated = [feed(100), feed(100), feed(101), feed(0)]
        assert_reply(await post(http, envelope(repeated)), ingested=2, duplicates=2)
        await stored(live, 52)
        await trio.sleep(0.1)  # a duplicate written late would show now
        rows = await stored(live, 52)
    assert len(rows) == 52
    assert {row.worker_id for row in rows} == {"edge-1"}
    assert raw_rows(live, "SELECT count(*) FROM price_feeds") == [(52,)]


async def test_ten_concurrent_workers_lose_and_repeat_nothing(
    live: Running, http: httpx.AsyncClient
) -> None:
    """10 workers x 4 batches of 100; each worker's last batch is the next one's first (the
    same feeds, as two edges forwarding one exchange would send)."""
    workers, batches, per_batch, stride = 10, 4, 100, 300
    replies: list[dict[str, Any]] = []
    symbols = ("BTC/USD", "ETH/USD", "SOL/USD")

    def item(n: int) -> dict[str, Any]:
        price = Decimal(60_000) + Decimal(n) / 100
        return feed(n, symbol=symbols[n % 3], price=price, volume=Decimal(n))

    async def worker(w: int) -> None:
        for b in range(batches):
            first = w * stride + b * per_batch
            body = envelope([item(n) for n in range(first, first + per_batch)], f"edge-{w}")
            reply = await post(http, body, numbers=True)
            replies.append(assert_reply(reply, status="success", failed=0))

    distinct = {n for w in range(workers) for n in range(w * stride, w * stride + 400)}
    sent = workers * batches * per_batch
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for w in range(workers):
                nursery.start_soon(worker, w)
        rows = [row for s in symbols for row in await stored(live, len(distinct), s)]
        await trio.sleep(0.1)
    assert len(replies) == workers * batches
    assert sum(r["ingested"] for r in replies) == len(distinct)
    assert sum(r["duplicates"] for r in replies) == sent - len(distinct)
    keys = [(row.symbol, row.timestamp, decimal_text(row.price)) for row in rows]
    assert len(keys) == len(set(keys)) == len(distinct)
    expected = {
        (
            symbols[n % 3],
            T0 + timedelta(milliseconds=n),
            decimal_text(Decimal(60_000) + Decimal(n) / 100),
        )
        for n in distinct
    }
    assert set(keys) == expected
    assert raw_rows(live, "SELECT count(*) FROM price_feeds") == [(len(distinct),)]
    assert live.service.writer.feeds_written == len(distinct)


# --- body limits, the drain -------------------------------------------------------------------


def _oversize_body() -> bytes:
    """Valid JSON, one feed whose metadata pads the body past MAX_BODY_BYTES."""
    padded = feed(0, metadata={"pad": "x" * MAX_BODY_BYTES})
    body = _strings.encode(envelope([padded]))
    assert len(body) > MAX_BODY_BYTES
    return body


async def raw_post(live: Running, head: bytes, body: bytes) -> tuple[int, dict[str, str], Any]:
    """POST over a bare socket: the server may answer before the body is all sent, which an
    HTTP client library takes for a failed request. The body goes out beside the reading."""
    request = (
        b"POST /internal/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + INTERNAL_KEY.encode() + b"\r\n" + head + b"\r\n"
    )
    stream = await trio.open_tcp_stream("127.0.0.1", live.service.http_port)
    answer = bytearray()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError):  # the server closed first
                await stream.send_all(request + body)

        nursery.start_soon(send)
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some()
        end = answer.index(b"\r\n\r\n")
        status_line, *lines = answer[:end].decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        del answer[: end + 4]
        while len(answer) < int(headers["content-length"]):
            answer += await stream.receive_some()
        nursery.cancel_scope.cancel()
    return int(status_line.split(" ")[1]), headers, msgspec.json.decode(answer)


def assert_raw_error(status: int, headers: dict[str, str], body: Any, request_id: str) -> None:
    assert status == body["status"] == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body["error"]["request_id"] == headers["x-request-id"] == request_id


async def test_a_declared_body_over_1_mib_is_413(live: Running) -> None:
    """hypercorn refuses the head at once (before the key check): nothing is read."""
    with trio.fail_after(20):
        head = b"Content-Length: %d\r\nX-Request-ID: big-1\r\n" % (MAX_BODY_BYTES + 1)
        assert_raw_error(*await raw_post(live, head, b""), "big-1")
        assert_raw_error(*await raw_post(live, head, _oversize_body()), "big-1")
    assert live.service.fanout.feeds_in == 0


async def test_a_chunked_body_over_1_mib_is_413(live: Running) -> None:
    """No Content-Length: the limit holds while the body is read (Quart's MAX_CONTENT_LENGTH)."""
    body = _oversize_body()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (body[i : i + 65_536] for i in range(0, len(body), 65_536))
    )
    head = b"Transfer-Encoding: chunked\r\nX-Request-ID: chunked-1\r\n"
    with trio.fail_after(20):
        assert_raw_error(*await raw_post(live, head, chunks + b"0\r\n\r\n"), "chunked-1")
        # and with the body never finished: the answer comes once the limit is passed
        assert_raw_error(*await raw_post(live, head, chunks), "chunked-1")
    assert live.service.fanout.feeds_in == 0


async def test_a_chunked_body_within_the_limit_is_taken(http: httpx.AsyncClient) -> None:
    content = _strings.encode(envelope([feed(i) for i in range(10)]))

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(content), 100):
            yield content[i : i + 100]

    with trio.fail_after(20):
        response = await http.post(
            "/internal/ingest", content=chunked(), headers={"Content-Type": "application/json"}
        )
    assert_reply(response, ingested=10)


async def test_a_draining_service_answers_503(live: Running, http: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        # Held open, this sender keeps the pipeline (and so the server) up through the drain.
        async with live.service.intake():
            live.service.stop()
            await wait_until(lambda: live.service.state == "draining")
            response = await post(http, envelope([feed(0)]))
            body = assert_error(response, 503, "DATABASE_ERROR")
            assert "stopping" in body["error"]["message"]
            # nothing was taken, so nothing counts as handed over: a resend is not a duplicate
            response = await post(http, envelope([feed(0)]))
            assert_error(response, 503, "DATABASE_ERROR")
    assert live.service.fanout.feeds_in == 0
