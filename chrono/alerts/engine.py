"""The alert engine: conditions in, each alert fired once and resolved once, out.

An alert (a rule and a subject) fires when its condition has held for the rule's ``for_s``;
a condition that clears before that never fires. Once firing, it resolves only after it has
been clear for ``[alerts] hold_down_s`` straight: a condition that comes back within that time
keeps the one alert going, so a flapping feed gives one alert, not one per flap. Every firing
and resolving is logged, counted, and handed to the webhooks (``chrono.alerts.webhook``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec
import trio

from chrono.alerts.rules import RULES, Condition, Facts, Rule
from chrono.config import AlertsConfig
from chrono.model import time_text

log = logging.getLogger(__name__)

WEBHOOK_QUEUE = 1000  # events waiting for the webhooks; past it the oldest waiting is dropped


class ActiveAlert(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    subject: str
    detail: str
    since: datetime


class AlertsStatistics(msgspec.Struct, frozen=True, kw_only=True):
    active: list[ActiveAlert]
    fired: int
    resolved: int
    webhook_posts: int  # events delivered to a webhook
    webhook_failures: int  # events a webhook never took (4xx, or retries spent)
    webhook_dropped: int  # events never posted: the queue was full


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook's JSON body; ``text`` is for Slack-compatible receivers."""

    status: Literal["firing", "resolved"]
    rule: str
    subject: str
    detail: str
    since: datetime
    at: datetime
    text: str
    service: str = "chrono"


@dataclass(slots=True)
class _State:
    first_bad: float  # trio time the condition began
    detail: str
    since: datetime | None = None  # firing since (wall clock); None: pending
    clear_since: float | None = None  # trio time it cleared, while firing


class Alerts:
    """The engine's state; ``check`` is one evaluation, ``run`` the loop."""

    def __init__(self, config: AlertsConfig, rules: dict[str, Rule] | None = None) -> None:
        self.config = config
        self.rules = RULES if rules is None else rules
        self._states: dict[tuple[str, str], _State] = {}
        self.fired = self.resolved = 0
        self.webhook_posts = self.webhook_failures = self.webhook_dropped = 0
        self._to_webhooks: list[AlertEvent] = []
        self._webhook_wake = trio.Event()

    def check(self, facts: Facts, now: float) -> list[AlertEvent]:
        """One evaluation at trio time ``now``: the alerts that fired or resolved."""
        bad: dict[tuple[str, str], Condition] = {}
        unknown: set[str] = set()
        for name, rule in self.rules.items():
            found = rule(facts, self.config)
            if found is None:
                unknown.add(name)
            else:
                bad.update(found)
        events = []
        for key, condition in bad.items():
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _State(now, condition.detail)
            state.detail, state.clear_since = condition.detail, None
            if state.since is None and now - state.first_bad >= condition.for_s:
                state.since = facts.now
                self.fired += 1
                events.append(self._event("firing", key, state, facts.now))
        for key, state in list(self._states.items()):
            if key in bad or key[0] in unknown:
                continue
            if state.since is None:
                del self._states[key]  # cleared before it fired
            elif state.clear_since is None:
                state.clear_since = now
            if state.clear_since is not None and now - state.clear_since >= self.config.hold_down_s:
                del self._states[key]
                self.resolved += 1
                events.append(self._event("resolved", key, state, facts.now))
        return events

    def _event(
        self, status: Literal["firing", "resolved"], key: tuple[str, str], s: _State, at: datetime
    ) -> AlertEvent:
        rule, subject = key
        assert s.since is not None
        what = f"{rule} ({subject})" if subject != "*" else rule
        text = f"[chrono] {status.upper()}: {what}: {s.detail}"
        return AlertEvent(status=status, rule=rule, subject=subject, detail=s.detail,
                          since=s.since, at=at, text=text)  # fmt: skip

    async def run(self, facts: Callable[[], Awaitable[Facts]]) -> None:
        """Every ``check_interval_s``: read the facts, check, log and hand on what changed."""
        while True:
            for event in self.check(await facts(), trio.current_time()):
                self._publish(event)
            await trio.sleep(self.config.check_interval_s)

    def _publish(self, event: AlertEvent) -> None:
        data = {"rule": event.rule, "subject": event.subject, "detail": event.detail,
                "since": time_text(event.since)}  # fmt: skip
        if event.status == "firing":
            log.warning("alert firing: %s", event.text, extra={"data": data})
        else:
            log.info("alert resolved: %s", event.text, extra={"data": data})
        if not self.config.webhooks:
            return
        if len(self._to_webhooks) >= WEBHOOK_QUEUE:
            self._to_webhooks.pop(0)
            self.webhook_dropped += 1
        self._to_webhooks.append(event)
        self._webhook_wake.set()

    async def next_for_webhooks(self) -> AlertEvent:
        """The oldest event not yet posted (the webhook poster's queue)."""
        while not self._to_webhooks:
            self._webhook_wake = trio.Event()
            await self._webhook_wake.wait()
        return self._to_webhooks.pop(0)

    def statistics(self) -> AlertsStatistics:
        active = [
            ActiveAlert(rule=rule, subject=subject, detail=s.detail, since=s.since)
            for (rule, subject), s in sorted(self._states.items())
            if s.since is not None
        ]
        return AlertsStatistics(
            active=active, fired=self.fired, resolved=self.resolved,
            webhook_posts=self.webhook_posts, webhook_failures=self.webhook_failures,
            webhook_dropped=self.webhook_dropped,
        )  # fmt: skip


def active_by_rule(active: Sequence[ActiveAlert]) -> dict[str, int]:
    """Every rule, with how many of ``active`` are its (``chrono_alert_active``)."""
    counts = dict.fromkeys(RULES, 0)
    for alert in active:
        counts[alert.rule] = counts.get(alert.rule, 0) + 1
    return counts
