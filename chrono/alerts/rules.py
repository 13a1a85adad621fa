"""The alert rules: each reads one picture of the service (``Facts``) and names what is wrong.

A rule gives ``Condition``s keyed by (rule, subject): the subject is a collector, a symbol, a
component, or ``"*"``; ``for_s`` is how long the condition must hold before the alert fires.
Rules are plain functions of the facts, so they are tested without a running service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import msgspec

from chrono.collect.stats import CollectorStatistics
from chrono.config import AlertsConfig

ALL = "*"


class Condition(msgspec.Struct, frozen=True):
    detail: str  # what a person reads in the log, /status and the webhook
    for_s: float = 0.0  # held this long before it fires


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules look at, read once per check."""

    now: datetime
    started_at: datetime
    collectors: Sequence[CollectorStatistics]
    store_up: bool
    store_state: str
    spool_fill: float
    below_quorum: Mapping[str, str] | None  # symbol -> detail; None: could not be computed
    ingest: tuple[int, int] | None  # (answers, errors) in the window; None: too few
    restarts: Mapping[str, int]  # component -> restarts since the last check


Conditions = dict[tuple[str, str], Condition]
Rule = Callable[[Facts, AlertsConfig], Conditions | None]  # None: unknown now, keep as it was


def no_data(f: Facts, c: AlertsConfig) -> Conditions:
    out: Conditions = {}
    for col in f.collectors:
        since = col.last_data_at or f.started_at
        age = (f.now - since).total_seconds()
        if age > c.no_data_s:
            never = "" if col.last_data_at else " (none since the start)"
            out["no_data", col.worker_id] = Condition(f"no data for {age:.0f} s{never}")
    return out


def collector_down(f: Facts, c: AlertsConfig) -> Conditions:
    return {
        ("collector_down", col.worker_id): Condition(
            f"{col.state}: {col.last_error or 'not streaming'}", c.collector_down_s
        )
        for col in f.collectors
        if col.state != "streaming"
    }


def collector_failing(f: Facts, c: AlertsConfig) -> Conditions:
    return {
        ("collector_failing", col.worker_id): Condition(
            f"{col.failures_in_a_row} connections in a row failed: {col.last_error}"
        )
        for col in f.collectors
        if col.failures_in_a_row >= c.consecutive_failures
    }


def ingest_errors(f: Facts, c: AlertsConfig) -> Conditions:
    if f.ingest is None:
        return {}
    answers, errors = f.ingest
    if errors / answers <= c.ingest_error_rate:
        return {}
    share = f"{errors} of {answers} POST /internal/ingest answers were errors"
    return {("ingest_errors", ALL): Condition(f"{share} over {c.ingest_window_s:g} s")}


def store_down(f: Facts, c: AlertsConfig) -> Conditions:
    if f.store_up:
        return {}
    return {("store_down", ALL): Condition(f"store {f.store_state}", c.store_down_s)}


def spool_full(f: Facts, c: AlertsConfig) -> Conditions:
    if f.spool_fill <= c.spool_fill:
        return {}
    return {("spool_full", ALL): Condition(f"spool {f.spool_fill:.0%} full")}


def consensus_below_quorum(f: Facts, c: AlertsConfig) -> Conditions | None:
    if f.below_quorum is None:
        return None
    return {
        ("consensus_below_quorum", symbol): Condition(detail, c.below_quorum_s)
        for symbol, detail in f.below_quorum.items()
    }


def supervisor_restart(f: Facts, c: AlertsConfig) -> Conditions:
    return {
        ("supervisor_restart", name): Condition(f"restarted {n} time{'s' * (n > 1)}")
        for name, n in f.restarts.items()
        if n
    }


RULES: dict[str, Rule] = {
    "no_data": no_data,
    "collector_down": collector_down,
    "collector_failing": collector_failing,
    "ingest_errors": ingest_errors,
    "store_down": store_down,
    "spool_full": spool_full,
    "consensus_below_quorum": consensus_below_quorum,
    "supervisor_restart": supervisor_restart,
}
