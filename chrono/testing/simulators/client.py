"""One simulator connection (``Client``) and the raw frames a burst writes straight to a socket."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

import trio
from websockets.trio.server import ServerConnection

# Frames a client may lag behind before it is dropped as a slow consumer; bounds memory per client.
OUTBOX_FRAMES: Final = 10_000


Outgoing = tuple[str | bytes, bool, bool]  # (frame, sent as text, is a subscription ack)


class Client:
    """One connection: its topics, its protocol state and its outbox."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.path = ws.request.path if ws.request is not None else "/"
        self.opened_at = trio.current_time()
        self.topics: set[tuple[str, str]] = set()  # (channel, native) pairs that get data
        self.muted: set[tuple[str, str]] = set()  # acked, but nothing is ever delivered
        self.state: dict[str, Any] = {}  # the protocol's own per-connection state
        self.subscribed = False  # a subscribe succeeded: the subscribe timeout no longer applies
        self.dropped = False
        self.scope = trio.CancelScope()
        self.write_lock = trio.Lock()  # held by the outbox writer and by send_burst
        self._send, self.outbox = trio.open_memory_channel[Outgoing](OUTBOX_FRAMES)

    def push(self, data: str | bytes, *, text: bool = True, ack: bool = False) -> None:
        """Queue a frame; a client this far behind is dropped, as a slow consumer."""
        try:
            self._send.send_nowait((data, text, ack))
        except trio.WouldBlock:
            self.drop()

    def drop(self) -> None:
        """End the connection with no close frame: the peer sees 1006."""
        self.dropped = True
        self.scope.cancel()

    def close(self) -> None:
        self._send.close()
        self.outbox.close()


def text_frame(payload: bytes) -> bytes:
    """An unmasked server text frame (RFC 6455 §5.2): a burst skips the per-frame protocol call."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def chunks(frames: Sequence[bytes], limit: int) -> list[bytes]:
    """Frames joined into writes of about ``limit`` bytes."""
    out, chunk, size = [], [], 0
    for frame in frames:
        chunk.append(frame)
        size += len(frame)
        if size >= limit:
            out.append(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        out.append(b"".join(chunk))
    return out
