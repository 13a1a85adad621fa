"""Stores behind one seam (``Store``: a ``StoreWriter`` and a ``StoreReader``): SQLite, the
embedded default, and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chrono.store.backends import backend_for
from chrono.store.base import (
    INTERVALS,
    Candle,
    FeedPage,
    RowKey,
    Store,
    StoreReader,
    StoreStatistics,
    StoreWriter,
)
from chrono.store.postgres import PostgresStore
from chrono.store.snapshots import FtsoAnswer, Snapshot
from chrono.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from chrono.config import StorageConfig


def open_store(storage: StorageConfig) -> Store:
    """The store ``storage.url`` names (not yet connected: ``await store.open()``); the URL
    was checked at config load, so its backend exists."""
    backend = backend_for(storage.url)
    if backend is None:
        raise ValueError(f"no store backend for {storage.url!r}")
    return backend.open(storage)


__all__ = [
    "INTERVALS",
    "Candle",
    "FeedPage",
    "FtsoAnswer",
    "PostgresStore",
    "RowKey",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "StoreReader",
    "StoreStatistics",
    "StoreWriter",
    "open_store",
]
