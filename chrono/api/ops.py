"""Operations: ``GET /live``, ``GET /ready`` and ``GET /health`` (no key), ``GET /status`` (admin
key, see ``ROUTE_ROLES``).

``/live`` is 200 whenever the process answers (its event loop runs). ``/ready`` is 200 only when
every readiness check passes (``chrono.readiness``), else 503 with the same body: each check with
``ok`` and a ``detail``, and the names of the failed ones, so a probe's log says why. Both are
probe answers, not errors: their bodies are theirs, not the error envelope, as ``/health``'s.
"""

from __future__ import annotations

import msgspec
from quart import Response
from quart_trio import QuartTrio

from chrono.api.context import ApiContext, json_response
from chrono.api.schema import HealthBody, LiveBody, ReadyBody
from chrono.model import time_text, utc_now


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/live")
    async def live() -> Response:
        return json_response(LiveBody(status="alive", timestamp=time_text(utc_now())))

    @app.get("/ready")
    async def ready() -> Response:
        report = ctx.ready()
        body = ReadyBody(
            status="ready" if report.ready else "not_ready",
            timestamp=time_text(utc_now()),
            checks=report.checks,
            failed=[c.name for c in report.checks if not c.ok],
        )
        return json_response(body, 200 if report.ready else 503)

    @app.get("/health")
    async def health() -> Response:
        body = msgspec.convert(ctx.health(), HealthBody)
        return json_response(body, 503 if body.status == "unhealthy" else 200)

    @app.get("/status")
    async def status() -> Response:
        return json_response(ctx.status())
