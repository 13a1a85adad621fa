"""deploy/prometheus/chrono-alerts.yml: ``promtool check rules`` accepts it, and ``promtool test
rules`` shows each alert firing on synthetic series that should fire it, with the exact labels and
annotations Alertmanager would get, and staying quiet on series that should not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "chrono-alerts.yml"
INGEST = '{route="/internal/ingest", method="POST", instance="%s", job="chrono", status="%s"}'


def promtool() -> str:
    """promtool on PATH, or the one scripts/ensure-promtool put in .venv/bin: never a skip."""
    found = shutil.which("promtool") or str(Path(sys.prefix) / "bin" / "promtool")
    assert Path(found).exists(), "promtool missing: run scripts/ensure-promtool"
    return found


def run_promtool(*args: str) -> None:
    """Run promtool and fail with everything it printed: its output names the alert that broke."""
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def check(alertname: str, at: str, *fired: tuple[dict[str, str], str, str]) -> dict[str, Any]:
    """An ``alert_rule_test``: at ``at``, exactly ``fired`` (labels, summary, description)."""
    return {
        "eval_time": at,
        "alertname": alertname,
        "exp_alerts": [
            {
                "exp_labels": labels,
                "exp_annotations": {"summary": summary, "description": description},
            }
            for labels, summary, description in fired
        ],
    }


def group(input_series: list[dict[str, str]], *tests: dict[str, Any]) -> dict[str, Any]:
    return {"interval": "15s", "input_series": input_series, "alert_rule_test": list(tests)}


def unit_tests() -> dict[str, Any]:
    """One group per alert; time() is 0 at the first sample and series step by 15s."""
    no_data = group(
        [
            # coinbase keeps receiving: its last-data timestamp follows time().
            series('chrono_collector_last_data_timestamp_seconds{collector="coinbase"}', "0+15x20"),
            # kraken receives until t=30s, then its timestamp stalls.
            series(
                'chrono_collector_last_data_timestamp_seconds{collector="kraken"}', "0+15x2 30x18"
            ),
        ],
        check("ChronoNoData", "90s"),  # kraken silent for exactly 60s: not yet
        check(
            "ChronoNoData",
            "2m",
            (
                {"collector": "kraken", "severity": "warning"},
                "Chrono collector kraken receives no data",
                "Collector kraken received no data for 1m 30s (more than 60s).",
            ),
        ),
    )
    failing = group(
        [
            series('chrono_collector_failures_in_a_row{collector="kraken"}', "0+1x15"),
            series('chrono_collector_failures_in_a_row{collector="coinbase"}', "0x15"),
        ],
        check("ChronoCollectorFailing", "135s"),  # 9 in a row
        check(
            "ChronoCollectorFailing",
            "150s",
            (
                {"collector": "kraken", "severity": "warning"},
                "Chrono collector kraken cannot connect",
                "Collector kraken failed 10 connections in a row.",
            ),
        ),
    )
    down = group(
        [
            series('chrono_collector_streaming{collector="kraken"}', "1x2 0x10"),  # 0 from 45s
            series('chrono_collector_streaming{collector="coinbase"}', "1x13"),
        ],
        check("ChronoCollectorDown", "90s"),  # pending
        check(
            "ChronoCollectorDown",
            "105s",
            (
                {"collector": "kraken", "severity": "warning"},
                "Chrono collector kraken is not streaming",
                "Collector kraken has not been streaming for at least 1m.",
            ),
        ),
    )
    ingest = group(
        [
            # instance a: 10 % errors; b: 1 %; c: no traffic; d: only errors, but 10 in 5m,
            # under Chrono's ingest_min_requests (20).
            series("chrono_http_requests_total" + INGEST % ("a", "200"), "0+90x40"),
            series("chrono_http_requests_total" + INGEST % ("a", "500"), "0+6x40"),
            series("chrono_http_requests_total" + INGEST % ("a", "422"), "0+4x40"),
            series("chrono_http_requests_total" + INGEST % ("b", "200"), "0+99x40"),
            series("chrono_http_requests_total" + INGEST % ("b", "503"), "0+1x40"),
            series("chrono_http_requests_total" + INGEST % ("c", "200"), "0x40"),
            series("chrono_http_requests_total" + INGEST % ("c", "500"), "0x40"),
            series("chrono_http_requests_total" + INGEST % ("d", "200"), "0x40"),
            series("chrono_http_requests_total" + INGEST % ("d", "500"), "0+0.5x40"),
            # Errors on another route do not count.
            series(
                'chrono_http_requests_total{route="/v1/prices", method="GET", instance="b",'
                ' job="chrono", status="404"}',
                "0+50x40",
            ),
        ],
        check(
            "ChronoIngestErrors",
            "10m",
            (
                {
                    "instance": "a",
                    "job": "chrono",
                    "method": "POST",
                    "route": "/internal/ingest",
                    "severity": "warning",
                },
                "Chrono refuses or fails ingest requests",
                "10% of POST /internal/ingest requests were answered with an error over the"
                " last 5m (more than 5%).",
            ),
        ),
    )
    store = group(
        [series("chrono_store_up", "1x2 0x10")],  # down from 45s
        check("ChronoStoreDown", "45s"),  # pending
        check(
            "ChronoStoreDown",
            "1m",
            (
                {"severity": "critical"},
                "Chrono's store takes no writes",
                "The store has been down for at least 10s; batches go to the spool until it is"
                " back.",
            ),
        ),
    )
    spool = group(
        [
            series('chrono_spool_bytes{instance="a", job="chrono"}', "900x4"),
            series('chrono_spool_max_bytes{instance="a", job="chrono"}', "1000x4"),
            series('chrono_spool_bytes{instance="b", job="chrono"}', "500x4"),
            series('chrono_spool_max_bytes{instance="b", job="chrono"}', "1000x4"),
        ],
        check(
            "ChronoSpoolFilling",
            "30s",
            (
                {"instance": "a", "job": "chrono", "severity": "critical"},
                "Chrono's spool is filling up",
                "The spool is 90% full (more than 80%); when it is full, batches are lost.",
            ),
        ),
    )
    quorum = group(
        [
            # BTC/USD loses its quorum at 45s; ETH/USD keeps it.
            series('chrono_consensus_status{symbol="BTC/USD", status="ok"}', "1x2 0x10"),
            series(
                'chrono_consensus_status{symbol="BTC/USD", status="insufficient_sources"}',
                "0x2 1x10",
            ),
            series('chrono_consensus_status{symbol="ETH/USD", status="ok"}', "1x13"),
            series(
                'chrono_consensus_status{symbol="ETH/USD", status="insufficient_sources"}', "0x13"
            ),
        ],
        check("ChronoConsensusBelowQuorum", "1m"),  # pending
        check(
            "ChronoConsensusBelowQuorum",
            "75s",
            (
                {"symbol": "BTC/USD", "status": "insufficient_sources", "severity": "critical"},
                "Chrono has no consensus price for BTC/USD",
                "The consensus for BTC/USD has had too few sources for at least 30s.",
            ),
        ),
    )
    restart = group(
        [
            series('chrono_supervisor_restarts_total{component="writer"}', "0x10 1x40"),
            series('chrono_supervisor_restarts_total{component="fanout"}', "0x50"),
        ],
        check("ChronoSupervisorRestart", "2m"),  # before the restart at 165s
        check(
            "ChronoSupervisorRestart",
            "5m",
            (
                {"component": "writer", "severity": "warning"},
                "Chrono restarted writer",
                "The supervisor restarted writer after a crash in the last 5m.",
            ),
        ),
        check("ChronoSupervisorRestart", "10m"),  # the restart left the 5m window
    )
    active = group(
        [
            series('chrono_alert_active{rule="no_data"}', "0 0 2 2"),
            series('chrono_alert_active{rule="store_down"}', "0x3"),
        ],
        check("ChronoAlertActive", "15s"),
        check(
            "ChronoAlertActive",
            "30s",
            (
                {"rule": "no_data", "severity": "warning"},
                "Chrono reports an active no_data alert",
                "Chrono's own alert engine has 2 active no_data alert(s).",
            ),
        ),
    )
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [no_data, failing, down, ingest, store, spool, quorum, restart, active],
    }


def test_the_rules_file_passes_promtool_check_rules() -> None:
    """A syntax or PromQL error would only show when Prometheus refuses to load the file."""
    run_promtool("check", "rules", str(RULES))


def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    """Thresholds, ``for`` durations, labels and templates as an operator receives them."""
    tests = tmp_path / "chrono-alerts.test.yml"
    tests.write_text(json.dumps(unit_tests(), indent=2))  # JSON is YAML
    run_promtool("test", "rules", str(tests))
