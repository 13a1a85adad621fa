"""The recorded exchange frames in ``tests/captures/`` (JSON Lines; its README says where from)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "captures"


@dataclass(frozen=True)
class Event:
    """One line: ``connect`` (``url``), ``send`` or ``recv`` (``frame``), at epoch ``t``."""

    t: float
    event: str
    frame: str = ""
    url: str = ""


def events(name: str) -> list[Event]:
    """Every event of ``<name>.jsonl``, in order."""
    lines = (CAPTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [Event(**json.loads(line)) for line in lines if line.strip()]


def received(name: str) -> list[str]:
    """The frames the exchange sent, byte for byte."""
    return [e.frame for e in events(name) if e.event == "recv"]


def sent(name: str) -> list[str]:
    """The frames the recording client sent (its subscribe requests)."""
    return [e.frame for e in events(name) if e.event == "send"]
