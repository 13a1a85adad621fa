"""Operations: ``GET /health`` (no key) and ``GET /status`` (admin key, see ``ROUTE_ROLES``)."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from chrono.api.context import ApiContext, json_response


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/health")
    async def health() -> Response:
        body = ctx.health()
        return json_response(body, 503 if body["status"] == "unhealthy" else 200)

    @app.get("/status")
    async def status() -> Response:
        return json_response(ctx.status())
