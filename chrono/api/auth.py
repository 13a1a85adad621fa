"""API keys: ``Authorization: Bearer <key>``, three kinds, each opening its own routes.

Internal keys open ``/internal/*``; public keys ``/prices/*``, ``/aggregates/*`` and
``/stream``; admin keys everything. A missing or unknown key is 401, a known key of the wrong
kind 403. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable

from chrono.api.errors import ApiError, ErrorCode
from chrono.config import AuthConfig


class Role(enum.Enum):
    INTERNAL = "internal"
    PUBLIC = "public"
    ADMIN = "admin"


class Keys:
    def __init__(self, auth: AuthConfig) -> None:
        self._keys: list[tuple[bytes, Role]] = [
            *((k.encode(), Role.INTERNAL) for k in auth.internal_keys),
            *((k.encode(), Role.PUBLIC) for k in auth.public_keys),
            *((k.encode(), Role.ADMIN) for k in auth.admin_keys),
        ]

    def role_of(self, key: str) -> Role | None:
        given = key.encode()
        found = None
        for known, role in self._keys:  # no early exit: time does not tell which key matched
            if hmac.compare_digest(given, known):
                found = role
        return found

    def require(self, key: str | None, allowed: Iterable[Role]) -> Role:
        """The key's role if it may use the route; else ``ApiError`` 401 or 403."""
        if not key:
            raise ApiError(
                ErrorCode.UNAUTHORIZED, "an API key is required (Authorization: Bearer <key>)"
            )
        role = self.role_of(key)
        if role is None:
            raise ApiError(ErrorCode.UNAUTHORIZED, "unknown API key")
        if role is not Role.ADMIN and role not in allowed:
            raise ApiError(ErrorCode.FORBIDDEN, f"a {role.value} key cannot use this route")
        return role


def bearer(header: str | None) -> str | None:
    if header and header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return None
