"""Numbered schema migrations and the version table both stores keep.

Each store lists its migrations in order (``MIGRATIONS`` in ``sqlite_sql.py`` and in
``postgres.py``); a store applies the ones above its version, each in one transaction together
with its row in ``chrono_schema_version``. Version 1 creates ``price_feeds`` with ``IF NOT
EXISTS``, so a database made before versions existed is adopted as it is.

A store whose version is above the newest migration this code knows was written by a newer
Chrono: ``plan()`` refuses it (``SchemaTooNew``) rather than write rows the newer schema may
not expect. Migrations are append-only: a released one is never edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chrono.errors import SchemaTooNew

VERSION_TABLE = "chrono_schema_version"
CURRENT_VERSION = f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def plan(current: int, migrations: Sequence[Migration], *, where: str) -> list[Migration]:
    """The migrations to apply to a store at ``current``, in order; ``SchemaTooNew`` if the
    store is ahead of this code."""
    newest = latest_version(migrations)
    if current > newest:
        raise SchemaTooNew(
            f"{where}: the schema is at version {current}, newer than this Chrono knows "
            f"({newest}); upgrade Chrono, or point storage.url at another database"
        )
    return [m for m in migrations if m.version > current]


def latest_version(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


class Executes(Protocol):
    """What both drivers' connections offer (sqlite3 and psycopg)."""

    def execute(self, query: str, params: Any = ..., /) -> Any: ...


def apply_pending(
    conn: Executes,
    migrations: Sequence[Migration],
    *,
    version_ddl: str,
    record: str,
    where: str,
) -> None:
    """Inside the caller's transaction: make the version table, apply each pending migration
    and record it with ``record`` (parameters: version, description)."""
    conn.execute(version_ddl)
    (current,) = conn.execute(CURRENT_VERSION).fetchone()
    for migration in plan(current, migrations, where=where):
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(record, (migration.version, migration.description))
