"""The collector: one exchange connection, from WebSocket frames to validated feeds."""

from chrono.collect.collector import run_collector
from chrono.collect.pacing import ConnectBudgets
from chrono.collect.stats import CollectorStats

__all__ = ["CollectorStats", "ConnectBudgets", "run_collector"]
