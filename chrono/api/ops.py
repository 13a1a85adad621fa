"""Operations: ``GET /health`` (no key) and ``GET /status`` (admin key)."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from chrono.api.app import ApiContext, json_response
from chrono.api.auth import Role, bearer


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/health")
    async def health() -> Response:
        body = ctx.health()
        return json_response(body, 503 if body["status"] == "unhealthy" else 200)

    @app.get("/status")
    async def status() -> Response:
        ctx.keys.require(bearer(request.headers.get("Authorization")), {Role.ADMIN})
        return json_response(ctx.status())
