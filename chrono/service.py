"""The service: one root nursery that runs every component and drains on a signal.

::

    root nursery
    ├─ signal watcher: first SIGINT/SIGTERM drains; a second (or a drain past its deadline)
    │  raises ShutdownAborted, so the process exits 1
    ├─ supervisor ─ HTTP/WS server (hypercorn trio worker, quart-trio app)
    ├─ supervisor ─ stream hub (heartbeats, cut-offs, consensus and status channels)
    ├─ supervisor ─ consensus snapshots (every [consensus] snapshot_interval_s)
    └─ pipeline nursery
       ├─ supervisor ─ fan-out ─┐ intake (bounded) -> latest prices, stream hub, batcher
       ├─ supervisor ─ batcher  ─┤ -> writer channel (bounded)
       ├─ supervisor ─ writer   ─┘ -> store
       └─ collectors nursery (its own cancel scope): supervisor ─ collector, one per config entry

Drain order (docs/architecture.md): the collectors' scope is cancelled -> the intake's send end
closes -> fan-out, batcher and writer drain through ``EndOfChannel`` -> the last batch is
written -> stream clients are told 1001 and the HTTP server stops within its grace period.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import trio

from chrono import __version__
from chrono.alerts import Alerts, Facts
from chrono.alerts.webhook import post_events
from chrono.api import ApiContext, create_app, serve_http
from chrono.api.auth import Keys
from chrono.api.limits import Limiter
from chrono.api.schema import consensus_row
from chrono.collect import CollectorStats, ConnectBudgets, run_collector
from chrono.config import Config
from chrono.consensus.snapshots import SnapshotTaker
from chrono.consensus.sources import Aggregator
from chrono.errors import ChronoError, StoreError
from chrono.feeds import Feeds
from chrono.metrics import Scrape, exposition
from chrono.model import time_text, utc_now
from chrono.pipeline.batcher import Batcher
from chrono.pipeline.fanout import FanOut
from chrono.pipeline.latest import LatestPrices
from chrono.pipeline.writer import IngestWriter
from chrono.readiness import Readiness, readiness
from chrono.status import (
    ConsensusStatistics,
    ExchangeStatistics,
    PipelineStatistics,
    ServiceStatistics,
    StatusReport,
)
from chrono.store import Store, open_store
from chrono.store.forward import ForwardStore
from chrono.store.spool import Spool
from chrono.stream import ChannelValue, StreamHub
from chrono.stream.messages import encode_text
from chrono.supervise import ChildStats, RestartPolicy, supervise
from chrono.systemd import Notifier

log = logging.getLogger(__name__)

Child = Callable[[], Awaitable[None]]

# Feed lists (one per socket read: up to ~600 feeds) collectors may run ahead of the fan-out;
# bounded in lists, so an overloaded store holds at most ~40k feeds here, not millions.
INTAKE_LISTS = 64
TO_BATCHER_LISTS = 16  # lists of up to MERGE_MAX_FEEDS the fan-out may run ahead of the batcher
TO_WRITER_BATCHES = 100  # up to WRITE_MAX_FEEDS of 100-feed batches: merged, the loop runs on
SNAPSHOT_SETTLE_MARGIN_S = 1.0  # beyond the batch interval, for a snapshot's feeds to be stored
STATUS_EVERY_S = 5.0  # a STATUS= line for systemctl status, under systemd


class ShutdownAborted(ChronoError):
    """A second signal, or a drain past its deadline: exit non-zero now."""


class Service:
    """Builds every component from the config; ``run`` starts them, ``stop`` drains."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        forward = ForwardStore(config.forward) if config.forward else None
        self.store: Store = store or forward or open_store(config.storage)
        self.started_at = utc_now()
        self.state = "starting"
        self.latest = LatestPrices()
        self.aggregator = Aggregator(config, self.latest, self.store)
        configured = set(config.symbols())
        self.hub = StreamHub(
            config.stream,
            self.latest,
            known=lambda symbol: symbol in configured or bool(self.latest.by_source(symbol)),
            consensus=self._stream_consensus,
            states=self.stream_states,
        )
        self._intake_send, intake = trio.open_memory_channel[Feeds](INTAKE_LISTS)
        to_batcher, batcher_in = trio.open_memory_channel[Feeds](TO_BATCHER_LISTS)
        to_writer, writer_in = trio.open_memory_channel[Feeds](TO_WRITER_BATCHES)
        self._intake = intake
        self.fanout = FanOut(intake, to_batcher, self.latest, self.hub)
        self.batcher = Batcher(batcher_in, to_writer, config.batch)
        storage = config.storage
        self.writer = IngestWriter(
            writer_in,
            self.store,
            Spool(storage.spool_dir, storage.spool_max_bytes),
            retry_initial_s=storage.retry_initial_s,
            retry_cap_s=storage.retry_max_s,
        )
        self.collectors = [
            CollectorStats(c.worker_id, c.exchange, list(c.symbols)) for c in config.collectors
        ]
        self.children: dict[str, ChildStats] = {}
        sup = config.supervisor
        self.policy = RestartPolicy(
            initial_s=sup.backoff_initial_s,
            cap_s=sup.backoff_max_s,
            healthy_after_s=sup.healthy_after_s,
            budget=sup.restart_budget,
            window_s=sup.budget_window_s,
        )
        settle_s = config.batch.max_interval_ms / 1000 + SNAPSHOT_SETTLE_MARGIN_S
        self.snapshots = SnapshotTaker(
            self.aggregator, self.store, self.store, config.symbols(),
            stored_up=lambda: self.writer.healthy,
            interval_s=config.consensus.snapshot_interval_s, settle_s=settle_s,
            retry_initial_s=storage.retry_initial_s, retry_cap_s=storage.retry_max_s,
        )  # fmt: skip
        self.api = ApiContext(
            latest=self.latest,
            reader=self.store,
            writer=self.store,
            aggregator=self.aggregator,
            hub=self.hub,
            keys=Keys(config.auth),
            status=self.status,
            health=self.health,
            ready=self.readiness,
            metrics=self.metrics,
            rules=config.validation.rules(),
            intake=self.intake,
            seen=self.fanout.seen,
            consensus=config.consensus,
            ftso=config.ftso,
            stream_max_message_bytes=config.server.stream_max_message_bytes,
            limiter=Limiter(config.limits),
            cors=config.cors,
            symbols=config.symbols(),
        )
        self.alerts = Alerts(config.alerts)
        self._ingest_window: deque[tuple[float, int, int]] = deque()  # (time, answers, errors)
        self._restarts_seen: dict[str, int] = {}
        self._collecting = trio.CancelScope()
        self.http_port = 0
        self.notifier = Notifier()  # systemd's READY, STATUS, WATCHDOG, STOPPING; or nothing
        self._progress_seen = -1  # the fan-out's feeds_in at the watchdog's last look
        self._rate_mark = (0.0, 0)  # (trio time, feeds_in) at the last STATUS line

    def _supervised(self, name: str, child: Child) -> Child:
        stats = self.children[name] = ChildStats(name)
        return partial(supervise, name, child, self.policy, stats)

    def intake(self) -> trio.MemorySendChannel[Feeds]:
        """A new sender into the pipeline (for ingest); close it, or the drain waits for it."""
        return self._intake_send.clone()

    def abort(self) -> None:
        """Give up the drain: collectors still handing feeds over fail at once."""
        self._intake.close()

    def stop(self) -> None:
        """Begin the drain: stop collecting; everything received is still written."""
        if self.state == "running":
            self.state = "draining"
            self.notifier.stopping()
        self._collecting.cancel()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until drained; reports the HTTP port once serving and collecting."""
        try:
            await self.store.open()
            await self._warm_latest()
        except StoreError as exc:  # collect anyway: the writer spools until the store is there
            log.error("store unavailable at start: %s; spooling until it is back", exc)
            self.writer.store_down(str(exc))
        try:
            await self._run(task_status)
        finally:
            self.notifier.close()
            with trio.CancelScope(shield=True):
                await self.store.aclose()
        log.info("drained", extra={"data": {"feeds_written": self.writer.feeds_written}})

    async def _warm_latest(self) -> None:
        """The newest stored feed of each source still fresh, into memory: after a restart the
        consensus has every source at once, not only those that have ticked since."""
        since = utc_now() - timedelta(milliseconds=self.config.consensus.max_age_ms)
        symbols = self.config.symbols()
        if symbols:
            self.latest.update(Feeds.of(await self.store.latest_by_source(symbols, since=since)))

    async def _run(self, task_status: trio.TaskStatus[int]) -> None:
        app = create_app(self.api)
        stopping = self.api.stopping
        serve = partial(serve_http, app, self.config.server, stopping, self.config.stream)
        heartbeats, snapshotting, notifying, alerting = (
            trio.CancelScope(),
            trio.CancelScope(),
            trio.CancelScope(),
            trio.CancelScope(),
        )
        async with trio.open_nursery() as root:
            # returns once first serving; a restart's port is in children["http"].started_value
            self.http_port = await root.start(self._supervised("http", serve))
            host = self.config.server.host
            log.info("http listening", extra={"data": {"host": host, "port": self.http_port}})
            root.start_soon(_within, heartbeats, self._supervised("stream_hub", self.hub.run))
            if self.notifier.enabled:
                root.start_soon(_within, notifying, self._notify_systemd)
            if self.config.alerts.enabled:
                root.start_soon(_within, alerting, self._supervised("alerts", self._run_alerts))
            if self.config.consensus.snapshot_interval_s and self.config.forward is None:
                snapshots = self._supervised("snapshots", self.snapshots.run)
                root.start_soon(_within, snapshotting, snapshots)
            await self._run_pipeline(task_status)
            self.state = "stopping"
            heartbeats.cancel()
            snapshotting.cancel()
            notifying.cancel()
            alerting.cancel()
            self.hub.close_all()  # stream handlers close with 1001 instead of being cancelled
            stopping.set()  # the server finishes in-flight requests within its grace period
            root.cancel_scope.deadline = (
                trio.current_time() + self.config.server.graceful_timeout_s + 1
            )

    async def _run_pipeline(self, task_status: trio.TaskStatus[int]) -> None:
        rules = self.api.rules
        budgets = ConnectBudgets()  # per exchange, shared by its collectors
        async with trio.open_nursery() as pipeline:
            pipeline.start_soon(self._supervised("fanout", self.fanout.run))
            pipeline.start_soon(self._supervised("batcher", self.batcher.run))
            pipeline.start_soon(self._supervised("writer", self.writer.run))
            async with self._intake_send:
                with self._collecting:
                    async with trio.open_nursery() as collectors:
                        for cfg, stats in zip(self.config.collectors, self.collectors, strict=True):
                            run = partial(
                                run_collector, cfg, rules, self._intake_send, stats, budgets
                            )
                            collectors.start_soon(
                                self._supervised(f"collector:{cfg.worker_id}", run)
                            )
                        self.state = "running"
                        task_status.started(self.http_port)
                        self.notifier.ready(self.summary())
                        await trio.sleep_forever()  # until stop(): ingest may feed the intake
            for stats in self.collectors:
                stats.state = "stopped"

    def progressing(self) -> bool:
        """The watchdog's question: does the pipeline move? Yes while nothing waits in the
        intake, or the fan-out took feeds since the last look."""
        taken = self.fanout.feeds_in
        moved = taken != self._progress_seen
        self._progress_seen = taken
        return moved or self._intake.statistics().current_buffer_used == 0

    def summary(self) -> str:
        """One line for ``systemctl status``: feeds/s since the last line, sources fresh, the
        store."""
        now, taken = trio.current_time(), self.fanout.feeds_in
        since, before = self._rate_mark
        self._rate_mark = (now, taken)
        rate = (taken - before) / (now - since) if since and now > since else 0.0
        states = self.stream_states()
        symbols = [v for k, v in states.items() if k.startswith("symbol:")]
        sources = [v for k, v in states.items() if k.startswith("source:")]
        return (
            f"{self.state}: {rate:,.0f} feeds/s, sources up {sources.count('up')}/{len(sources)}, "
            f"symbols fresh {symbols.count('fresh')}/{len(symbols)}, store {self.writer.state()}"
        )

    async def _notify_systemd(self) -> None:
        """Under systemd: the watchdog's pings, and a ``STATUS=`` line every few seconds."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.notifier.watchdog, self.progressing)
            while True:
                await trio.sleep(STATUS_EVERY_S)
                self.notifier.status(self.summary())

    async def _run_alerts(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.config.alerts.webhooks:
                nursery.start_soon(post_events, self.alerts)
            await self.alerts.run(self.alert_facts)

    async def alert_facts(self) -> Facts:
        """One picture of the service for the alert rules."""
        config = self.config
        below: dict[str, str] | None = None
        try:
            symbols = config.symbols()
            below = {
                c.symbol: f"{c.num_sources} of {config.consensus.min_sources} sources needed"
                for c in (await self.aggregator.live(symbols) if symbols else [])
                if c.status == "insufficient_sources"
            }
        except StoreError:
            pass  # unknown this time: the rule keeps what it had
        restarts = {}
        for name, child in self.children.items():
            restarts[name] = child.restarts - self._restarts_seen.get(name, child.restarts)
            self._restarts_seen[name] = child.restarts
        return Facts(
            now=utc_now(),
            started_at=self.started_at,
            collectors=[c.statistics() for c in self.collectors],
            store_up=self.writer.healthy,
            store_state=self.writer.state(),
            spool_fill=self.writer.spool.fill(),
            below_quorum=below,
            ingest=self._ingest_errors(),
            restarts=restarts,
        )

    def _ingest_errors(self) -> tuple[int, int] | None:
        """(answers, errors) of ``POST /internal/ingest`` over ``[alerts] ingest_window_s``;
        None while there were fewer than ``ingest_min_requests``."""
        config, now = self.config.alerts, trio.current_time()
        answers = errors = 0
        for r in self.api.http_stats.requests():
            if r.route == "/internal/ingest" and r.method == "POST":
                answers += r.count
                errors += r.count if r.status >= 400 else 0
        window = self._ingest_window
        window.append((now, answers, errors))
        while len(window) > 1 and now - window[1][0] >= config.ingest_window_s:
            window.popleft()  # the oldest kept is the window's start
        _, answers_then, errors_then = window[0]
        seen = answers - answers_then
        return (seen, errors - errors_then) if seen >= config.ingest_min_requests else None

    async def _stream_consensus(self, symbols: list[str]) -> list[ChannelValue]:
        """The consensus channel's values: each live consensus as ``/aggregates/consensus``
        gives it."""
        return [
            ChannelValue(
                c.symbol,
                None if c.price is None else float(c.price),
                c.status,
                encode_text({"data": consensus_row(c)}),
            )
            for c in await self.aggregator.live(symbols)
        ]

    def stream_states(self) -> dict[str, str]:
        """The status channel's subjects and their states now: each source up while one of its
        collectors streams, each configured symbol fresh while a source's newest feed is younger
        than ``[consensus] max_age_ms``, the store up while the writer is healthy."""
        states: dict[str, str] = {}
        for c in self.collectors:
            up = c.state == "streaming" or states.get(f"source:{c.exchange}") == "up"
            states[f"source:{c.exchange}"] = "up" if up else "down"
        oldest = utc_now() - timedelta(milliseconds=self.config.consensus.max_age_ms)
        for symbol in self.config.symbols():
            newest = max((f.received_at for f in self.latest.by_source(symbol).values()),
                         default=None)  # fmt: skip
            states[f"symbol:{symbol}"] = "fresh" if newest and newest >= oldest else "stale"
        states["store"] = "up" if self.writer.healthy else "down"
        return states

    def status(self) -> StatusReport:
        return StatusReport(
            service=ServiceStatistics(
                version=__version__,
                state=self.state,
                started_at=self.started_at,
                uptime_s=round((utc_now() - self.started_at).total_seconds(), 3),
            ),
            collectors=[c.statistics() for c in self.collectors],
            exchanges=_by_exchange(self.collectors),
            pipeline=PipelineStatistics(
                intake_queued=self._intake.statistics().current_buffer_used,
                fanout=self.fanout.statistics(),
                batcher=self.batcher.statistics(),
                writer=self.writer.statistics(),
                latest=self.latest.statistics(),
                stream=self.hub.statistics(),
            ),
            consensus=ConsensusStatistics(
                computed=self.aggregator.computed,
                guarded=self.aggregator.guarded,
                snapshots=self.snapshots.statistics(),
            ),
            store=self.store.statistics(),
            limits=self.api.limiter.statistics(),
            supervisor=[c.statistics() for c in self.children.values()],
            alerts=self.alerts.statistics(),
        )

    async def metrics(self) -> bytes:
        """``/metrics``: the status, the histograms, and a live consensus of every configured
        symbol (left out of a scrape while the store it may need fails)."""
        symbols = self.config.symbols()
        try:
            consensus = await self.aggregator.live(symbols) if symbols else []
        except StoreError:
            consensus = []
        status = self.status()
        scrape = Scrape(
            status=status,
            exchange_latency={
                c.worker_id: c.exchange_latency.statistics() for c in self.collectors
            },
            stored_latency=self.writer.stored_latency.statistics(),
            streamed_latency=self.hub.streamed_latency.statistics(),
            batch_sizes=self.batcher.sizes.statistics(),
            write_seconds=self.writer.write_seconds.statistics(),
            symbol_times={
                (s, source): f.received_at
                for s in symbols
                for source, f in self.latest.by_source(s).items()
            },
            consensus=consensus,
            http_requests=self.api.http_stats.requests(),
            http_seconds=self.api.http_stats.seconds(),
            rate_limited=status.limits.rate_limited,
        )
        return exposition(scrape)

    def readiness(self) -> Readiness:
        return readiness(
            writer=self.writer,
            collectors=self.collectors,
            latest=self.latest,
            symbols=self.config.symbols(),
            max_age=timedelta(milliseconds=self.config.consensus.max_age_ms),
            now=utc_now(),
        )

    def health(self) -> dict[str, Any]:
        flowing = {c.worker_id: c.state for c in self.collectors}
        store_ok = self.writer.healthy
        if not store_ok:
            status = "degraded"
        elif all(state == "streaming" for state in flowing.values()):
            status = "healthy"
        else:
            status = "degraded"
        if any(c.state == "gave_up" for c in self.children.values()):
            status = "unhealthy"
        return {
            "status": status,
            "timestamp": time_text(utc_now()),
            "services": {"store": self.writer.state(), "collectors": flowing},
            "uptime_seconds": round((utc_now() - self.started_at).total_seconds(), 3),
        }


def _by_exchange(collectors: list[CollectorStats]) -> dict[str, ExchangeStatistics]:
    """Invalid frames by exchange and reason (and feeds), summed over its collectors."""
    feeds: Counter[str] = Counter()
    invalid: dict[str, Counter[str]] = {}
    for c in collectors:
        feeds[c.exchange] += c.feeds_collected
        invalid.setdefault(c.exchange, Counter()).update(c.invalid)
    return {
        name: ExchangeStatistics(feeds_collected=feeds[name], invalid_frames=dict(invalid[name]))
        for name in invalid
    }


async def _within(scope: trio.CancelScope, child: Child) -> None:
    with scope:
        await child()


async def run_service(
    config: Config, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """The service with signal handling: what ``chrono run`` runs."""
    if not config.collectors:  # allowed (a node that only serves its store), never silent
        log.warning("no [[collectors]] in the config: nothing is collected, the store is served")
    service = Service(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, service, config.service.drain_timeout_s)
            await service.run(task_status=task_status)
            nursery.cancel_scope.cancel()


async def _watch_signals(signals: Any, service: Service, drain_timeout_s: float) -> None:
    async for signum in signals:
        log.info("%s: draining", signal.Signals(signum).name)
        service.stop()
        break
    reason = f"drain did not finish within {drain_timeout_s:g} s"
    with trio.move_on_after(drain_timeout_s):
        async for signum in signals:
            reason = f"second signal ({signal.Signals(signum).name}): exiting without draining"
            break
    service.abort()
    raise ShutdownAborted(reason)
