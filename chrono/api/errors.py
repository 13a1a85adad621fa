"""The one error format: ``{"error": {"code", "message", "details", "request_id"}, "status"}``.

Handlers raise ``ApiError``; the app turns it, and every HTTP error Quart raises itself (404,
405), into that body, so a client parses one shape whatever went wrong.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()

STATUS_OF = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "RATE_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "DATABASE_ERROR": 503,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS_OF[code]
        self.message = message
        self.details = details or {}


def error_body(error: ApiError, request_id: str) -> bytes:
    return _encoder.encode(
        {
            "error": {
                "code": error.code,
                "message": error.message,
                "details": error.details,
                "request_id": request_id,
            },
            "status": error.status,
        }
    )
