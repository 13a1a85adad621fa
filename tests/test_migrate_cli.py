"""`chrono migrate CONFIG` as a process, on SQLite and on PostgreSQL: the schema brought up to
date; a store newer than the code refused, by `migrate` and by `run`, with exit 1."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from chrono.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from chrono.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from chrono.testing.postgres import free_port


def chrono(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chrono", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\nport = 0\n[storage]\nurl = "{url}"\n')
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chrono.db'}"
    return str(request.getfixturevalue("pg_url"))


def execute(url: str, statement: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(statement)
    else:
        with psycopg.connect(url) as conn:
            conn.execute(statement)  # type: ignore[arg-type]


def newest(url: str) -> int:
    """The newest migration of the store ``url`` names."""
    migrations = SQLITE_MIGRATIONS if url.startswith("sqlite") else POSTGRES_MIGRATIONS
    return migrations[-1].version


def test_migrate_brings_the_schema_up_to_date(tmp_path: Path, url: str) -> None:
    done = chrono("migrate", str(config(tmp_path, url)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f": schema at version {newest(url)}")
    execute(url, "SELECT COUNT(*) FROM price_feeds")  # the table is there
    again = chrono("migrate", str(config(tmp_path, url)))
    assert again.returncode == 0, again.stderr  # nothing to do is fine


def test_a_store_newer_than_the_code_is_refused(tmp_path: Path, url: str) -> None:
    assert chrono("migrate", str(config(tmp_path, url))).returncode == 0
    execute(url, "INSERT INTO chrono_schema_version VALUES (99, 'from the future', '2030-01-01')")
    refused = chrono("migrate", str(config(tmp_path, url)))
    assert refused.returncode == 1
    known = f"the schema is at version 99, newer than this Chrono knows ({newest(url)})"
    assert known in refused.stderr
    run = chrono("run", str(config(tmp_path, url)))
    assert run.returncode == 1
    assert "newer than this Chrono knows" in run.stderr


def test_an_unreachable_store_is_exit_1_naming_it(tmp_path: Path) -> None:
    url = f"postgresql://chrono:s3cret@127.0.0.1:{free_port()}/chrono"
    done = chrono("migrate", str(config(tmp_path, url)))
    assert done.returncode == 1
    assert "chrono migrate: postgresql:" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
