"""The dashboard in a real headless Chromium, against a ``chrono run`` fed by the Coinbase and
Kraken simulators: the page loads with no console error, shows every collector, and its prices
and consensus change while the test watches; a screenshot is saved (``dashboard.png`` in the
test's folder). Also: the page and its state over plain HTTP, and a key asked for."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import trio

from chrono.simulate import SimulateOptions, serve_simulators, snippet
from chrono.testing.process import open_chrono
from tests.browser import open_browser
from tests.conftest import PUBLIC_KEY
from tests.daemon import write_config

PRICES = "[...document.querySelectorAll('#prices tr')].map(r => r.innerText).join('|')"
STATUSES = "[...document.querySelectorAll('#prices tr')].map(r => r.cells[2].innerText)"
COLLECTORS = "[...document.querySelectorAll('#collectors tr')].map(r => r.cells[0].innerText)"


async def test_the_dashboard_shows_every_collector_and_live_prices_in_a_real_browser(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    options = SimulateOptions(exchanges=("coinbase", "kraken"), rate=20.0)
    served = await nursery.start(serve_simulators, options)
    config = await write_config(tmp_path, collectors=snippet(served))
    with trio.fail_after(90):
        async with open_chrono(config) as daemon, open_browser(tmp_path / "profile") as browser:
            base = f"http://127.0.0.1:{daemon.port}"
            page = await browser.open(f"{base}/?key={PUBLIC_KEY}")
            while sorted(await page.evaluate(COLLECTORS)) != ["coinbase", "kraken"]:
                await trio.sleep(0.2)
            while "ok" not in await page.evaluate(STATUSES):  # a consensus of both, over /stream
                await trio.sleep(0.2)
            first = await page.evaluate(PRICES)
            later = first
            while later == first:  # the simulators trade on: the rows change by themselves
                await trio.sleep(0.3)
                later = await page.evaluate(PRICES)
            assert "BTC/USD" in later
            assert "coinbase" in later
            assert "kraken" in later
            states = await page.evaluate(
                "[...document.querySelectorAll('#collectors tr')].map(r => r.cells[2].innerText)"
            )
            assert states == ["streaming", "streaming"]
            sparklines = "document.querySelectorAll('#prices polyline').length"
            while not await page.evaluate(sparklines):  # a second consensus: a line to draw
                await trio.sleep(0.2)
            assert "sqlite: up" in await page.evaluate("document.getElementById('store').innerText")
            await page.screenshot(tmp_path / "dashboard.png")
            if folder := os.environ.get("CHRONO_SCREENSHOTS"):  # to look at it after a run
                shutil.copy(tmp_path / "dashboard.png", Path(folder) / "dashboard.png")
            assert browser.errors == []
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    shot = (tmp_path / "dashboard.png").read_bytes()
    assert shot.startswith(b"\x89PNG")
    assert len(shot) > 10_000


async def test_without_a_key_the_page_asks_for_one_and_its_state_needs_a_public_key(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    options = SimulateOptions(exchanges=("coinbase",), rate=5.0)
    served = await nursery.start(serve_simulators, options)
    config = await write_config(tmp_path, collectors=snippet(served))
    with trio.fail_after(60):
        async with open_chrono(config) as daemon:
            base = f"http://127.0.0.1:{daemon.port}"
            async with httpx.AsyncClient(base_url=base) as http:
                page = await http.get("/")
                assert page.status_code == 200
                assert page.headers["content-type"].startswith("text/html")
                assert "script-src 'sha256-" in page.headers["content-security-policy"]
                assert "http" not in page.text.split("<script>")[0].replace("http-equiv", "")
                refused = await http.get("/dashboard/state")
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "UNAUTHORIZED"
                state = await http.get(
                    "/dashboard/state", headers={"Authorization": f"Bearer {PUBLIC_KEY}"}
                )
                assert state.status_code == 200
                body = state.json()
                assert [c["worker_id"] for c in body["collectors"]] == ["coinbase"]
                assert {s["symbol"] for s in body["symbols"]} >= {"BTC/USD"}
                assert body["store"]["kind"] == "sqlite"
            async with open_browser(tmp_path / "profile") as browser:
                shown = await browser.open(base + "/")
                while not await shown.evaluate(
                    "document.getElementById('keyform').classList.contains('show')"
                ):
                    await trio.sleep(0.1)
                assert await shown.evaluate("document.getElementById('message').innerText") in (
                    "enter a public key", "a public key is needed",
                )  # fmt: skip
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
