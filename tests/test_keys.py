"""Named and hashed API keys over real HTTP and WebSockets, and no key text in any log.

``[[auth.keys]]`` entries (name, role, key, optional rate_per_min) beside the plain lists; a key
written ``sha256:<hex>`` is the hash of the key clients send. The name is what logs see.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from chrono.api.auth import ApiKey, Keys, Role
from chrono.cli import main
from chrono.config import AuthConfig, KeyConfig
from chrono.configure import load_config
from chrono.logs import JsonFormatter
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY
from tests.dataapi import running_api

HASHED_KEY = "hashed_public_key_0001"  # configured only as its sha256
PAID_KEY = "paid_public_key_0001"
FREE_KEY = "free_public_key_0001"  # 2 requests a minute: easy to push over its limit
ENV_KEY = "env_admin_key_0001"


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def auth(**extra: Any) -> dict[str, Any]:
    return {
        "internal_keys": [INTERNAL_KEY],
        "public_keys": [PUBLIC_KEY],
        "admin_keys": [ADMIN_KEY],
        "keys": [
            {"name": "hashed", "role": "public", "key": sha256(HASHED_KEY)},
            {"name": "paid-acme", "role": "public", "key": PAID_KEY, "rate_per_min": 5000},
            {"name": "free-bob", "role": "public", "key": FREE_KEY, "rate_per_min": 2},
        ],
        **extra,
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_names_roles_and_hashes() -> None:
    keys = Keys(
        AuthConfig(
            public_keys=["p0", "p1"],
            admin_keys=["a0"],
            keys=[
                KeyConfig(name="h", role="internal", key=sha256("secret-h")),
                KeyConfig(name="r", role="public", key="secret-r", rate_per_min=7),
            ],
        )
    )
    assert keys.identify("p1") == ApiKey("public_keys[1]", Role.PUBLIC)
    assert keys.identify("a0") == ApiKey("admin_keys[0]", Role.ADMIN)
    assert keys.identify("secret-h") == ApiKey("h", Role.INTERNAL)
    assert keys.identify("secret-r") == ApiKey("r", Role.PUBLIC, 7)
    for wrong in ("secret-", "secret-hx", "secret-h ", "SECRET-H", "", sha256("secret-h")):
        assert keys.identify(wrong) is None  # the configured hash itself opens nothing
    assert [k.name for k in keys] == ["public_keys[0]", "public_keys[1]", "admin_keys[0]", "h", "r"]


async def test_hashed_and_named_keys_open_their_routes(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth()) as api:
            http = api.http
            path = "/prices/latest?symbols=BTC/USD"
            for key in (HASHED_KEY, PAID_KEY, PUBLIC_KEY, ADMIN_KEY):
                assert (await http.get(path, headers=bearer(key))).status_code == 200, key
            for wrong in (HASHED_KEY[:-1], HASHED_KEY + "1", sha256(HASHED_KEY), "hashed"):
                answer = await http.get(path, headers=bearer(wrong))
                assert answer.status_code == 401, wrong
                assert answer.json()["error"]["code"] == "UNAUTHORIZED"
            answer = await http.get("/status", headers=bearer(HASHED_KEY))
            assert answer.status_code == 403  # a public key, hashed or not
            ws_url = str(http.base_url).replace("http://", "ws://") + "/stream"
            async with connect(f"{ws_url}?key={HASHED_KEY}") as ws:
                await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC/USD"]}))
                assert json.loads(await ws.recv())["type"] == "subscribed"


async def test_a_key_from_the_environment_in_auth_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRONO_TEST_NAMED_KEY", ENV_KEY)
    keys = [{"name": "ops", "role": "admin", "key": "env:CHRONO_TEST_NAMED_KEY"}]
    with trio.fail_after(20):
        async with running_api(tmp_path, auth={"keys": keys}) as api:
            assert (await api.http.get("/status", headers=bearer(ENV_KEY))).status_code == 200
            no = await api.http.get("/status", headers=bearer("env:CHRONO_TEST_NAMED_KEY"))
            assert no.status_code == 401


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("auth_toml", "message"),
    [
        (
            '[[auth.keys]]\nname = "a"\nrole = "public"\nkey = "k_1"\n'
            '[[auth.keys]]\nname = "a"\nrole = "admin"\nkey = "k_2"\n',
            "auth.keys[1].name: 'a' is already the name of auth.keys[0]",
        ),
        (
            '[[auth.keys]]\nname = "a"\nrole = "public"\nkey = "sha256:abc"\n',
            "auth.keys[0].key: sha256: must be followed by 64 hex digits",
        ),
        (
            '[[auth.keys]]\nname = "a"\nrole = "root"\nkey = "k_1"\n',
            "auth.keys[0].role: Invalid enum value 'root'",
        ),
    ],
)
def test_check_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], auth_toml: str, message: str
) -> None:
    code = main(["check-config", str(write_config(tmp_path, auth_toml))])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "k_1" not in err
    assert "k_2" not in err


def test_check_config_masks_every_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = f"""
[auth]
public_keys = ["{PUBLIC_KEY}"]
[[auth.keys]]
name = "paid-acme"
role = "public"
key = "{PAID_KEY}"
rate_per_min = 5000
[[auth.keys]]
name = "hashed"
role = "public"
key = "{sha256(HASHED_KEY)}"
"""
    path = write_config(tmp_path, text)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    body = json.loads(out)
    assert body["auth"]["public_keys"] == [f"*** ({len(PUBLIC_KEY)} chars)"]
    assert body["auth"]["keys"] == [
        {"name": "paid-acme", "role": "public", "key": f"*** ({len(PAID_KEY)} chars)",
         "rate_per_min": 5000},
        {"name": "hashed", "role": "public", "key": "sha256:***", "rate_per_min": None},
    ]  # fmt: skip
    for secret in (PUBLIC_KEY, PAID_KEY, sha256(HASHED_KEY)[7:]):
        assert secret not in out
    assert load_config(path).auth.secrets() == [PUBLIC_KEY, PAID_KEY]  # what logs redact


# -- no key text ever reaches a log record ----------------------------------------------------

# Loggers of this test's own clients (websockets logs its handshake, query string and all, at
# debug); the server side is hypercorn, quart and chrono.
CLIENT_LOGGERS = ("websockets", "httpx", "httpcore")
BAD_KEY = "bad_key_never_configured_0001"


SUBSCRIBE = {"action": "subscribe", "symbols": ["BTC/USD"]}


async def talk(ws: ClientConnection, messages: list[dict[str, Any]]) -> list[str | int]:
    """Send ``messages``; the types of the server's answers up to "subscribed", or up to the
    close code (a refused client may be closed before it has sent everything)."""
    answers: list[str | int] = []
    try:
        for message in messages:
            await ws.send(json.dumps(message))
        while not answers or answers[-1] != "subscribed":
            answers.append(json.loads(await ws.recv())["type"])
    except ConnectionClosed as closed:
        answers.append(closed.rcvd.code if closed.rcvd is not None else -1)
    return answers


def rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write of the record: message, data, exception."""
    text = JsonFormatter("test").format(record)
    return text + repr(record.args) + repr(getattr(record, "data", None))


