"""Logging: stdlib ``logging``, JSON lines by default, readable text on request.

A JSON line carries ``level``, ``timestamp``, ``worker_id``, ``logger``, ``message`` and
``data`` (whatever a call passed as ``extra={"data": {...}}``), the seed's format. A filter
replaces every configured API key with ``***`` wherever it appears, so keys are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "worker_id": getattr(record, "worker_id", self.worker_id),
            "logger": record.name,
            "message": record.getMessage(),
            "data": getattr(record, "data", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        data = getattr(record, "data", None)
        return f"{text} {_encoder.encode(data).decode()}" if data else text


class RedactKeys(logging.Filter):
    """Replace secrets in the message, its arguments and ``data`` before any handler sees them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._scrub(record.getMessage())
            record.args = None
            data = getattr(record, "data", None)
            if data:
                record.data = msgspec.json.decode(self._scrub(_encoder.encode(data).decode()))
        return True


def configure_logging(
    *, level: str, fmt: str, secrets: Iterable[str] = (), worker_id: str = "chrono"
) -> None:
    """Send every log record to stderr in the chosen format, with secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker_id) if fmt == "json" else TextFormatter())
    handler.addFilter(RedactKeys(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # The libraries' own chatter (every frame, every request) stays out of info logs.
    for noisy in ("websockets", "hypercorn.access", "quart.serving"):
        logging.getLogger(noisy).setLevel(max(_LEVELS[level], logging.WARNING))
