"""A throwaway PostgreSQL cluster for tests and benchmarks: the store's working double.

``PostgresCluster`` runs ``initdb`` into a fresh folder, starts the server with ``pg_ctl`` on a
free loopback port (its Unix socket inside the folder, so it touches nothing system-wide),
and removes everything on ``destroy()``. ``initdb`` refuses to run as root, so as root every
server command runs as the ``postgres`` user (``runuser``), which the Debian package creates.
Authentication is ``trust`` on loopback: the cluster holds nothing but test data.

The binaries come from ``$PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin`` (Debian),
else ``PATH``; ``PostgresMissing`` says how to install them when none is found.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

# pg_ctl's own wait for start and stop; a cold start on a busy 2-core machine takes ~1 s.
PG_CTL_TIMEOUT_S = 60


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    if found := shutil.which("pg_ctl"):
        return Path(found).parent
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
        "(Debian: apt-get install postgresql; scripts/test does) or set PG_BIN"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One cluster in its own folder; ``url(db)`` names a database in it."""

    def __init__(self, pg_bin: Path | None = None) -> None:
        self.pg_bin = pg_bin or find_pg_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="chrono-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb",
            "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = (
            f"port = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.folder}'\n"
            "timezone = 'UTC'\n"
            "fsync = off\n"  # a throwaway cluster: durability of the server is not under test
            "max_connections = 50\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def start(self) -> None:
        log = self.folder / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", *self._timeout(), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", *self._timeout(), "stop")

    def is_running(self) -> bool:
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return status.returncode == 0

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.url(name)

    def destroy(self) -> None:
        if self.data.exists() and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _timeout(self) -> list[str]:
        return ["-t", str(PG_CTL_TIMEOUT_S)]

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.pg_bin / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=self.folder)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done


def start_cluster() -> PostgresCluster:
    """A running cluster; the caller ``destroy()``s it."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster
