"""``GET /metrics`` on a service fed by a Coinbase simulator: ``promtool check metrics`` passes on
the live scrape, and its counters agree with the rows in the store and with the API's traffic."""

from __future__ import annotations

import platform
import shutil
import sqlite3
import sys
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from chrono import __version__
from chrono.testing.simulators import CoinbaseSimulator
from tests.conftest import PUBLIC_KEY
from tests.dataapi import PUBLIC, running_api
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


def promtool() -> str:
    """promtool on PATH, or the one scripts/ensure-promtool put in .venv/bin: never a skip."""
    found = shutil.which("promtool") or str(Path(sys.prefix) / "bin" / "promtool")
    assert Path(found).exists(), "promtool missing: run scripts/ensure-promtool"
    return found


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_a_live_scrape_passes_promtool_and_agrees_with_the_store(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    sections = {
        "collectors": [{"exchange": "coinbase", "symbols": ["BTC/USD", "ETH/USD"], "url": sim.url}],
        "storage": {"url": "sqlite:///data/chrono.db"},
        "limits": {"public_per_min": 2},  # the third public request is refused
    }
    with trio.fail_after(60):
        async with running_api(tmp_path, **sections) as api:
            service = api.service
            await wait_until(lambda: service.writer.feeds_written > 50, timeout_s=20)
            sim.set_silent(True)
            received = service.fanout.feeds_in
            await wait_until(lambda: service.batcher.statistics().pending == 0, timeout_s=10)
            await wait_until(
                lambda: (
                    service.writer.feeds_written + service.writer.duplicates_ignored
                    == service.fanout.feeds_in - service.fanout.duplicates
                ),
                timeout_s=10,
            )
            await api.http.get("/prices/latest?symbols=BTC/USD", headers=PUBLIC)
            await api.http.get("/prices/latest?symbols=BTC/USD")  # 401
            await api.http.get("/no/such/route")
            for _ in range(2):
                await api.http.get("/prices/latest?symbols=ETH/USD", headers=PUBLIC)
            response = await api.http.get("/metrics")
            text = response.text
            with sqlite3.connect(tmp_path / "data" / "chrono.db") as db:
                (rows,) = db.execute("SELECT count(*) FROM price_feeds").fetchone()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    with trio.fail_after(30):
        checked = await trio.run_process(
            [promtool(), "check", "metrics"],
            stdin=text.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    got = samples(text)
    assert got["chrono_store_rows_written_total", ()] == rows > 50
    assert got["chrono_feeds_received_total", ()] >= received
    collected = got[
        "chrono_feeds_collected_total", (("collector", "coinbase"), ("source", "coinbase"))
    ]
    assert collected == got["chrono_feeds_received_total", ()]
    stored_count = got["chrono_received_to_stored_seconds_count", ()]
    assert stored_count == rows + got["chrono_store_duplicates_ignored_total", ()]
    by_source = {k[1]: v for k, v in got.items() if k[0] == "chrono_feeds_total"}
    assert by_source[(("result", "collected"), ("source", "coinbase"))] == collected
    written = by_source[(("result", "written"), ("source", "coinbase"))]
    assert written == stored_count  # every committed feed, by its source
    duplicate = by_source.get((("result", "duplicate"), ("source", "coinbase")), 0)
    assert duplicate == got["chrono_feeds_duplicate_total", ()]
    assert got["chrono_store_up", ()] == 1
    assert got["chrono_collector_streaming", (("collector", "coinbase"),)] == 1
    assert got["chrono_http_requests_total", (("method", "GET"), ("route", "/prices/latest"),
                                               ("status", "200"))] == 2  # fmt: skip
    assert got["chrono_http_requests_total", (("method", "GET"), ("route", "/prices/latest"),
                                               ("status", "401"))] == 1  # fmt: skip
    assert got["chrono_http_requests_total", (("method", "GET"), ("route", "unmatched"),
                                               ("status", "404"))] == 1  # fmt: skip
    assert got["chrono_http_requests_total", (("method", "GET"), ("route", "/prices/latest"),
                                               ("status", "429"))] == 1  # fmt: skip
    assert got["chrono_rate_limited_requests_total", (("role", "public"),)] == 1
    assert got["chrono_consensus_status", (("status", "insufficient_sources"),
                                           ("symbol", "BTC/USD"))] == 1  # one source  # fmt: skip
    assert got["chrono_consensus_sources", (("symbol", "BTC/USD"),)] == 1
    symbol_times = [k for k in got if k[0] == "chrono_symbol_last_data_timestamp_seconds"]
    assert {dict(labels)["symbol"] for _, labels in symbol_times} == {"BTC/USD", "ETH/USD"}
    build = ("chrono_build_info", (("python", platform.python_version()), ("version", __version__)))
    assert got[build] == 1
    assert PUBLIC_KEY not in text
