"""The quart-trio app: routes from ``prices``, ``ops`` and ``stream``, one error format.

``ApiContext`` is everything the routes read from the running service; the app holds no state
of its own. Every response carries ``X-Request-ID``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from chrono.api.auth import Keys
from chrono.api.errors import CODE_OF_STATUS, ApiError, error_body
from chrono.api.protocol import MAX_BODY_BYTES
from chrono.pipeline.latest import LatestPrices
from chrono.pipeline.stream import StreamHub
from chrono.store import Store

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


@dataclass
class ApiContext:
    latest: LatestPrices
    store: Store
    hub: StreamHub
    keys: Keys
    status: Callable[[], dict[str, Any]]  # what GET /status returns
    health: Callable[[], dict[str, Any]]  # {"status": healthy|degraded|unhealthy, "services"...}
    stopping: trio.Event = field(default_factory=trio.Event)
    stream_max_message_bytes: int = 65_536  # a bigger client message closes /stream with 1009


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status=status, content_type="application/json")


def create_app(ctx: ApiContext) -> QuartTrio:
    from chrono.api import ops, prices, stream  # routes import this module's helpers

    app = QuartTrio("chrono")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # as the server's limit (413)

    @app.before_request
    async def assign_request_id() -> None:
        g.request_id = request.headers.get("X-Request-ID") or secrets.token_hex(8)

    @app.after_request
    async def tag_response(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        kind = CODE_OF_STATUS.get(error.code or 500, "INTERNAL_ERROR")
        return _error_response(ApiError(kind, error.description or error.name))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else "a request"
        log.error("unhandled error in %s", where, exc_info=error)
        return _error_response(ApiError("INTERNAL_ERROR", "internal error"))

    prices.register(app, ctx)
    ops.register(app, ctx)
    stream.register(app, ctx)
    return app


def _error_response(error: ApiError) -> Response:
    request_id = getattr(g, "request_id", "") or secrets.token_hex(8)
    response = Response(
        error_body(error, request_id), status=error.status, content_type="application/json"
    )
    response.headers["X-Request-ID"] = request_id
    return response
