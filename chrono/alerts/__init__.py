"""Alerts: the seed's rules and Chrono's own, evaluated in the process (docs/alerts.md)."""

from chrono.alerts.engine import AlertEvent, Alerts, AlertsStatistics
from chrono.alerts.rules import RULES, Condition, Facts

__all__ = ["RULES", "AlertEvent", "Alerts", "AlertsStatistics", "Condition", "Facts"]
