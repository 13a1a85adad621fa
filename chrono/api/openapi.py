"""``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (a page that renders it), no key.

The document is generated, never written by hand: the component schemas by
``msgspec.json.schema_components`` from the answer Structs the routes build (``api/schema.py``)
and the request Structs they decode; the query parameters from the query Structs' fields, with
their ``Meta`` constraints; the paths from the app's own ``url_map``, so a route is never left
out (one missing from ``OPERATIONS`` is listed as undocumented); which key roles open a route
from ``ROUTE_ROLES`` (the same table the key check applies); the error answers from
``ErrorCode``, each with the envelope's schema. ``OPERATIONS`` is all that is written per route:
its query type, body type, answers and error statuses.

``/docs`` is one self-contained page (inline script and style, allowed by hash in its own
``Content-Security-Policy``; nothing fetched but ``/openapi.json`` from the same server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from quart import Response
from quart_trio import QuartTrio

import chrono
from chrono.api import schema
from chrono.api.aggregates import ConsensusQuery, HistoryQuery
from chrono.api.auth import Role
from chrono.api.context import HTML, ApiContext, html_response, inline_page
from chrono.api.dashboard import DashboardState
from chrono.api.errors import ErrorCode
from chrono.api.ftso import ROUND_RULE, FeedValuesRequest
from chrono.api.ingest import MAX_FEEDS, _Envelope, _Feed
from chrono.api.metrics import CONTENT_TYPE as METRICS_TYPE
from chrono.api.prices import LatestQuery, RangeQuery
from chrono.status import StatusReport

REF = "#/components/schemas/{name}"
JSON = "application/json"


@dataclass(frozen=True)
class Operation:
    """One route and method: what it reads, what it answers (status -> a Struct, a tuple of
    Structs for one of them, or a media type for a body that is not JSON), the errors it may
    answer beyond those every route may (429) or a keyed one (401, 403)."""

    summary: str
    answers: dict[int, Any]
    query: type[msgspec.Struct] | None = None
    body: type[msgspec.Struct] | None = None
    errors: tuple[int, ...] = ()
    parameters: tuple[dict[str, Any], ...] = ()  # beyond the query Struct's
    example: Any = None  # of the body


_STREAM_KEY = {"name": "key", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "the key; or send {\"action\": \"auth\", \"key\"} first"}  # fmt: skip
_DATA = (400, 503)  # a data route: a bad parameter, the store unavailable
# An example of each query parameter, by name (documentation, and schemathesis' explicit cases).
_EXAMPLES = {"symbols": "BTC/USD,ETH/USD", "symbol": "BTC/USD", "source": "kraken",
             "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "interval": "1h",
             "limit": 100, "timestamp": "2026-11-20T12:00:00Z", "max_age_ms": 300000,
             "method": "median"}  # fmt: skip
_AT = "2026-11-20T12:00:00Z"
_INGEST = {
    "worker_id": "edge-1",
    "timestamp": _AT,
    "feeds": [{"symbol": "BTC/USD", "price": "67234.56", "source": "coinbase", "timestamp": _AT}],
}
_FEEDS = {"feeds": [{"category": 1, "name": "BTC/USD"}]}

# (method, werkzeug rule) -> its operation.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/live"): Operation("The process answers", {200: schema.LiveBody}),
    ("GET", "/ready"): Operation(
        "Every readiness check passes (else 503 with the same body)",
        {200: schema.ReadyBody, 503: schema.ReadyBody},
    ),
    ("GET", "/health"): Operation(
        "Whether the parts run (503 when a supervised child gave up)",
        {200: schema.HealthBody, 503: schema.HealthBody},
    ),
    ("GET", "/status"): Operation("Every component's statistics", {200: StatusReport}),
    ("GET", "/"): Operation("The dashboard (one HTML page; docs/alerts.md, README)", {200: HTML}),
    ("GET", "/dashboard/state"): Operation(
        "What the dashboard shows besides /stream: collectors, freshness per source, the store "
        "and spool, active alerts",
        {200: DashboardState},
    ),
    ("GET", "/metrics"): Operation("Prometheus text exposition", {200: METRICS_TYPE}),
    ("GET", "/openapi.json"): Operation("This document", {200: JSON}),
    ("GET", "/docs"): Operation("This document, readable", {200: HTML}),
    ("POST", "/internal/ingest"): Operation(
        "Feeds from collectors elsewhere, into the pipeline",
        {200: schema.IngestReply},
        body=_Envelope,
        errors=(400, 413, 503),
        example=_INGEST,
    ),
    ("GET", "/prices/latest"): Operation(
        "The latest price of each symbol",
        {200: schema.LatestBody},
        query=LatestQuery,
        errors=_DATA,
    ),
    ("GET", "/prices/range"): Operation(
        "Raw feeds, or OHLCV candles with interval, over [from, to)",
        {200: (schema.RangeRawBody, schema.RangeCandleBody)},
        query=RangeQuery,
        errors=_DATA,
    ),
    ("GET", "/aggregates/consensus"): Operation(
        "The consensus price of each symbol, with every input",
        {200: schema.ConsensusBody},
        query=ConsensusQuery,
        errors=_DATA,
    ),
    ("GET", "/aggregates/history"): Operation(
        "The consensus snapshots of one symbol over [from, to)",
        {200: schema.HistoryBody},
        query=HistoryQuery,
        errors=_DATA,
    ),
    ("POST", ROUND_RULE): Operation(
        "FTSO: the feeds' values for a voting round (recorded)",
        {200: schema.RoundValues},
        body=FeedValuesRequest,
        errors=(400, 413, 503),
        example=_FEEDS,
    ),
    ("POST", "/feed-values/"): Operation(
        "FTSO: the feeds' current values",
        {200: schema.CurrentValues},
        body=FeedValuesRequest,
        errors=(400, 413, 503),
        example=_FEEDS,
    ),
    ("GET", ROUND_RULE): Operation(
        "FTSO: what was answered for a round", {200: schema.RoundAnswers}, errors=(404, 503)
    ),
    ("GET", "/static/<path:filename>"): Operation(
        "Quart's static files route: Chrono ships none", {}, errors=(404,)
    ),
    ("GET", "/stream"): Operation(
        "WebSocket: live prices, consensus and status with snapshots, seq and resume "
        "(docs/stream.md; a plain GET is refused)",
        {101: None},
        errors=(400,),
        parameters=(_STREAM_KEY,),
    ),
}

_IMPLIED = ("HEAD", "OPTIONS")  # werkzeug's HEAD of a GET; OPTIONS is a CORS preflight
_ERRORS = {code.status: code for code in ErrorCode}
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")
_CONVERTERS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "minimum": 0}
}  # werkzeug's: no sign, no leading +

# The request Structs as documented: ``msgspec.Raw`` fields (decoded later, one by one) given
# the types they are decoded into, amounts as strings or JSON numbers.
_Time = Annotated[datetime, msgspec.Meta(tz=True)]
_Amount = Annotated[Decimal, msgspec.Meta(extra_json_schema={"x-or-number": True})]


def _documented(
    kind: type[msgspec.Struct], name: str, types: dict[str, Any]
) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(kind):
        if f.required:
            default = msgspec.field(name=f.encode_name)
        elif isinstance(f.default, msgspec.Raw) or f.default is msgspec.NODEFAULT:
            default = msgspec.field(default=None, name=f.encode_name)
        else:
            default = msgspec.field(default=f.default, name=f.encode_name)
        fields.append((f.name, types.get(f.name, f.type), default))
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True, kw_only=True)


IngestFeed = _documented(
    _Feed,
    "IngestFeed",
    {"price": _Amount, "volume": _Amount | None, "bid": _Amount | None, "ask": _Amount | None,
     "metadata": dict[str, Any] | None, "timestamp": _Time, "received_at": _Time | None},
)  # fmt: skip
_feeds = Annotated[list[IngestFeed], msgspec.Meta(min_length=1, max_length=MAX_FEEDS)]  # type: ignore[valid-type]
IngestRequest = _documented(
    _Envelope,
    "IngestRequest",
    {"feeds": _feeds, "timestamp": _Time},
)
_BODIES: dict[Any, type[msgspec.Struct]] = {_Envelope: IngestRequest}


def document(app: QuartTrio, table: tuple[tuple[str, frozenset[Role]], ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes; ``table``: the roles of each prefix."""
    from chrono.api.app import roles_for  # the app imports this module: no cycle at load

    rules = sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, sorted(r.methods or ())))
    found = [(m, r.rule) for r in rules for m in sorted(r.methods or ()) if m not in _IMPLIED]
    types: list[Any] = [schema.ErrorBody]
    for key in found:
        op = OPERATIONS.get(key)
        if op is not None:
            types += [_BODIES.get(op.body, op.body)] if op.body else []
            for answer in op.answers.values():
                types += answer if isinstance(answer, tuple) else [answer]
    types = [t for t in dict.fromkeys(types) if isinstance(t, type)]
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for method, rule in found:
        path = _RULE_ARG.sub(lambda m: "{" + m.group(3) + "}", rule)
        op = OPERATIONS.get((method, rule))
        item = _operation(op, rule, roles_for(rule, table)) if op else _undocumented()
        paths.setdefault(path, {})[method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chrono",
            "version": chrono.__version__,
            "description": (
                "Crypto price oracle. Decimals are plain-notation strings (JSON numbers in the "
                "FTSO answers), times RFC 3339 UTC. Every error is the ErrorBody envelope. A "
                "key is `Authorization: Bearer <key>`; an admin key opens every route."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _numbers(components),
            "responses": {_response_name(s): _error(s) for s in sorted(_ERRORS) if s >= 400},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, rule: str, roles: frozenset[Role] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    parameters = [*_path_parameters(rule), *_query_parameters(op.query), *op.parameters]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        body = _BODIES.get(op.body, op.body)
        out["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": {"$ref": REF.format(name=body.__name__)}}},
        }
        if op.example is not None:
            out["requestBody"]["content"][JSON]["example"] = op.example
    responses: dict[str, Any] = {}
    for status, answer in op.answers.items():
        responses[str(status)] = _answer(status, answer)
    errors = {*op.errors, 429}
    if op.query is not None or op.body is not None:
        errors.add(400)
    if _RULE_ARG.search(rule):
        errors.add(404)  # a path argument its converter refuses matches no route
    if roles is not None:
        allowed = sorted(r.value for r in {*roles, Role.ADMIN})
        out["security"] = [{"bearer": []}]
        out["x-roles"] = allowed
        out["description"] = f"A key of role {' or '.join(allowed)}."
        errors |= {401, 403}
    else:
        out["security"] = []
    for status in sorted(errors - set(op.answers)):
        responses[str(status)] = {"$ref": f"#/components/responses/{_response_name(status)}"}
    out["responses"] = dict(sorted(responses.items()))
    return out


