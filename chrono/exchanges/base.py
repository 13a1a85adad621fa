"""The adapter seam: what a collector needs to know about one exchange's WebSocket protocol.

An adapter is built per collector (its symbols and worker id are fixed) and is pure: no I/O,
no clock. The collector sends ``subscribe_messages()`` after connecting and hands every
received frame to ``parse``. Exchange knowledge lives only in ``exchanges/<name>.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from chrono.model import PriceFeed


class FrameKind(enum.Enum):
    DATA = "data"  # carries ticks: the only kind that feeds the silence watchdog
    HEARTBEAT = "heartbeat"  # proves the link, not the data
    ACK = "ack"  # the exchange confirmed a subscription
    ERROR = "error"  # the exchange reported an error (logged and counted, link kept)
    INFO = "info"  # anything else the protocol sends that needs no action


@dataclass(slots=True)
class ParsedFrame:
    """What one frame meant. ``skipped`` holds a reason per tick dropped on purpose."""

    kind: FrameKind
    feeds: list[PriceFeed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    message: str = ""


class Adapter(Protocol):
    """One exchange connection's protocol, for a fixed set of canonical symbols."""

    def subscribe_messages(self) -> list[str]:
        """Text frames to send, in order, right after the connection opens."""
        ...

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Turn one frame into feeds; raise ``InvalidFrame`` (with a reason) if malformed."""
        ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """A registry entry: how to build an adapter and where the exchange listens."""

    name: str
    default_url: str
    adapter: Callable[[Sequence[str], str], Adapter]  # (canonical symbols, worker_id)
    native_symbol: Callable[[str], str]  # canonical -> the exchange's own spelling
