"""API keys: ``Authorization: Bearer <key>``, three roles, each opening its own routes.

Internal keys open ``/internal/*``; public keys ``/prices/*``, ``/aggregates/*`` and
``/stream``; admin keys everything. A missing or unknown key is 401, a known key of the wrong
role 403. Every key has a name (``[[auth.keys]] name``, or ``public_keys[0]`` for the plain
lists' keys): the name, never the key, is what logs and counters see.

Keys are compared by their SHA-256, so a key configured as ``sha256:<hex>`` works as well as
one configured in clear: the presented key is hashed once and compared, in constant time, with
every configured key's digest, without stopping at a match (the time taken does not tell which
key matched, or whether one did).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chrono.api.errors import ApiError, ErrorCode
from chrono.config import AuthConfig, key_digest


class Role(enum.Enum):
    INTERNAL = "internal"
    PUBLIC = "public"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A configured key, without the key: its name, role and own rate limit."""

    name: str
    role: Role
    rate_per_min: int | None = None  # None: the role's [limits] value; 0: unlimited


class Keys:
    def __init__(self, auth: AuthConfig) -> None:
        self._keys: list[tuple[bytes, ApiKey]] = [
            (key_digest(e.key), ApiKey(e.name, Role(e.role), e.rate_per_min))
            for e in auth.entries()
        ]

    def __iter__(self) -> Iterator[ApiKey]:
        return iter([key for _, key in self._keys])

    def identify(self, key: str) -> ApiKey | None:
        """The configured key ``key`` is, or None."""
        given = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known, api_key in self._keys:  # no early exit: time does not tell which key matched
            if hmac.compare_digest(given, known):
                found = api_key
        return found

    def role_of(self, key: str) -> Role | None:
        api_key = self.identify(key)
        return None if api_key is None else api_key.role

    def authenticate(self, key: str | None) -> ApiKey:
        """The key's entry; else ``ApiError`` 401."""
        if not key:
            raise ApiError(
                ErrorCode.UNAUTHORIZED, "an API key is required (Authorization: Bearer <key>)"
            )
        api_key = self.identify(key)
        if api_key is None:
            raise ApiError(ErrorCode.UNAUTHORIZED, "unknown API key")
        return api_key

    @staticmethod
    def permit(api_key: ApiKey, allowed: Iterable[Role]) -> None:
        """``ApiError`` 403 unless the key's role may use the route (admin may use any)."""
        if api_key.role is not Role.ADMIN and api_key.role not in allowed:
            raise ApiError(ErrorCode.FORBIDDEN, f"a {api_key.role.value} key cannot use this route")

    def require(self, key: str | None, allowed: Iterable[Role]) -> ApiKey:
        """The key's entry if it may use the route; else ``ApiError`` 401 or 403."""
        api_key = self.authenticate(key)
        self.permit(api_key, allowed)
        return api_key


def bearer(header: str | None) -> str | None:
    if header and header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return None
