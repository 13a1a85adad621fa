"""``GET /openapi.json`` and ``GET /docs``: the document is valid OpenAPI 3.1, lists every route
of the app, and real answers of a running service validate against the schemas it documents for
them; schemathesis, run against a live service, finds no 5xx and no answer off its schema."""

from __future__ import annotations

import queue
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jsonschema
import pytest
import trio
from openapi_spec_validator import validate

from chrono.api.app import create_app
from chrono.api.openapi import OPERATIONS
from chrono.model import time_text, utc_now
from tests.dataapi import ADMIN, INTERNAL, PUBLIC, Api, feed, running_api

FTSO = {"enabled": True}
_FEEDS = {"feeds": [{"category": 1, "name": "BTC/USD"}]}
UNLIMITED = {"public_per_min": 0, "internal_per_min": 0, "unkeyed_per_min": 0}


async def _with_data(api: Api) -> None:
    for source in ("coinbase", "kraken", "bitstamp"):
        await api.push([feed(source, "100", age_s=1, volume="5")])
    await api.push([feed("binance", "100.1", age_s=1, quote="USDT")])
    await api.push([feed("kraken", "3000", symbol="ETH/USD", age_s=1)])


def _schema_of(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the document gives an answer, its refs resolvable."""
    answer = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return {**answer["content"]["application/json"]["schema"], "components": doc["components"]}


def _conforms(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    schema = _schema_of(doc, path, method, status)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.Draft202012Validator(schema, format_checker=checker).validate(body)


async def test_the_document_is_valid_and_lists_every_route(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_api(tmp_path, ftso=FTSO) as api:
            response = await api.http.get("/openapi.json")
            rules = list(create_app(api.service.api).url_map.iter_rules())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    validate(doc)  # OpenAPI 3.1
    assert doc["openapi"] == "3.1.0"
    for rule in rules:
        path = re.sub(r"<[^>]*?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            assert (method, rule.rule) in OPERATIONS, (method, rule.rule)
            op = doc["paths"][path][method.lower()]
            assert op["summary"] != "undocumented"
            assert "429" in op["responses"]
    ingest = doc["paths"]["/internal/ingest"]["post"]
    assert ingest["x-roles"] == ["admin", "internal"]
    assert {"400", "401", "403", "413", "503"} <= set(ingest["responses"])
    assert doc["paths"]["/status"]["get"]["x-roles"] == ["admin"]
    assert doc["paths"]["/live"]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    latest = {p["name"]: p for p in doc["paths"]["/prices/latest"]["get"]["parameters"]}
    assert latest["symbols"]["required"]
    assert not latest["source"]["required"]
    assert latest["source"]["schema"] == {"type": "string", "minLength": 1, "maxLength": 64}
    limit = next(
        p for p in doc["paths"]["/prices/range"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}


async def test_ftso_keys_are_documented_when_required(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_api(tmp_path, ftso={"enabled": True, "require_key": True}) as api:
            doc = (await api.http.get("/openapi.json")).json()
    op = doc["paths"]["/feed-values/"]["post"]
    assert op["x-roles"] == ["admin", "public"]
    assert "401" in op["responses"]


async def test_real_answers_validate_against_their_schemas(tmp_path: Path) -> None:
    now = utc_now()
    window = {
        "from": time_text(now - timedelta(hours=1)),
        "to": time_text(now + timedelta(hours=1)),
    }
    with trio.fail_after(30):
        async with running_api(tmp_path, ftso=FTSO) as api:
            await _with_data(api)
            doc = (await api.http.get("/openapi.json")).json()
            http = api.http
            checked = [
                ("/prices/latest", "get", await http.get(
                    "/prices/latest", params={"symbols": "BTC/USD,ETH/USD,DOGE/USD"},
                    headers=PUBLIC)),
                ("/prices/latest", "get", await http.get(
                    "/prices/latest", params={"symbols": "BTC/USD", "source": "kraken"},
                    headers=PUBLIC)),
                ("/prices/range", "get", await http.get(
                    "/prices/range", params={"symbol": "BTC/USD", "limit": 2, **window},
                    headers=PUBLIC)),
                ("/prices/range", "get", await http.get(
                    "/prices/range", params={"symbol": "BTC/USD", "interval": "1m", **window},
                    headers=PUBLIC)),
                ("/aggregates/consensus", "get", await http.get(
                    "/aggregates/consensus", params={"symbols": "BTC/USD,ETH/USD"},
                    headers=PUBLIC)),
                ("/aggregates/consensus", "get", await http.get(
                    "/aggregates/consensus",
                    params={"symbols": "BTC/USD", "timestamp": time_text(now)}, headers=PUBLIC)),
                ("/aggregates/history", "get", await http.get(
                    "/aggregates/history", params={"symbol": "BTC/USD", **window},
                    headers=PUBLIC)),
                ("/internal/ingest", "post", await http.post("/internal/ingest", headers=INTERNAL,
                    json={"worker_id": "edge-1", "timestamp": time_text(now), "feeds": [
                        {"symbol": "BTC/USD", "price": 100.2, "source": "okx",
                         "timestamp": time_text(now)},
                        {"symbol": "BTC/USD", "price": "-1", "source": "okx",
                         "timestamp": time_text(now)}]})),
                ("/feed-values/{voting_round_id}", "post", await http.post(
                    "/feed-values/7", json={"feeds": [{"category": 1, "name": "BTC/USD"},
                                                      {"category": 1, "name": "XYZ/USD"}]})),
                ("/feed-values/", "post", await http.post(
                    "/feed-values/", json={"feeds": [{"category": 1, "name": "BTC/USD"}]})),
                ("/feed-values/{voting_round_id}", "get", await http.get("/feed-values/7")),
                ("/feed-values/{voting_round_id}", "get", await http.get("/feed-values/8")),
                ("/ready", "get", await http.get("/ready")),
                ("/live", "get", await http.get("/live")),
                ("/health", "get", await http.get("/health")),
                ("/status", "get", await http.get("/status", headers=ADMIN)),
                ("/prices/latest", "get", await http.get(
                    "/prices/latest", params={"symbols": "nope"}, headers=PUBLIC)),
                ("/prices/latest", "get", await http.get(
                    "/prices/latest", params={"symbols": "BTC/USD"})),
                ("/status", "get", await http.get("/status", headers=PUBLIC)),
            ]  # fmt: skip
    statuses = [response.status_code for _, _, response in checked]
    assert statuses == [200] * 11 + [404, 200, 200, 200, 200, 400, 401, 403], statuses
    for path, method, response in checked:
        _conforms(doc, path, method, response.status_code, response.json())
    assert checked[3][2].json()["interval"] == "1m"
    assert checked[8][2].json()["data"][0]["value"] is not None


async def test_docs_is_a_self_contained_page(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_api(tmp_path) as api:
            response = await api.http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assert "http://" not in response.text
    assert "https://" not in response.text
    assert "script-src 'sha256-" in response.headers["content-security-policy"]
    assert "connect-src 'self'" in response.headers["content-security-policy"]


@contextmanager
def _live_service(tmp_path: Path) -> Iterator[str]:
    """A service with data, unlimited rates, on its own thread: its base URL."""
    started: queue.Queue[str | BaseException] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        async with running_api(tmp_path, ftso=FTSO, limits=UNLIMITED) as api:
            await _with_data(api)
            started.put(str(api.http.base_url).rstrip("/"))
            await trio.to_thread.run_sync(stop.wait)

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test
            started.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        got = started.get(timeout=30)
        if isinstance(got, BaseException):
            raise got
        yield got
    finally:
        stop.set()
        thread.join(30)


def _explicit(op: dict[str, Any]) -> dict[str, Any]:
    """A case of the document's own examples: every parameter that has one, the body's."""
    given = [p for p in op.get("parameters", ()) if "example" in p or p["in"] == "path"]
    out: dict[str, Any] = {
        "query": {p["name"]: p["example"] for p in given if p["in"] == "query"},
        "path_parameters": {p["name"]: 7 for p in given if p["in"] == "path"},
    }
    if "requestBody" in op:
        out["body"] = op["requestBody"]["content"]["application/json"]["example"]
        out["media_type"] = "application/json"
    return out


EXAMPLES = 100  # per operation: some 1500 requests, about 20 s here


def test_schemathesis_finds_no_server_error_and_no_answer_off_schema(tmp_path: Path) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    cases: list[tuple[str, int]] = []
    with _live_service(tmp_path) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        doc = httpx.get(f"{base}/openapi.json").json()
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path == "/stream":  # a WebSocket: a plain GET is its documented 400
                continue

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(
                case=operation.as_strategy()
                | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            )
            def run(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base, headers=ADMIN, checks=checks, timeout=10
                )
                cases.append((case.operation.label, response.status_code))

            explicit = _explicit(doc["paths"][operation.path][operation.method.lower()])
            case = operation.Case(**explicit)
            response = case.call_and_validate(base_url=base, headers=ADMIN, checks=checks)
            cases.append((operation.label, response.status_code))
            run()
    print(f"schemathesis: {len(cases)} cases, statuses {sorted(Counter(cases).items())}")
    answered = {label for label, status in cases if status == 200}
    assert len({label for label, _ in cases}) >= 15  # every one but /stream (and the document)
    assert len(cases) >= 15 * 10
    assert len(answered) >= 10, answered


async def test_what_schemathesis_found_is_a_client_error(tmp_path: Path) -> None:
    """Found by the test above: a time with a non-UTC offset reached the engine (500), one
    whose UTC is out of range overflowed (500), and a round id over uint32 overflowed the
    store's integer (500)."""
    with trio.fail_after(30):
        async with running_api(tmp_path, ftso=FTSO) as api:
            await _with_data(api)
            offset = await api.http.get(
                "/aggregates/consensus",
                params={"symbols": "BTC/USD", "timestamp": "2026-11-20T07:00:00-05:00"},
                headers=PUBLIC,
            )
            early = await api.http.get(
                "/prices/range",
                params={"symbol": "BTC/USD", "from": "0001-01-01T00:00:00+05:00",
                        "to": "0001-01-02T00:00:00Z"},
                headers=PUBLIC,
            )  # fmt: skip
            read = await api.http.get(f"/feed-values/{2**70}")
            answer = await api.http.post(f"/feed-values/{2**70}", json=_FEEDS)
    assert offset.status_code == 200, offset.text
    assert offset.json()["data"][0]["timestamp"] == "2026-11-20T12:00:00Z"
    assert early.status_code == 400
    assert early.json()["error"]["details"] == {"parameter": "from"}
    assert read.status_code == 404
    assert answer.status_code == 400
