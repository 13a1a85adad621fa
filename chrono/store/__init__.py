"""Stores behind one seam: SQLite (the embedded default); PostgreSQL comes next."""

from __future__ import annotations

from chrono.errors import ConfigError
from chrono.store.base import Store
from chrono.store.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    """The store a ``storage.url`` names (not yet connected: call ``await store.open()``)."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ConfigError(f"storage.url: {url.split(':', 1)[0]} is not supported yet (use sqlite:///)")


__all__ = ["SQLiteStore", "Store", "open_store"]
