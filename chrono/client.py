"""A small httpx client for the running daemon (what ``chrono status`` uses)."""

from __future__ import annotations

import httpx
import msgspec

from chrono.errors import DaemonUnreachable
from chrono.status import StatusReport, decode_status

TIMEOUT_S = 5.0


def base_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    return f"http://{host}:{port}"


def fetch_status(url: str, admin_key: str | None) -> StatusReport:
    """``GET /status`` as a ``StatusReport``; raise ``DaemonUnreachable`` with a one-line reason
    on any failure (also an answer that is not a status report: a different program, or a
    Chrono of another version)."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/status", headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DaemonUnreachable(f"cannot reach Chrono at {url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        message = error_message(response)
        raise DaemonUnreachable(f"Chrono at {url} answered {response.status_code}: {message}")
    try:
        return decode_status(response.content)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DaemonUnreachable(
            f"Chrono at {url} answered a /status this client cannot read: {exc}"
        ) from exc


def error_message(response: httpx.Response) -> str:
    """A Chrono error answer's message (its envelope's), or the start of any other body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
