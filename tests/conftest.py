"""Shared fixtures. Testing policy: real peers on loopback (port 0), no mocks, a time limit on
every test that does I/O, trio's autojump clock for timers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from chrono.config import Config, parse_config
from chrono.service import Service

INTERNAL_KEY = "test_internal_key_0001"
PUBLIC_KEY = "test_public_key_0001"
ADMIN_KEY = "test_admin_key_0001"


def service_config(tmp_path: Path, **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "server": {"port": 0, "graceful_timeout_s": 2.0},
        "auth": {
            "internal_keys": [INTERNAL_KEY],
            "public_keys": [PUBLIC_KEY],
            "admin_keys": [ADMIN_KEY],
        },
        "log": {"level": "debug"},
    }
    raw.update(sections)
    return parse_config(raw, base_dir=tmp_path)


@dataclass
class Running:
    service: Service
    url: str
    ws_url: str


@pytest.fixture
async def running(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """A whole service (no collectors) on a free port, stopped and drained after the test."""
    service = Service(service_config(tmp_path))
    port = await nursery.start(service.run)
    yield Running(service, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    service.stop()


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A simulator handler that crashes is only logged by websockets: make that fail the test."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
