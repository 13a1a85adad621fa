"""The quart-trio app: the routes of ``ingest``, ``prices``, ``aggregates``, ``ftso``, ``ops``
and ``stream``, one key check, one error format.

Which key roles may use a route is one table, ``ROUTE_ROLES``, applied in one
``before_request``; routes read the role from ``g.role``. A ``StoreError`` out of any route is a
503 ``DATABASE_ERROR``. Every response carries ``X-Request-ID``.
"""

from __future__ import annotations

import logging
import secrets

from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from chrono.api.auth import Role, bearer
from chrono.api.context import ApiContext
from chrono.api.errors import ApiError, ErrorCode, error_body
from chrono.api.protocol import MAX_BODY_BYTES
from chrono.errors import StoreError

log = logging.getLogger(__name__)

RouteRoles = tuple[tuple[str, frozenset[Role]], ...]

# Route prefix -> the roles whose keys open it (an admin key opens every route). The first
# matching prefix wins; a route matching none needs no key. /stream checks its key itself (it
# may come in the first message).
ROUTE_ROLES: RouteRoles = (
    ("/internal/", frozenset({Role.INTERNAL})),
    ("/prices/", frozenset({Role.PUBLIC})),
    ("/aggregates/", frozenset({Role.PUBLIC})),
    ("/status", frozenset({Role.ADMIN})),
)
FTSO_ROLES: RouteRoles = (("/feed-values/", frozenset({Role.PUBLIC})),)  # [ftso] require_key


def roles_for(path: str, table: RouteRoles = ROUTE_ROLES) -> frozenset[Role] | None:
    """The roles that may use ``path``; ``None``: no key needed."""
    for prefix, roles in table:
        if path.startswith(prefix):
            return roles
    return None


def create_app(ctx: ApiContext) -> QuartTrio:
    from chrono.api import aggregates, ftso, ingest, ops, prices, stream

    table = ROUTE_ROLES + (FTSO_ROLES if ctx.ftso.require_key else ())

    app = QuartTrio("chrono")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # as the server's limit (413)

    @app.before_request
    async def identify() -> None:
        g.request_id = request.headers.get("X-Request-ID") or secrets.token_hex(8)
        g.role = None
        roles = roles_for(request.path, table)
        if roles is not None and request.url_rule is not None:  # unknown routes stay 404
            g.role = ctx.keys.require(bearer(request.headers.get("Authorization")), roles)

    @app.after_request
    async def tag_response(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> Response:
        log.warning("store error in %s %s: %s", request.method, request.path, error)
        return _error_response(ApiError(ErrorCode.DATABASE_ERROR, "the store is unavailable"))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = ErrorCode.of_status(error.code or 500)
        return _error_response(ApiError(code, error.description or error.name))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else "a request"
        log.error("unhandled error in %s", where, exc_info=error)
        return _error_response(ApiError(ErrorCode.INTERNAL_ERROR, "internal error"))

    ingest.register(app, ctx)
    prices.register(app, ctx)
    aggregates.register(app, ctx)
    ftso.register(app, ctx)
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