def _undocumented() -> dict[str, Any]:
    return {"summary": "undocumented", "responses": {"default": {"description": "undocumented"}}}


def _answer(status: int, answer: Any) -> dict[str, Any]:
    description = "Switching Protocols" if status == 101 else ("OK" if status < 300 else "failed")
    if answer is None:
        return {"description": description}
    if isinstance(answer, str):
        if answer == JSON:
            return {"description": description, "content": {JSON: {"schema": {"type": "object"}}}}
        media = answer.split(";")[0]
        return {"description": description, "content": {media: {"schema": {"type": "string"}}}}
    kinds = answer if isinstance(answer, tuple) else (answer,)
    refs = [{"$ref": REF.format(name=k.__name__)} for k in kinds]
    return {
        "description": description,
        "content": {JSON: {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
    }


def _error(status: int) -> dict[str, Any]:
    code = _ERRORS[status]
    return {
        "description": f"{code.name}",
        "content": {JSON: {"schema": {"$ref": REF.format(name="ErrorBody")}}},
    }


def _response_name(status: int) -> str:
    return "".join(word.capitalize() for word in _ERRORS[status].name.split("_"))


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    out = []
    for m in _RULE_ARG.finditer(rule):
        converter, args, name = m.groups()
        described = dict(_CONVERTERS.get(converter or "", {"type": "string"}))
        for key, value in re.findall(r"(min|max)=(\d+)", args or ""):
            described["minimum" if key == "min" else "maximum"] = int(value)
        out.append({"name": name, "in": "path", "required": True, "schema": described})
    return out


def _query_parameters(kind: type[msgspec.Struct] | None) -> list[dict[str, Any]]:
    """Each field of a query Struct (``context.query`` decodes the query into it)."""
    if kind is None:
        return []
    _, components = msgspec.json.schema_components([kind], ref_template=REF)
    described = components[kind.__name__]
    required = set(described.get("required", ()))
    out = []
    for name, field in described["properties"].items():
        field = dict(field)
        options = [o for o in field.pop("anyOf", ()) if o != {"type": "null"}]
        if len(options) == 1:
            field.update(options[0])
        elif options:
            field["anyOf"] = options
        if field.get("default", 0) is None:
            del field["default"]
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        if name in _EXAMPLES:
            parameter["example"] = _EXAMPLES[name]
        out.append(parameter)
    return out


def _numbers(value: Any) -> Any:
    """msgspec documents a Decimal as a string; the markers of ``schema.DecimalNumber`` and
    ``_Amount`` say it is written as a JSON number, or read as either."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.pop(schema.JSON_NUMBER, False):
        return {"type": "number", "description": "a decimal, as a JSON number"}
    if value.pop("x-or-number", False):
        return {"anyOf": [{"type": "string", "format": "decimal"}, {"type": "number"}]}
    return {k: _numbers(v) for k, v in value.items()}


def register(app: QuartTrio, ctx: ApiContext) -> None:
    from chrono.api.app import FTSO_ROLES, ROUTE_ROLES

    table = ROUTE_ROLES + (FTSO_ROLES if ctx.ftso.require_key else ())
    built: list[bytes] = []
    page, policy = inline_page(_PAGE, _SCRIPT)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        if not built:  # once every route is registered
            built.append(msgspec.json.encode(document(app, table)))
        return Response(built[0], content_type=JSON)

    @app.get("/docs")
    async def docs() -> Response:
        return html_response(page, policy)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chrono API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc}.op{border:1px solid #ddd;border-radius:4px;margin:.6em 0;
padding:.4em .8em}.m{font-weight:bold;display:inline-block;min-width:4.5em}.get{color:#06c}
.post{color:#080}code,pre{font:12px ui-monospace,monospace}pre{background:#f6f6f6;padding:.5em;
overflow:auto}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;
text-align:left;vertical-align:top}.roles{color:#a50}
</style></head><body>
<h1>Chrono API</h1><p id="info">Loading <a href="/openapi.json">/openapi.json</a>...</p>
<div id="paths"></div><h2>Schemas</h2><div id="schemas"></div>
<script>/*SCRIPT*/</script></body></html>
"""

_SCRIPT = """
const el = (tag, text, cls) => { const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const ref = s => s && s.$ref ? s.$ref.split("/").pop() : null;
const type = s => { if (!s) return ""; if (s.$ref) return ref(s);
  if (s.anyOf) return s.anyOf.map(type).join(" | "); if (s.enum) return s.enum.join(" | ");
  const c = ["minimum", "maximum", "minLength", "maxLength", "pattern", "format", "default"]
    .filter(k => k in s).map(k => k + "=" + JSON.stringify(s[k]));
  return (s.type || "any") + (c.length ? " (" + c.join(", ") + ")" : ""); };
const row = (cells, tag) => { const r = el("tr");
  for (const c of cells) r.append(el(tag || "td", c)); return r; };
const media = r => r.content ? Object.entries(r.content)[0] : null;
function operation(doc, path, m, op) {
  const box = el("div", undefined, "op"); const head = el("div");
  head.append(el("span", m.toUpperCase(), "m " + m), el("code", path), " " + op.summary);
  if (op["x-roles"]) head.append(el("span", " key: " + op["x-roles"].join(" or "), "roles"));
  box.append(head);
  if (op.parameters) { const t = el("table"); t.append(row(["parameter", "in", "type"], "th"));
    for (const p of op.parameters)
      t.append(row([p.name + (p.required ? " *" : ""), p.in, type(p.schema)]));
    box.append(t); }
  if (op.requestBody) box.append(el("div", "body: " + type(media(op.requestBody)[1].schema)));
  for (const [status, r] of Object.entries(op.responses)) {
    const named = r.$ref ? doc.components.responses[ref(r)] : r; const c = media(named);
    const what = c ? ": " + c[0] + " " + type(c[1].schema) : "";
    box.append(el("div", status + " " + named.description + what)); }
  return box; }
fetch("/openapi.json").then(r => r.json()).then(doc => {
  const info = document.getElementById("info");
  info.textContent = doc.info.title + " " + doc.info.version + ": " + doc.info.description;
  const paths = document.getElementById("paths");
  for (const [path, item] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(item)) paths.append(operation(doc, path, m, op));
  const schemas = document.getElementById("schemas");
  for (const [name, s] of Object.entries(doc.components.schemas)) {
    const d = el("details"); d.id = name; d.append(el("summary", name));
    d.append(el("pre", JSON.stringify(s, null, 2))); schemas.append(d); }
}).catch(e => { document.getElementById("info").textContent = "failed: " + e; });
"""