async def test_no_key_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [INTERNAL_KEY, PUBLIC_KEY, ADMIN_KEY, HASHED_KEY, PAID_KEY, FREE_KEY, BAD_KEY]
    secrets.append(sha256(HASHED_KEY)[7:])  # the configured hash is not for logs either
    with trio.fail_after(30):
        async with running_api(tmp_path, auth=auth(), log={"level": "debug"}) as api:
            http = api.http
            ws_url = str(http.base_url).replace("http://", "ws://") + "/stream"
            path = "/prices/latest?symbols=BTC/USD"
            for key in (PUBLIC_KEY, HASHED_KEY, PAID_KEY, ADMIN_KEY, INTERNAL_KEY, BAD_KEY):
                await http.get(path, headers=bearer(key))
                await http.get(f"{path}&key={key}", headers=bearer(key))  # a 400, key in query
            statuses = [(await http.get(path, headers=bearer(FREE_KEY))).status_code
                        for _ in range(4)]  # fmt: skip
            assert statuses[-1] == 429
            await http.post("/internal/ingest", headers=bearer(INTERNAL_KEY), content=b"{")
            await http.get("/no/such/route", headers=bearer(ADMIN_KEY))
            for key in (PUBLIC_KEY, HASHED_KEY, BAD_KEY, INTERNAL_KEY, FREE_KEY):
                for query, first in ((f"?key={key}", []), ("", [{"action": "auth", "key": key}])):
                    async with connect(ws_url + query) as ws:
                        answers = await talk(ws, [*first, SUBSCRIBE])
                    assert answers[-1] in ("subscribed", 1008, 1013), (key, query, answers)
            status = await http.get("/status", headers=bearer(ADMIN_KEY))
    assert status.status_code == 200
    server_records = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert server_records  # debug logging was on: the request log has a line per request
    for record in server_records:
        text = rendered(record)
        for secret in secrets:
            assert secret not in text, (record.name, text)
    for secret in secrets:
        assert secret not in status.text
    names = {getattr(r, "data", {}).get("key") for r in server_records}
    assert {"public_keys[0]", "hashed", "paid-acme", "free-bob", "admin_keys[0]"} <= names


async def test_the_request_log_names_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chrono.api.app")
    with trio.fail_after(20):
        async with running_api(tmp_path, auth=auth()) as api:
            answer = await api.http.get(
                "/prices/latest?symbols=BTC/USD",
                headers={**bearer(PAID_KEY), "X-Request-ID": "req-paid-1"},
            )
            assert answer.status_code == 200
            async with httpx.AsyncClient(base_url=api.http.base_url) as other:
                await other.get("/health", headers={"X-Request-ID": "req-health-1"})
    lines = {r.data["request_id"]: r for r in caplog.records if r.name == "chrono.api.app"}
    paid = lines["req-paid-1"]
    assert paid.getMessage() == "GET /prices/latest 200"
    assert paid.data == {"request_id": "req-paid-1", "key": "paid-acme"}
    assert lines["req-health-1"].data["key"] is None
