"""``GET /metrics`` (no key) and the HTTP counters it reports.

Every request the app answers is counted by route template (``/prices/range``, never the raw
path, so the label set stays bounded; ``unmatched`` for unknown paths), method and status, and
timed per route. The exposition itself is ``chrono.metrics``.
"""

from __future__ import annotations

import time

from quart import Response, g, request
from quart_trio import QuartTrio

from chrono.api.context import ApiContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def register(app: QuartTrio, ctx: ApiContext) -> None:
    stats = ctx.http_stats

    async def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    # First of the before_request hooks: a request the key check refuses is timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_clock)

    @app.after_request
    async def count(response: Response) -> Response:
        started = getattr(g, "metrics_started", None)
        if started is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else "unmatched"
            stats.observe(route, request.method, response.status_code,
                          time.perf_counter() - started)  # fmt: skip
        return response

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await ctx.metrics(), content_type=CONTENT_TYPE)
