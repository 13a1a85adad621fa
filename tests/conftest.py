"""Shared fixtures. Testing policy: real peers on loopback (port 0), no mocks, a time limit on
every test that does I/O, trio's autojump clock for timers."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from chrono.config import Config
from chrono.configure import parse_config
from chrono.service import Service
from chrono.store import PostgresStore
from chrono.testing.postgres import PostgresCluster, start_cluster

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session; each test takes a database of its own.

    Tests that stop or restart a server use ``own_pg_cluster`` instead, so as not to disturb
    this one. No PostgreSQL binaries is an error, not a skip: CI always runs these tests.
    """
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def own_pg_cluster() -> Iterator[PostgresCluster]:
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


_databases = itertools.count()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """A fresh, empty database in the session's cluster."""
    return pg_cluster.create_database(f"test_{os.getpid()}_{next(_databases)}")


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A ``PostgresStore`` opened on ``pg_url``, closed after the test."""
    opened = PostgresStore(pg_url)
    with trio.fail_after(30):
        await opened.open()
    yield opened
    await opened.aclose()
