"""The one error format: ``{"error": {"code", "message", "details", "request_id"}, "status"}``.

Handlers raise ``ApiError`` with an ``ErrorCode``; the app turns it, every HTTP error Quart raises
itself (404, 405, 413...) and every ``StoreError`` into that body, and so does
``chrono.api.protocol`` for the errors hypercorn and h11 answer before the app (400, 408, 414,
431...), so a client parses one shape whatever went wrong.
"""

from __future__ import annotations

import enum
import re
import secrets
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()

# On every answer, the app's and the server's own: nothing Chrono serves is a page, nothing may
# be cached (latest prices go stale in seconds, and keyed answers are the key holder's alone).
SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Server": "chrono",
}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(given: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane, else 16 fresh hex characters."""
    return given if given and _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


class ErrorCode(enum.Enum):
    """Each code's value is its HTTP status, so ``ErrorCode(404)`` is the code for a 404."""

    VALIDATION_ERROR = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    REQUEST_TIMEOUT = 408
    PAYLOAD_TOO_LARGE = 413
    URI_TOO_LONG = 414
    RATE_LIMIT_EXCEEDED = 429
    HEADERS_TOO_LARGE = 431
    INTERNAL_ERROR = 500
    NOT_IMPLEMENTED = 501
    DATABASE_ERROR = 503

    @property
    def status(self) -> int:
        return self.value

    @classmethod
    def of_status(cls, status: int) -> ErrorCode:
        """The code for an HTTP error raised outside Chrono's handlers (Quart, hypercorn)."""
        try:
            return cls(status)
        except ValueError:
            return cls.INTERNAL_ERROR if status >= 500 else cls.VALIDATION_ERROR


class ApiError(Exception):
    def __init__(
        self, code: ErrorCode, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def status(self) -> int:
        return self.code.status


def error_body(error: ApiError, request_id: str) -> bytes:
    return _encoder.encode(
        {
            "error": {
                "code": error.code.name,
                "message": error.message,
                "details": error.details,
                "request_id": request_id,
            },
            "status": error.status,
        }
    )
