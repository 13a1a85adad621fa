"""Making a real store fail, for outage tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def store_locked(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock, as a stuck or failing store would: Chrono's writes fail."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
