"""The store backends by URL scheme: how each opens, what a config of it may get wrong, and how a
relative location in it is resolved. ``open_store`` and the config checks look a URL up here
instead of branching on ``sqlite:///``; adding a backend is one ``Backend`` in ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chrono.store.postgres import PostgresStore
from chrono.store.sqlite import SQLiteStore
from chrono.store.timescale import TimescaleSettings
from chrono.store.urls import url_problem

if TYPE_CHECKING:
    from chrono.config import StorageConfig
    from chrono.store.base import Store


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    prefixes: tuple[str, ...]  # what a URL of this backend starts with
    open: Callable[[StorageConfig], Store]  # not yet connected: ``await store.open()``
    problem: Callable[[StorageConfig], str | None]  # "key: what is wrong", or None
    resolve: Callable[[str, Path], str]  # the URL with a relative location made absolute


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _open_sqlite(storage: StorageConfig) -> Store:
    return SQLiteStore(_sqlite_path(storage.url))


def _resolve_sqlite(url: str, base_dir: Path) -> str:
    return "sqlite:///" + str(base_dir / _sqlite_path(url))  # an absolute path stays itself


def _open_postgres(storage: StorageConfig) -> Store:
    timescale = TimescaleSettings(
        mode=storage.timescaledb,
        compress_after_days=storage.compress_after_days,
        retention_days=storage.retention_days,
    )
    return PostgresStore(
        storage.url,
        pool_size=storage.pool_size,
        connect_timeout_s=storage.connect_timeout_s,
        timescale=timescale,
    )


def _postgres_problem(storage: StorageConfig) -> str | None:
    problem = url_problem(storage.url)
    return None if problem is None else f"storage.url: {problem}"


BACKENDS: tuple[Backend, ...] = (
    Backend("sqlite", ("sqlite:///",), _open_sqlite, lambda storage: None, _resolve_sqlite),
    Backend(
        "postgresql",
        ("postgresql://", "postgres://"),
        _open_postgres,
        _postgres_problem,
        lambda url, base_dir: url,
    ),
)


def backend_for(url: str) -> Backend | None:
    return next((b for b in BACKENDS if url.startswith(b.prefixes)), None)


def schemes() -> str:
    """The URL forms the backends take, for an error message."""
    return " or ".join(f"{b.prefixes[0]}{'PATH' if b.name == 'sqlite' else '...'}"
                       for b in BACKENDS)  # fmt: skip
