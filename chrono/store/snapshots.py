"""What the stores keep besides raw feeds (migration 2): consensus snapshots and FTSO answers.

``aggregated_prices`` holds one ``Snapshot`` per (symbol, timestamp): the consensus Chrono
published for that instant. It is history, so the first write stands and a repeat is ignored
(a replayed or retried batch changes nothing). ``ftso_rounds`` holds one ``FtsoAnswer`` per
(voting round, category, name), and there the last write wins: a provider that asks again
gets, and submits, the newer value, so the record must say what was answered last.

``body`` is the JSON the caller gave, kept as text and returned byte for byte (PostgreSQL's
``json``, not ``jsonb``, which would reorder keys and rewrite numbers). It is checked here,
before any store work, so a malformed body is the caller's ``ValueError``, never a
``StoreError`` that a writer would retry.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A consensus answer for ``symbol`` at ``timestamp``; ``price`` is ``None`` when there was
    no quorum or a guard held it back (``status`` says which)."""

    symbol: str
    timestamp: datetime
    price: Decimal | None
    status: str
    method: str
    num_sources: int
    inputs_digest: str
    body: bytes  # the whole answer as JSON (UTF-8), returned byte-identical


class FtsoAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The value Chrono gave an FTSO provider for one feed of one voting round."""

    voting_round_id: int
    category: int
    name: str
    value: Decimal | None
    answered_at: datetime
    body: bytes | None  # the consensus the value came from, as JSON, if any


def json_text(body: bytes) -> str:
    """``body`` as the text a store keeps; ``ValueError`` unless it is one UTF-8 JSON value."""
    try:
        text = body.decode("utf-8")
        msgspec.json.decode(body)
    except ValueError as exc:  # UnicodeDecodeError and msgspec.DecodeError both are
        raise ValueError(f"a body must be one UTF-8 JSON value: {exc}") from exc
    return text


def optional_json_text(body: bytes | None) -> str | None:
    return None if body is None else json_text(body)


def optional_json_bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")
