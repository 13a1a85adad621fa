"""Alerts end to end: a ``chrono run`` fed by a Coinbase simulator, a webhook receiver on
loopback. Stopping the simulator fires ``no_data`` (to the webhook, in /status, in /metrics);
starting it again on the same port resolves it, once."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from chrono.testing.process import open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.daemon import chrono_status, get_json, write_config
from tests.webhooks import WebhookReceiver

ALERTS = """
[alerts]
check_interval_s = 0.1
no_data_s = 1
hold_down_s = 1
collector_down_s = 600
below_quorum_s = 600
webhooks = ["{url}"]
webhook_retries = 3
"""


def no_data(status: str) -> Any:
    return lambda e: e["rule"] == "no_data" and e["status"] == status


async def alert_active(port: int, rule: str) -> float:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "chrono_alert_active" and sample.labels["rule"] == rule:
                return sample.value
    raise AssertionError("no chrono_alert_active sample for " + rule)


async def test_stopping_a_simulator_fires_no_data_to_a_webhook_and_its_return_resolves_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hooks = WebhookReceiver(fail_first=1)  # the first POST gets a 503: the sender retries
    await nursery.start(hooks.serve)
    sim = CoinbaseSimulator(tick_interval_s=0.05)
    exchange = trio.CancelScope()

    async def run_exchange(port: int, *, task_status: trio.TaskStatus[int]) -> None:
        with exchange:
            await sim.serve(port=port, task_status=task_status)

    port = await nursery.start(run_exchange, 0)
    config = await write_config(tmp_path, sim.url)
    config.write_text(config.read_text() + ALERTS.format(url=hooks.url))
    with trio.fail_after(60):
        async with open_chrono(config) as daemon:
            await sim.wait_subscribed()
            assert await alert_active(daemon.port, "no_data") == 0
            exchange.cancel()  # the exchange goes away: connections end, reconnects fail
            firing = await hooks.wait_for(no_data("firing"))
            assert firing["subject"] == "coinbase"
            assert firing["text"].startswith("[chrono] FIRING: no_data (coinbase): no data for")
            status = await get_json(daemon.port, "/status")
            assert [(a["rule"], a["subject"]) for a in status["alerts"]["active"]] == [
                ("no_data", "coinbase")
            ]
            assert await alert_active(daemon.port, "no_data") == 1
            shown = (await chrono_status(config)).stdout.decode()
            assert "ALERT no_data (coinbase): no data for" in shown
            exchange = trio.CancelScope()
            await nursery.start(run_exchange, port)  # back, on the same port
            resolved = await hooks.wait_for(no_data("resolved"))
            assert resolved["since"] == firing["since"]
            status = await get_json(daemon.port, "/status")
            assert status["alerts"]["active"] == []
            assert await alert_active(daemon.port, "no_data") == 0
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
    ours = [e["status"] for e in hooks.events if e["rule"] == "no_data"]
    assert ours == ["firing", "resolved"]  # once each, although the collector reconnected
    assert hooks.requests == len(hooks.events) + 1  # the refused first POST, retried
    assert status["alerts"]["webhook_failures"] == 0
    assert "alert firing: [chrono] FIRING: no_data" in " ".join(daemon.messages())
