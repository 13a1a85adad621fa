"""deploy/grafana/chrono.json: a Grafana dashboard that only asks for what Chrono exports. Every
metric its queries name is in a live scrape of a ``chrono run`` fed by a simulator (so a renamed
metric breaks this test, not a user's graphs), and its panels are laid out on Grafana's grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import coinbase_chrono

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "chrono.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def queried_metrics(dashboard: dict[str, object]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]  # type: ignore[attr-defined]
    return {name for expr in exprs for name in re.findall(r"\bchrono_[a-z_]+", expr)}


def test_the_panels_sit_on_the_grid_and_each_queries_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "chrono-oracle"
    assert dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    assert {"chrono_alert_active", "chrono_consensus_price"} <= queried_metrics(dashboard)


async def test_every_metric_the_dashboard_queries_is_in_a_live_scrape(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(60):
        async with coinbase_chrono(tmp_path, nursery) as (daemon, _config):
            base = f"http://127.0.0.1:{daemon.port}"
            async with httpx.AsyncClient(base_url=base) as http:
                await http.get("/health")  # an HTTP answer to count
                await trio.sleep(1)  # a batch stored: the store's histograms have samples
                text = (await http.get("/metrics")).text
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    wanted = queried_metrics(json.loads(DASHBOARD.read_text()))
    missing = sorted(
        name for name in wanted
        if name not in exported and not any(name.removesuffix(s) in exported for s in SUFFIXES)
    )  # fmt: skip
    assert missing == []
