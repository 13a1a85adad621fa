"""The dashboard: ``GET /`` is one small HTML page, its CSS and script inline (no CDN, no build
step; the script allowed by its hash in the Content-Security-Policy, as ``/docs``), fed by
``GET /dashboard/state`` (a public key: collectors, every symbol's freshness per source, the
store and spool, active alerts) and by ``/stream`` (prices and consensus, live). The key is
entered in the page, or given as ``?key=``; the page keeps it in the browser's storage.
"""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files

import msgspec
from quart import Response
from quart_trio import QuartTrio

from chrono.alerts.engine import ActiveAlert
from chrono.api.context import ApiContext, html_response, inline_page, json_response
from chrono.model import utc_now


class SourceAge(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    age_s: float  # of its newest feed of the symbol


class SymbolState(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    sources: list[SourceAge]


class CollectorState(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    exchange: str
    state: str
    reconnects: int
    last_data_age_s: float | None
    stale_symbols: list[str]


class StoreState(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    state: str  # up | down | replaying
    spool_fill: float
    spool_batches: int


class DashboardState(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    state: str
    uptime_s: float
    timestamp: datetime
    collectors: list[CollectorState]
    symbols: list[SymbolState]
    store: StoreState
    alerts: list[ActiveAlert]


def dashboard_state(ctx: ApiContext) -> DashboardState:
    status, now = ctx.status(), utc_now()
    symbols = [
        SymbolState(symbol=symbol, sources=[
            SourceAge(source=source, age_s=round((now - feed.received_at).total_seconds(), 3))
            for source, feed in sorted(ctx.latest.by_source(symbol).items())
        ])
        for symbol in ctx.symbols
    ]  # fmt: skip
    writer = status.pipeline.writer
    return DashboardState(
        version=status.service.version,
        state=status.service.state,
        uptime_s=status.service.uptime_s,
        timestamp=now,
        collectors=[
            CollectorState(
                worker_id=c.worker_id,
                exchange=c.exchange,
                state=c.state,
                reconnects=c.reconnects,
                last_data_age_s=c.last_data_age_s,
                stale_symbols=c.stale_symbols,
            )
            for c in status.collectors
        ],
        symbols=symbols,
        store=StoreState(
            kind=status.store.kind,
            state=writer.store,
            spool_fill=round(writer.spool.fill, 4),
            spool_batches=writer.spool.batches,
        ),
        alerts=status.alerts.active,
    )


def _page() -> tuple[bytes, str]:
    """The page with its script inlined, and the policy that allows exactly that script."""
    here = files("chrono.api")
    return inline_page(
        here.joinpath("dashboard.html").read_text(),
        here.joinpath("dashboard.js").read_text(),
        more_policy="img-src 'self' data:; ",
    )


def register(app: QuartTrio, ctx: ApiContext) -> None:
    page, policy = _page()

    @app.get("/")
    async def dashboard() -> Response:
        return html_response(page, policy)

    @app.get("/dashboard/state")
    async def state() -> Response:
        return json_response(dashboard_state(ctx))
