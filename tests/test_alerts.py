"""The alert engine and its rules, on facts made by hand: each alert fires once when its
condition has held for its time, resolves once after the hold-down, and never flaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from chrono.alerts import Alerts, Facts
from chrono.alerts.engine import active_by_rule
from chrono.alerts.rules import RULES
from chrono.collect.stats import CollectorStats
from chrono.config import AlertsConfig

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def collector(worker_id: str = "coinbase-1", **fields: Any) -> Any:
    stats = CollectorStats(worker_id, "coinbase", ["BTC/USD"])
    for name, value in fields.items():
        setattr(stats, name, value)
    return stats.statistics()


def facts(at_s: float = 0.0, **fields: Any) -> Facts:
    now = T0 + timedelta(seconds=at_s)
    base: dict[str, Any] = {
        "now": now, "started_at": T0, "store_up": True, "store_state": "up", "spool_fill": 0.0,
        "below_quorum": {}, "ingest": None, "restarts": {},
        "collectors": [collector(state="streaming", last_data_at=now)],
    }  # fmt: skip
    return Facts(**(base | fields))


def statuses(events: list[Any]) -> list[tuple[str, str, str]]:
    return [(e.status, e.rule, e.subject) for e in events]


def test_a_condition_fires_once_after_its_time_and_resolves_once_after_the_hold_down() -> None:
    alerts = Alerts(AlertsConfig(store_down_s=10, hold_down_s=30))
    down = {"store_up": False, "store_state": "down"}
    assert alerts.check(facts(0, **down), 0) == []  # pending: not 10 s yet
    assert alerts.check(facts(9, **down), 9) == []
    fired = alerts.check(facts(10, **down), 10)
    assert statuses(fired) == [("firing", "store_down", "*")]
    assert fired[0].text == "[chrono] FIRING: store_down: store down"
    assert alerts.check(facts(20, **down), 20) == []  # still firing: no second event
    assert alerts.check(facts(21), 21) == []  # clear, but within the hold-down
    assert [a.rule for a in alerts.statistics().active] == ["store_down"]
    resolved = alerts.check(facts(51), 51)
    assert statuses(resolved) == [("resolved", "store_down", "*")]
    assert resolved[0].since == T0 + timedelta(seconds=10)  # when it fired
    assert alerts.statistics().active == []
    assert (alerts.fired, alerts.resolved) == (1, 1)


def test_a_condition_that_clears_before_its_time_never_fires() -> None:
    alerts = Alerts(AlertsConfig(store_down_s=10))
    for at in (0, 5, 9):
        assert alerts.check(facts(at, store_up=False), at) == []
    assert alerts.check(facts(9.5), 9.5) == []
    assert alerts.check(facts(12, store_up=False), 12) == []  # a new wait of 10 s from here
    assert alerts.fired == 0


def test_a_flapping_condition_is_one_alert_not_one_per_flap() -> None:
    alerts = Alerts(AlertsConfig(hold_down_s=5))
    events = []
    for at in range(60):  # full for a second, empty for a second, for a minute
        full = {"spool_fill": 0.9} if at % 2 == 0 else {}
        events += alerts.check(facts(at, **full), at)
    assert statuses(events) == [("firing", "spool_full", "*")]
    for at in range(60, 70):
        events += alerts.check(facts(at), at)
    assert statuses(events)[1:] == [("resolved", "spool_full", "*")]


def test_no_data_is_per_collector_and_counts_from_the_start_for_one_that_never_had_any() -> None:
    alerts = Alerts(AlertsConfig(no_data_s=60, hold_down_s=0))
    quiet = collector("kraken-1", state="streaming", last_data_at=T0)
    never = collector("bitstamp-1", state="connecting")
    at = facts(59, collectors=[quiet, never])
    assert alerts.check(at, 59) == []
    fired = alerts.check(facts(61, collectors=[quiet, never]), 61)
    assert ("firing", "no_data", "kraken-1") in statuses(fired)
    assert ("firing", "no_data", "bitstamp-1") in statuses(fired)
    [never_event] = [e for e in fired if e.subject == "bitstamp-1" and e.rule == "no_data"]
    assert never_event.detail == "no data for 61 s (none since the start)"


def test_the_seed_rules_and_chronos_own_each_name_what_is_wrong() -> None:
    config = AlertsConfig(hold_down_s=0)
    failing = collector(state="backoff", failures_in_a_row=10, last_error="refused",
                        last_data_at=T0)  # fmt: skip
    cases: list[tuple[dict[str, Any], tuple[str, str], str]] = [
        ({"collectors": [failing]}, ("collector_failing", "coinbase-1"),
         "10 connections in a row failed: refused"),
        ({"ingest": (100, 6)}, ("ingest_errors", "*"),
         "6 of 100 POST /internal/ingest answers were errors over 300 s"),
        ({"spool_fill": 0.81}, ("spool_full", "*"), "spool 81% full"),
        ({"below_quorum": {"BTC/USD": "1 of 2 sources needed"}},
         ("consensus_below_quorum", "BTC/USD"), "1 of 2 sources needed"),
        ({"restarts": {"writer": 2, "fanout": 0}}, ("supervisor_restart", "writer"),
         "restarted 2 times"),
    ]  # fmt: skip
    for fields, key, detail in cases:
        alerts = Alerts(config)
        late = 1000.0  # past every rule's time
        alerts.check(facts(0, **fields), 0)
        fired = {(e.rule, e.subject): e for e in alerts.check(facts(late, **fields), late)}
        fired |= {(e.rule, e.subject): e for e in alerts.check(facts(0, **fields), 0)}
        assert key in {(a.rule, a.subject) for a in alerts.statistics().active}, key
        active = {(a.rule, a.subject): a.detail for a in alerts.statistics().active}
        assert active[key] == detail
    quiet = Alerts(config)
    assert quiet.check(facts(0, ingest=(100, 5)), 0) == []  # 5 % is not over 5 %
    assert quiet.check(facts(1, spool_fill=0.8), 1) == []  # over 80 %, as Prometheus' rule
    assert quiet.check(facts(2, restarts={"writer": 0}), 2) == []


def test_a_rule_it_cannot_evaluate_now_keeps_its_alerts_as_they_were() -> None:
    alerts = Alerts(AlertsConfig(below_quorum_s=1, hold_down_s=0))
    short = {"below_quorum": {"ETH/USD": "0 of 2 sources needed"}}
    alerts.check(facts(0, **short), 0)
    assert statuses(alerts.check(facts(1, **short), 1)) == [
        ("firing", "consensus_below_quorum", "ETH/USD")
    ]
    assert alerts.check(facts(2, below_quorum=None), 2) == []  # the store failed: unknown
    assert len(alerts.statistics().active) == 1
    assert statuses(alerts.check(facts(3), 3)) == [
        ("resolved", "consensus_below_quorum", "ETH/USD")
    ]


def test_every_rule_is_reported_to_metrics_even_when_quiet() -> None:
    alerts = Alerts(AlertsConfig())
    assert active_by_rule(alerts.statistics().active) == dict.fromkeys(RULES, 0)
    assert set(RULES) == {
        "no_data", "collector_down", "collector_failing", "ingest_errors", "store_down",
        "spool_full", "consensus_below_quorum", "supervisor_restart",
    }  # fmt: skip


def test_an_event_is_the_json_a_webhook_gets_with_a_slack_text() -> None:
    alerts = Alerts(AlertsConfig(hold_down_s=0))
    [event] = alerts.check(facts(0, spool_fill=0.95), 0)
    body = msgspec.json.decode(msgspec.json.encode(event))
    assert body == {
        "status": "firing", "rule": "spool_full", "subject": "*", "detail": "spool 95% full",
        "since": "2026-12-04T12:00:00Z", "at": "2026-12-04T12:00:00Z",
        "text": "[chrono] FIRING: spool_full: spool 95% full", "service": "chrono",
    }  # fmt: skip
