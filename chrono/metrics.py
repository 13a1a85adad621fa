"""``/metrics``: the Prometheus text exposition, written by ``prometheus_client``.

Every scrape reads the same typed objects ``/status`` does (``StatusReport``), the pipeline's
histograms, the HTTP counters and a live consensus of each configured symbol, gathered first by
the route (``Scrape``), then turned into metric families by a one-scrape collector, so nothing
here keeps a second copy of a counter that could drift from the component's own.

Conventions: names start with ``chrono_``; base units (seconds, bytes); counters end in
``_total``; event times end in ``_timestamp_seconds``; no key or key name in any label; labels
that multiply (symbol by source) are only taken for symbols the config names.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from chrono import __version__
from chrono.alerts.engine import active_by_rule
from chrono.consensus import Consensus
from chrono.histogram import Histogram, HistogramStatistics
from chrono.status import StatusReport

CONSENSUS_STATUSES = ("ok", "insufficient_sources", "guarded")


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """Requests of one (route template, method, status), and their durations."""

    route: str
    method: str
    status: int
    count: int


@dataclass(frozen=True, slots=True)
class Scrape:
    status: StatusReport
    exchange_latency: Mapping[str, HistogramStatistics]  # by collector
    stored_latency: HistogramStatistics
    streamed_latency: HistogramStatistics
    batch_sizes: HistogramStatistics
    write_seconds: HistogramStatistics
    symbol_times: Mapping[tuple[str, str], datetime]  # (symbol, source) -> newest receipt
    consensus: Sequence[Consensus]
    http_requests: Sequence[HttpRoute]
    http_seconds: Mapping[str, HistogramStatistics]  # by route template
    rate_limited: Mapping[str, int]  # by key role


class HttpStats:
    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._seconds: dict[str, Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests[route, method, status] += 1
        histogram = self._seconds.get(route)
        if histogram is None:
            histogram = self._seconds[route] = Histogram()
        histogram.observe(seconds)

    def requests(self) -> list[HttpRoute]:
        return [HttpRoute(r, m, s, n) for (r, m, s), n in sorted(self._requests.items())]

    def seconds(self) -> dict[str, HistogramStatistics]:
        return {route: h.statistics() for route, h in self._seconds.items()}


def exposition(scrape: Scrape) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneScrape(scrape))
    return generate_latest(registry)


class _OneScrape(Collector):
    def __init__(self, scrape: Scrape) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self._scrape
        yield from _service(s.status)
        yield from _collectors(s)
        yield from _pipeline(s)
        yield from _consensus(s.consensus)
        yield from _http(s)
        yield from _alerts(s.status)


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _counter(name: str, doc: str, value: float) -> Metric:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _histogram(
    name: str, doc: str, series: Iterable[tuple[Sequence[str], HistogramStatistics]],
    labels: Sequence[str] = (),
) -> Metric:  # fmt: skip
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, h in series:
        cumulative, buckets = 0, []
        for bound, count in zip([*h.buckets, float("inf")], h.counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        family.add_metric(list(values), buckets, h.sum)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _service(status: StatusReport) -> Iterator[Metric]:
    info = GaugeMetricFamily("chrono_build_info", "Chrono's version (value 1)",
                             labels=["version", "python"])  # fmt: skip
    info.add_metric([__version__, platform.python_version()], 1)
    yield info
    yield _gauge("chrono_start_time_seconds", "When this process started (Unix time)",
                 status.service.started_at.timestamp())  # fmt: skip
    restarts = CounterMetricFamily("chrono_supervisor_restarts", "Restarts of a supervised "
                                   "component after a crash", labels=["component"])  # fmt: skip
    for child in status.supervisor:
        restarts.add_metric([child.name], child.restarts)
    yield restarts


def _alerts(status: StatusReport) -> Iterator[Metric]:
    a = status.alerts
    active = GaugeMetricFamily("chrono_alert_active", "Alerts of the rule firing now "
                               "(docs/alerts.md)", labels=["rule"])  # fmt: skip
    for rule, n in active_by_rule(a.active).items():
        active.add_metric([rule], n)
    yield active
    yield _counter("chrono_alerts_fired", "Alerts fired", a.fired)
    yield _counter("chrono_alerts_resolved", "Alerts resolved", a.resolved)
    yield _counter("chrono_alert_webhook_failures", "Alert events a webhook never took "
                   "(refused, or retries spent)", a.webhook_failures)  # fmt: skip


def _collectors(s: Scrape) -> Iterator[Metric]:
    collectors = s.status.collectors
    feeds = CounterMetricFamily("chrono_feeds_collected", "Valid feeds a collector handed to the "
                                "pipeline", labels=["collector", "source"])  # fmt: skip
    reconnects = CounterMetricFamily("chrono_collector_reconnects", "Connections replaced, by "
                                     "reason", labels=["collector", "reason"])  # fmt: skip
    up = GaugeMetricFamily("chrono_collector_streaming", "1 while the collector streams data",
                           labels=["collector"])  # fmt: skip
    failing = GaugeMetricFamily("chrono_collector_failures_in_a_row", "Connections in a row "
                                "that failed before any data", labels=["collector"])  # fmt: skip
    last = GaugeMetricFamily("chrono_collector_last_data_timestamp_seconds", "When the "
                             "collector last received data", labels=["collector"])  # fmt: skip
    for c in collectors:
        feeds.add_metric([c.worker_id, c.exchange], c.feeds_collected)
        for reason, count in (("failure", c.reconnects), ("rotation", c.rotations),
                              ("rate_limited", c.rate_limited)):  # fmt: skip
            reconnects.add_metric([c.worker_id, reason], count)
        up.add_metric([c.worker_id], 1.0 if c.state == "streaming" else 0.0)
        failing.add_metric([c.worker_id], c.failures_in_a_row)
        if c.last_data_at is not None:
            last.add_metric([c.worker_id], c.last_data_at.timestamp())
    yield from (feeds, reconnects, up, failing, last)
    feeds_by = CounterMetricFamily(
        "chrono_feeds",
        "Feeds by source and what became of them: collected, duplicate (dropped by the "
        "fan-out), written (in a committed store batch)",
        labels=["source", "result"],
    )
    collected: dict[str, int] = {}
    for c in collectors:
        collected[c.exchange] = collected.get(c.exchange, 0) + c.feeds_collected
    p = s.status.pipeline
    for result, counts in (("collected", collected), ("duplicate", p.fanout.duplicates_by_source),
                           ("written", p.writer.written_by_source)):  # fmt: skip
        for source, count in sorted(counts.items()):
            feeds_by.add_metric([source, result], count)
    yield feeds_by
    invalid = CounterMetricFamily("chrono_feeds_invalid", "Frames or feeds refused, by reason",
                                  labels=["source", "reason"])  # fmt: skip
    for exchange, stats in s.status.exchanges.items():
        for reason, count in stats.invalid_frames.items():
            invalid.add_metric([exchange, reason], count)
    yield invalid
    symbol_last = GaugeMetricFamily("chrono_symbol_last_data_timestamp_seconds", "When a "
                                    "source's newest feed of a configured symbol was received",
                                    labels=["symbol", "source"])  # fmt: skip
    for (symbol, source), at in sorted(s.symbol_times.items()):
        symbol_last.add_metric([symbol, source], at.timestamp())
    yield symbol_last
    yield _histogram("chrono_exchange_to_received_seconds", "Exchange time to receipt, per feed",
                     (((name,), h) for name, h in sorted(s.exchange_latency.items())),
                     labels=["collector"])  # fmt: skip


def _pipeline(s: Scrape) -> Iterator[Metric]:
    p, store = s.status.pipeline, s.status.store
    writer, spool = p.writer, p.writer.spool
    yield _counter("chrono_feeds_duplicate", "Feeds dropped as repeats by the fan-out",
                   p.fanout.duplicates_dropped)  # fmt: skip
    yield _counter("chrono_feeds_received", "Feeds into the fan-out", p.fanout.feeds_in)
    yield _counter("chrono_store_rows_written", "Rows added to the store (repeats add none)",
                   store.rows_written)  # fmt: skip
    yield _counter("chrono_store_batches_written", "Store write transactions",
                   store.batches_written)  # fmt: skip
    yield _counter("chrono_store_write_errors", "Store writes that failed", writer.write_errors)
    yield _counter("chrono_store_duplicates_ignored", "Feeds the store already held",
                   writer.duplicates_ignored)  # fmt: skip
    yield _counter("chrono_snapshots_written", "Consensus snapshots written",
                   s.status.consensus.snapshots.written)  # fmt: skip
    yield _gauge("chrono_store_up", "1 while the store takes writes", 1.0 if
                 writer.store != "down" else 0.0)  # fmt: skip
    yield _gauge("chrono_spool_bytes", "Bytes of batches waiting in the spool", spool.bytes)
    yield _gauge("chrono_spool_max_bytes", "The spool's bound", spool.max_bytes)
    yield _gauge("chrono_spool_files", "Batches waiting in the spool", spool.batches)
    yield _gauge("chrono_intake_queued_lists", "Feed lists waiting for the fan-out",
                 p.intake_queued)  # fmt: skip
    yield _gauge("chrono_stream_clients", "Open /stream connections", p.stream.clients)
    yield _counter("chrono_stream_messages_dropped", "Updates a slow /stream client did not "
                   "get: superseded while it was behind, or queued when it was cut off",
                   p.stream.dropped)  # fmt: skip
    yield _counter("chrono_stream_clients_cut_off", "Slow /stream clients closed with 1008",
                   p.stream.cut_off)  # fmt: skip
    yield _counter("chrono_stream_clients_parked",
                   "Times a /stream client fell behind and was parked until it drained",
                   p.stream.parked)  # fmt: skip
    yield _gauge("chrono_stream_clients_lagging", "/stream clients behind now (conflating, parked)",
                 p.stream.lagging)  # fmt: skip
    yield _counter("chrono_stream_updates", "Updates sent to at least one /stream client",
                   p.stream.published)  # fmt: skip
    yield _gauge("chrono_stream_replay_updates", "Updates the /stream replay ring holds",
                 p.stream.replay_updates)  # fmt: skip
    yield _histogram("chrono_received_to_stored_seconds", "Receipt to store commit, per feed",
                     [((), s.stored_latency)])  # fmt: skip
    yield _histogram("chrono_received_to_streamed_seconds", "Receipt to the /stream queues, per "
                     "feed", [((), s.streamed_latency)])  # fmt: skip
    yield _histogram("chrono_batch_feeds", "Feeds per batch flushed to the writer",
                     [((), s.batch_sizes)])  # fmt: skip
    yield _histogram("chrono_store_write_duration_seconds", "One store write transaction",
                     [((), s.write_seconds)])  # fmt: skip


def _consensus(found: Sequence[Consensus]) -> Iterator[Metric]:
    sources = GaugeMetricFamily("chrono_consensus_sources", "Sources the consensus used",
                                labels=["symbol"])  # fmt: skip
    status = GaugeMetricFamily("chrono_consensus_status", "1 for the consensus' current status",
                               labels=["symbol", "status"])  # fmt: skip
    price = GaugeMetricFamily("chrono_consensus_price", "The consensus price (float: for graphs, "
                              "not for settlement)", labels=["symbol"])  # fmt: skip
    for c in found:
        sources.add_metric([c.symbol], c.num_sources)
        for name in CONSENSUS_STATUSES:
            status.add_metric([c.symbol, name], 1.0 if c.status == name else 0.0)
        if c.price is not None:
            price.add_metric([c.symbol], float(c.price))
    yield from (sources, status, price)


def _http(s: Scrape) -> Iterator[Metric]:
    requests = CounterMetricFamily("chrono_http_requests", "HTTP requests answered by the app",
                                   labels=["route", "method", "status"])  # fmt: skip
    for r in s.http_requests:
        requests.add_metric([r.route, r.method, str(r.status)], r.count)
    yield requests
    yield _histogram("chrono_http_request_duration_seconds", "Time to answer an HTTP request",
                     (((route,), h) for route, h in sorted(s.http_seconds.items())),
                     labels=["route"])  # fmt: skip
    limited = CounterMetricFamily("chrono_rate_limited_requests", "Requests refused with 429",
                                  labels=["role"])  # fmt: skip
    for role, count in sorted(s.rate_limited.items()):
        limited.add_metric([role], count)
    yield limited
