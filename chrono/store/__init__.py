"""Stores behind one seam (``Store``: a ``StoreWriter`` and a ``StoreReader``): SQLite, the
embedded default, and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from chrono.store.timescale import TimescaleSettings

if TYPE_CHECKING:
    from chrono.config import StorageConfig


def open_store(storage: StorageConfig) -> Store:
    """The store ``storage.url`` names (not yet connected: ``await store.open()``)."""
    url = storage.url
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    timescale = TimescaleSettings(
        mode=storage.timescaledb,
        compress_after_days=storage.compress_after_days,
        retention_days=storage.retention_days,
    )
    return PostgresStore(
        url,
        pool_size=storage.pool_size,
        connect_timeout_s=storage.connect_timeout_s,
        timescale=timescale,
    )


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
