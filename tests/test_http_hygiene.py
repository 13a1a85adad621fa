"""HTTP hygiene over real HTTP: CORS on the public data routes only, safe headers on every
answer the app sends, sane ``X-Request-ID``s, every error in the one envelope."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from chrono.api.protocol import MAX_BODY_BYTES
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY
from tests.dataapi import running_api

LATEST = "/prices/latest?symbols=BTC/USD"
ORIGIN = "https://app.example"
SAFE = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "authorization, x-request-id"}  # fmt: skip


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "status"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert (body["status"], body["error"]["code"]) == (status, code)
    assert body["error"]["request_id"] == response.headers["x-request-id"]


def assert_safe(response: httpx.Response) -> None:
    for name, value in SAFE.items():
        assert response.headers.get_list(name) == [value], (name, response)
    assert response.headers.get_list("server") == ["chrono"]  # not hypercorn-h11
    assert response.headers["x-request-id"]


async def test_preflight_on_the_public_routes_only(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, ftso={"enabled": True}) as api:
            http = api.http
            latest = await http.options(LATEST, headers=PREFLIGHT)
            ftso = await http.options("/feed-values/", headers=PREFLIGHT)
            refused = {
                path: await http.options(path, headers=PREFLIGHT)
                for path in ("/internal/ingest", "/status", "/health")
            }
            unknown = await http.options("/prices/nothing", headers=PREFLIGHT)
    assert latest.status_code == 204
    assert latest.content == b""
    assert cors_headers(latest) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "GET, HEAD, OPTIONS",
        "access-control-allow-headers": "Authorization, Content-Type, X-Request-ID",
        "access-control-max-age": "600",
        "access-control-expose-headers": "X-Request-ID, X-RateLimit-Limit, "
        "X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After",
    }
    assert latest.headers["allow"] == "GET, HEAD, OPTIONS"
    assert_safe(latest)
    assert ftso.status_code == 204
    assert "POST" in ftso.headers["access-control-allow-methods"]
    for path, answer in refused.items():
        assert_envelope(answer, 405, "METHOD_NOT_ALLOWED")
        assert cors_headers(answer) == {}, path
        assert "OPTIONS" not in answer.headers["allow"]
        assert_safe(answer)
    assert_envelope(unknown, 404, "NOT_FOUND")


async def test_cors_headers_on_answers(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            http = api.http
            origin = {"Origin": ORIGIN}
            public = await http.get(LATEST, headers={**origin, **bearer(PUBLIC_KEY)})
            no_key = await http.get(LATEST, headers=origin)
            status = await http.get("/status", headers={**origin, **bearer(ADMIN_KEY)})
            internal = await http.post(
                "/internal/ingest", headers={**origin, **bearer(INTERNAL_KEY)}
            )
            health = await http.get("/health", headers=origin)
    assert public.status_code == 200
    assert public.headers["access-control-allow-origin"] == "*"
    assert "X-RateLimit-Remaining" in public.headers["access-control-expose-headers"]
    assert no_key.status_code == 401
    assert no_key.headers["access-control-allow-origin"] == "*"  # a page may read the error
    for answer in (status, internal, health):
        assert cors_headers(answer) == {}, answer.url


async def test_a_listed_origin_is_echoed_and_others_get_nothing(tmp_path: Path) -> None:
    cors = {"origins": [ORIGIN, "http://localhost:3000"], "max_age_s": 60}
    with trio.fail_after(20):
        async with running_api(tmp_path, cors=cors) as api:
            http = api.http
            listed = await http.get(LATEST, headers={"Origin": ORIGIN, **bearer(PUBLIC_KEY)})
            local = await http.options(
                LATEST, headers={**PREFLIGHT, "Origin": "http://localhost:3000"}
            )
            other = await http.get(
                LATEST, headers={"Origin": "https://evil.example", **bearer(PUBLIC_KEY)}
            )
            other_preflight = await http.options(
                LATEST, headers={**PREFLIGHT, "Origin": "https://evil.example"}
            )
        async with running_api(tmp_path / "none", cors={"origins": []}) as api:
            none = await api.http.get(LATEST, headers={"Origin": ORIGIN, **bearer(PUBLIC_KEY)})
    assert listed.headers["access-control-allow-origin"] == ORIGIN
    assert listed.headers["vary"] == "Origin"
    assert local.status_code == 204
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert local.headers["access-control-max-age"] == "60"
    assert other.status_code == 200
    assert cors_headers(other) == {}
    assert other.headers["vary"] == "Origin"
    assert other_preflight.status_code == 204
    assert cors_headers(other_preflight) == {}
    assert cors_headers(none) == {}


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 65_536
        sent += 65_536


async def test_safe_headers_and_the_envelope_on_every_answer(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, limits={"unkeyed_per_min": 5}) as api:
            http = api.http
            public = bearer(PUBLIC_KEY)
            answers: list[tuple[httpx.Response, int, str]] = [
                (await http.get("/prices/latest", headers=public), 400, "VALIDATION_ERROR"),
                (await http.get(LATEST, headers=bearer("nope")), 401, "UNAUTHORIZED"),
                (await http.get("/status", headers=public), 403, "FORBIDDEN"),
                (await http.get("/no/such/route", headers=public), 404, "NOT_FOUND"),
                (await http.delete(LATEST, headers=public), 405, "METHOD_NOT_ALLOWED"),
                (
                    await http.post(
                        "/internal/ingest",
                        headers={**bearer(INTERNAL_KEY), "Content-Type": "application/json"},
                        content=_chunks(MAX_BODY_BYTES + 65_536),  # chunked: the app's 413
                    ),
                    413,
                    "PAYLOAD_TOO_LARGE",
                ),
            ]
            ok = [await http.get("/health"), await http.get(LATEST, headers=public)]
            while (limited := await http.get("/health")).status_code == 200:
                pass
            answers.append((limited, 429, "RATE_LIMIT_EXCEEDED"))
    for response, status, code in answers:
        assert_envelope(response, status, code)
        assert_safe(response)
    for response in ok:
        assert response.status_code == 200
        assert_safe(response)
    assert answers[4][0].headers["allow"] == "GET, HEAD"
    assert int(limited.headers["retry-after"]) >= 1


async def test_a_request_id_is_kept_only_when_sane(tmp_path: Path) -> None:
    fresh = re.compile(r"[0-9a-f]{16}")
    sane = ["abc-123", "A.b_c:d-E", "x" * 128, "0", "2f1c9a3e-5d6b-4b7a-9c2d-1e0f3a4b5c6d"]
    insane = ["", "x" * 129, "has space", "a/b", "<script>", "semi;colon", "é", "tab\tid"]
    with trio.fail_after(20):
        async with running_api(tmp_path) as api:
            seen: dict[str, tuple[str, str]] = {}
            for given in sane + insane:
                header = {"X-Request-ID": given.encode("latin-1")}
                ok = await api.http.get("/health", headers=header)
                error = await api.http.get("/nothing", headers=header)
                assert error.json()["error"]["request_id"] == error.headers["x-request-id"]
                seen[given] = (ok.headers["x-request-id"], error.headers["x-request-id"])
    for given in sane:
        assert seen[given] == (given, given)
    for given in insane:
        for answered in seen[given]:
            assert fresh.fullmatch(answered), (given, answered)
        assert seen[given][0] != seen[given][1]  # fresh for each request


async def test_config_sections_reach_the_app(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(20):
        sections = {"limits": {"public_per_min": 7}, "cors": {"origins": [ORIGIN]}}
        async with running_api(tmp_path, **sections) as api:
            seen["limit"] = (await api.http.get(LATEST, headers=bearer(PUBLIC_KEY))).headers[
                "x-ratelimit-limit"
            ]
            seen["cors"] = api.service.api.cors.origins
    assert seen == {"limit": "7", "cors": [ORIGIN]}
