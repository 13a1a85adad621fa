"""Store URLs as they may be shown: never with a password (logs, ``/status``, check-config)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict


def url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL, without its secrets; ``None`` if it parses."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().replace(url, masked_url(url))
        return f"not a valid PostgreSQL URL ({detail})"
    return None


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (any other URL as it is)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # unparseable: show nothing of it rather than a secret
        return "postgresql://(unparseable URL)"
    if "password" not in params:
        return url
    user, host = params.get("user", ""), params.get("host", "")
    port, db = params.get("port", ""), params.get("dbname", "")
    return f"postgresql://{user}:***@{host}{':' + str(port) if port else ''}/{db}"


def url_password(url: str) -> str | None:
    """The password in a PostgreSQL URL, for the log filter to redact wherever it appears."""
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    try:
        return conninfo_to_dict(url).get("password") or None  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        return None
