"""What ``/stream`` sends, as JSON text (a ``str``: quart sends it as a text frame).

An update is encoded once, here, and the same string goes to every subscriber (and into the
replay ring), so a thousand clients cost one encoding. Updates are spliced from pieces encoded
by msgspec (``seq``, ``prev_seq`` and the payload), so the one message may also be marked as a
snapshot without decoding it again.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def encode_text(message: Any) -> str:
    """JSON as ``str``: quart sends a ``str`` as a text frame (``bytes`` would be binary)."""
    return _encoder.encode(message).decode()


def update(
    kind: str, seq: int, prev_seq: int | None, payload: str, *, snapshot: bool = False
) -> str:
    """``{"type": kind, "seq", "prev_seq", ["snapshot": true,] <payload's fields>}``.

    ``payload`` is the encoded body: ``{"data": ...}`` for a price update, the event's own
    fields for the others (an object's text, whose ``{`` is dropped here)."""
    prev = "null" if prev_seq is None else str(prev_seq)
    mark = '"snapshot":true,' if snapshot else ""
    return f'{{"type":"{kind}","seq":{seq},"prev_seq":{prev},{mark}{payload[1:]}'


def as_snapshot(message: str) -> str:
    """An update already encoded, marked ``"snapshot": true`` (after its ``prev_seq``)."""
    head, sep, rest = message.partition(',"prev_seq":')
    value, comma, tail = rest.partition(",")
    return f'{head}{sep}{value}{comma}"snapshot":true,{tail}'


def bundle(messages: list[str]) -> str:
    """Several messages in one frame, for a client that opted in (``"batch": true``)."""
    return '{"type":"price_updates","updates":[' + ",".join(messages) + "]}"


def error(code: str, message: str, *, id: Any = None, field: str | None = None) -> str:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    out: dict[str, Any] = {"type": "error", "error": body}
    if id is not None:
        out["id"] = id
    return encode_text(out)


_UPDATES = ('{"type":"price_update"', '{"type":"consensus_update"', '{"type":"status_update"')


def frames(batch: list[str], bundled: bool) -> list[str]:
    """The frames to send ``batch`` in: one each, or, ``bundled``, each run of two or more
    updates in one ``price_updates`` frame (replies, gaps and heartbeats stay on their own)."""
    if not bundled or len(batch) < 2:
        return batch
    out: list[str] = []
    run: list[str] = []
    for message in batch:
        if message.startswith(_UPDATES):
            run.append(message)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else bundle(run))
            run = []
        out.append(message)
    if run:
        out.append(run[0] if len(run) == 1 else bundle(run))
    return out
