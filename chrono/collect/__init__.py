"""The collector: one exchange connection, from WebSocket frames to validated feeds."""

from chrono.collect.collector import CollectorStats, run_collector

__all__ = ["CollectorStats", "run_collector"]
