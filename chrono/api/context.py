"""What routes need from the running service, and the helpers every route uses.

Routes import this module, never ``app.py``: the app wires routes together, the context is what
they read. ``ApiContext`` holds no state of its own beyond the service's parts it points at.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import trio
from quart import Response, request

from chrono.api.auth import Keys
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.limits import Limiter
from chrono.config import ConsensusConfig, CorsConfig, FtsoConfig
from chrono.consensus.sources import Aggregator
from chrono.feeds import Feeds
from chrono.metrics import HttpStats
from chrono.model import FeedKey, FeedRules, is_canonical_symbol
from chrono.pipeline.latest import LatestPrices
from chrono.readiness import Readiness
from chrono.status import StatusReport
from chrono.store import StoreReader, StoreWriter
from chrono.stream.hub import StreamHub

S = TypeVar("S", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
MAX_SYMBOLS = 100  # per request
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


@dataclass
class ApiContext:
    latest: LatestPrices
    reader: StoreReader  # every read route
    writer: StoreWriter  # only for what the API itself records (FTSO answers)
    aggregator: Aggregator
    hub: StreamHub
    keys: Keys
    status: Callable[[], StatusReport]  # what GET /status encodes
    health: Callable[[], dict[str, Any]]  # {"status": healthy|degraded|unhealthy, "services"...}
    ready: Callable[[], Readiness]  # GET /ready: each check, and whether all pass
    # Ingest: the rules collectors' feeds pass, a new sender into the pipeline's intake (the
    # caller closes it; ``trio.ClosedResourceError`` once the service drains), and whether the
    # fan-out already saw a feed (so a reply can count duplicates).
    rules: FeedRules
    intake: Callable[[], trio.MemorySendChannel[Feeds]]
    seen: Callable[[FeedKey], bool]
    metrics: Callable[[], Awaitable[bytes]]  # the exposition, built for each scrape
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    ftso: FtsoConfig = field(default_factory=FtsoConfig)
    http_stats: HttpStats = field(default_factory=HttpStats)  # what /metrics says of HTTP
    stopping: trio.Event = field(default_factory=trio.Event)
    stream_max_message_bytes: int = 65_536  # a bigger client message closes /stream with 1009
    limiter: Limiter = field(default_factory=Limiter)  # rate limits, /stream slots
    cors: CorsConfig = field(default_factory=CorsConfig)
    symbols: list[str] = field(default_factory=list)  # the configured ones (the dashboard's)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status=status, content_type="application/json")


HTML = "text/html; charset=utf-8"


def inline_page(template: str, script: str, *, more_policy: str = "") -> tuple[bytes, str]:
    """A page whose one script is inlined at ``/*SCRIPT*/``, and the Content-Security-Policy
    that allows exactly that script (by its hash) and fetches from this origin only."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        f"connect-src 'self'; {more_policy}frame-ancestors 'none'"
    )
    return template.replace("/*SCRIPT*/", script).encode(), policy


def html_response(page: bytes, policy: str) -> Response:
    response = Response(page, content_type=HTML)
    response.headers["Content-Security-Policy"] = policy
    return response


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``), for ``latency_ms``."""
    return round((time.perf_counter() - started) * 1000, 3)


def symbol_list(raw: str) -> list[str]:
    """``BTC/USD,eth/usd`` -> ``["BTC/USD", "ETH/USD"]`` (upper-cased, deduplicated, in order),
    or a 400 listing what is not ``BASE/QUOTE``."""
    symbols = list(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
    if not symbols:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "symbols is required, e.g. BTC/USD,ETH/USD",
                       {"parameter": "symbols"})  # fmt: skip
    if len(symbols) > MAX_SYMBOLS:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"at most {MAX_SYMBOLS} symbols per request",
                       {"parameter": "symbols"})  # fmt: skip
    bad = [s for s in symbols if not is_canonical_symbol(s)]
    if bad:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "symbols must be BASE/QUOTE",
                       {"parameter": "symbols", "invalid": bad})  # fmt: skip
    return symbols


def query(kind: type[S]) -> S:
    """The request's query parameters as ``kind`` (a Struct; strings converted to its field
    types), or a 400 naming the parameter. A parameter given twice, or one ``kind`` does not
    know, is refused: a typo (``symbol=`` for ``symbols=``) must not be silently ignored."""
    args = request.args
    repeated = sorted(k for k in args if len(args.getlist(k)) > 1)
    if repeated:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "a parameter is given twice",
                       {"parameters": repeated})  # fmt: skip
    try:
        return msgspec.convert(args.to_dict(), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise _parameter_error(str(exc)) from None


def msgspec_problem(text: str) -> tuple[str, str, str]:
    """msgspec's ``Expected `str`, got `int` - at `$.symbol``` as (field, code, detail); code
    is ``missing_field``, ``unknown_field`` or ``invalid_value``."""
    match = _PATH.search(text)
    if match:
        return match.group(1), "invalid_value", text[: match.start()]
    name = text.split("`")[1] if text.count("`") >= 2 else ""
    if text.startswith("Object missing required field"):
        return name, "missing_field", f"{name} is required"
    if text.startswith("Object contains unknown field"):
        return name, "unknown_field", f"unknown field {name!r}"
    return "", "invalid_value", text


def _parameter_error(text: str) -> ApiError:
    """msgspec's ``Expected `int` >= 1 - at `$.limit``` as a 400 naming ``limit``."""
    name, code, detail = msgspec_problem(text)
    if code == "unknown_field":
        detail = f"unknown parameter {name!r}"
    message = f"{name}: {detail}" if code == "invalid_value" and name else detail
    return ApiError(ErrorCode.VALIDATION_ERROR, message, {"parameter": name})
