"""Stores behind one seam (``Store``: a ``StoreWriter`` and a ``StoreReader``): SQLite, the
embedded default, and PostgreSQL.

The names are loaded when first used (PEP 562), so importing one store module, as the SQLite
writer process does, does not import every driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chrono.config import StorageConfig
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

_HOMES = {
    **dict.fromkeys(
        (
            "INTERVALS",
            "Candle",
            "FeedPage",
            "RowKey",
            "Store",
            "StoreReader",
            "StoreStatistics",
            "StoreWriter",
        ),
        "chrono.store.base",
    ),
    "PostgresStore": "chrono.store.postgres",
    "FtsoAnswer": "chrono.store.snapshots",
    "Snapshot": "chrono.store.snapshots",
    "SQLiteStore": "chrono.store.sqlite",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def open_store(storage: StorageConfig) -> Store:
    """The store ``storage.url`` names (not yet connected: ``await store.open()``); the URL
    was checked at config load, so its backend exists."""
    from chrono.store.backends import backend_for

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
