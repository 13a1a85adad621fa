"""The one error format: ``{"error": {"code", "message", "details", "request_id"}, "status"}``.

Handlers raise ``ApiError``; the app turns it, and every HTTP error Quart raises itself (404,
405, 413...), into that body, and so does ``chrono.api.protocol`` for the errors hypercorn and h11
answer before the app (400, 408, 414, 431...), so a client parses one shape whatever went wrong.
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
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "URI_TOO_LONG": 414,
    "RATE_LIMIT_EXCEEDED": 429,
    "HEADERS_TOO_LARGE": 431,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "DATABASE_ERROR": 503,
}

# The code for an HTTP error that Quart or hypercorn raises itself, by its status.
CODE_OF_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
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
