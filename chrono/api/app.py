"""The quart-trio app: the routes of ``ingest``, ``prices``, ``aggregates``, ``ftso``, ``ops``
and ``stream``, one key check, one error format.

Which key roles may use a route is one table, ``ROUTE_ROLES``, applied in one
``before_request``; routes read the role from ``g.role`` and the key's name from ``g.key_name``
(the name, never the key, is what logs see). The same hook takes a token from the key's rate
limit bucket, or from the client address's on routes that need no key (``api/limits.py``), and
answers CORS preflights for the public data routes (``CORS_PREFIXES``). A ``StoreError`` out of
any route is a 503 ``DATABASE_ERROR``. Every response carries ``X-Request-ID`` (the client's own
when it is 1..128 of ``[A-Za-z0-9._:-]``, else a fresh one), ``SAFE_HEADERS``, the
``X-RateLimit-*`` headers of the bucket it took from (none for an unlimited key), and CORS
headers on the public data routes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from chrono.api.auth import Role, bearer
from chrono.api.context import ApiContext
from chrono.api.errors import SAFE_HEADERS, ApiError, ErrorCode, error_body, request_id_of
from chrono.api.limits import RateState
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
    ("/dashboard/", frozenset({Role.PUBLIC})),
)
FTSO_ROLES: RouteRoles = (("/feed-values/", frozenset({Role.PUBLIC})),)  # [ftso] require_key

# The routes a browser page may call ([cors] origins); never /internal/*, /status or the probes.
CORS_PREFIXES = ("/prices/", "/aggregates/", "/feed-values/")
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
CORS_EXPOSE_HEADERS = (
    "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"
)


def roles_for(path: str, table: RouteRoles = ROUTE_ROLES) -> frozenset[Role] | None:
    """The roles that may use ``path``; ``None``: no key needed."""
    for prefix, roles in table:
        if path.startswith(prefix):
            return roles
    return None


def create_app(ctx: ApiContext) -> QuartTrio:
    from chrono.api import (
        aggregates,
        dashboard,
        ftso,
        ingest,
        metrics,
        openapi,
        ops,
        prices,
        stream,
    )

    table = ROUTE_ROLES + (FTSO_ROLES if ctx.ftso.require_key else ())

    app = QuartTrio("chrono")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # as the server's limit (413)

    @app.before_request
    async def identify() -> Response | None:
        g.request_id = request_id_of(request.headers.get("X-Request-ID"))
        g.role = None
        g.key_name = None
        g.rate = None
        roles = roles_for(request.path, table)
        if roles is not None and request.url_rule is not None:  # unknown routes stay 404
            try:
                key = ctx.keys.authenticate(bearer(request.headers.get("Authorization")))
            except ApiError:
                _charge(ctx.limiter.take_address(_client()))  # no key: its address pays
                raise
            g.key_name, g.role = key.name, key.role
            _charge(ctx.limiter.take_key(key))
            ctx.keys.permit(key, roles)
            return None
        _charge(ctx.limiter.take_address(_client()))
        unrouted = request.routing_exception
        if (
            request.method == "OPTIONS"
            and request.path.startswith(CORS_PREFIXES)
            and isinstance(unrouted, MethodNotAllowed)  # a route, not a 404
        ):
            return _preflight(ctx, unrouted.valid_methods or [])
        return None

    @app.after_request
    async def tag_response(response: Response) -> Response:
        headers = response.headers
        headers["X-Request-ID"] = getattr(g, "request_id", "") or request_id_of(None)
        for name, value in SAFE_HEADERS.items():
            headers.setdefault(name, value)
        rate: RateState | None = getattr(g, "rate", None)
        if rate is not None:
            headers.update(rate.headers())
        if request.path.startswith(CORS_PREFIXES):
            _cors(ctx, headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %d",
                request.method,
                request.path,
                response.status_code,
                extra={"data": {"request_id": headers["X-Request-ID"],
                                "key": getattr(g, "key_name", None)}},
            )  # fmt: skip
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
        response = _error_response(ApiError(code, error.description or error.name))
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

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
    openapi.register(app, ctx)
    metrics.register(app, ctx)
    stream.register(app, ctx)
    dashboard.register(app, ctx)
    return app


def _charge(state: RateState | None) -> None:
    """Remember the bucket's state for the answer's headers; over the limit: 429."""
    g.rate = state
    if state is not None and not state.allowed:
        raise state.error()


def _client() -> str:
    return request.remote_addr or "unknown"


def _preflight(ctx: ApiContext, methods: Iterable[str]) -> Response:
    """A CORS preflight (any OPTIONS) on a public data route: 204 with what it may send."""
    allowed = ", ".join(sorted({*methods, "OPTIONS"}))
    response = Response(b"", status=204)
    del response.headers["Content-Type"]
    response.headers["Allow"] = allowed
    if _allowed_origin(ctx) is not None:
        response.headers["Access-Control-Allow-Methods"] = allowed
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(ctx.cors.max_age_s)
    return response


def _allowed_origin(ctx: ApiContext) -> str | None:
    """What ``Access-Control-Allow-Origin`` says for this request: ``*``, its own origin when
    ``[cors] origins`` lists it, else None (no CORS headers)."""
    origins = ctx.cors.origins
    if "*" in origins:
        return "*"
    origin = request.headers.get("Origin")
    if origin and origin.lower() in (o.lower() for o in origins):
        return origin
    return None


def _cors(ctx: ApiContext, headers: Headers) -> None:
    origin = _allowed_origin(ctx)
    if "*" not in ctx.cors.origins:
        headers.add("Vary", "Origin")  # the answer depends on the request's Origin
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS


def _error_response(error: ApiError) -> Response:
    request_id = getattr(g, "request_id", "") or request_id_of(None)
    response = Response(
        error_body(error, request_id), status=error.status, content_type="application/json"
    )
    response.headers["X-Request-ID"] = request_id
    return response
