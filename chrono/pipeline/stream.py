"""The stream hub: live feeds to every ``/stream`` client, never slowing the pipeline.

Each client has a bounded queue of encoded messages. ``publish`` encodes a feed once and
offers it to every client subscribed to its symbol with ``send_nowait``; a client whose queue
is full loses that message, and past ``MAX_DROPS_IN_A_ROW`` it is cut off (its queue is closed,
its handler sees the end and closes the socket). ``run`` sends the 30 s heartbeat.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from chrono.model import PriceFeed, WireFeed, time_text, to_wire, utc_now

CLIENT_QUEUE_MESSAGES = 1000  # ~ a few seconds of a busy symbol set; then we drop
MAX_DROPS_IN_A_ROW = 5000  # a client this far behind is cut off
HEARTBEAT_INTERVAL_S = 30.0


class PriceUpdate(msgspec.Struct, tag_field="type", tag="price_update"):
    data: WireFeed


class Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    timestamp: str


_encoder = msgspec.json.Encoder()


@dataclass(eq=False)
class StreamClient:
    """One subscriber: its symbols and its outgoing queue (the handler reads ``messages``)."""

    id: int
    send: trio.MemorySendChannel[bytes]
    messages: trio.MemoryReceiveChannel[bytes]
    symbols: set[str] = field(default_factory=set)
    dropped: int = 0
    drops_in_a_row: int = 0

    def offer(self, message: bytes) -> None:
        try:
            self.send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1
            self.drops_in_a_row += 1
            if self.drops_in_a_row >= MAX_DROPS_IN_A_ROW:
                self.send.close()
        except trio.ClosedResourceError:
            pass
        else:
            self.drops_in_a_row = 0


class StreamHub:
    def __init__(self) -> None:
        self._clients: set[StreamClient] = set()
        self._ids = itertools.count(1)
        self.published = 0
        self.cut_off = 0
        self._dropped_by_gone = 0  # drops of clients that have left, so the total never shrinks

    def connect(self) -> StreamClient:
        send, receive = trio.open_memory_channel[bytes](CLIENT_QUEUE_MESSAGES)
        client = StreamClient(next(self._ids), send, receive)
        self._clients.add(client)
        return client

    def disconnect(self, client: StreamClient) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._dropped_by_gone += client.dropped
            if client.drops_in_a_row >= MAX_DROPS_IN_A_ROW:
                self.cut_off += 1
        client.send.close()

    def publish(self, feeds: Iterable[PriceFeed]) -> None:
        if not self._clients:
            return
        for feed in feeds:
            message = _encoder.encode(PriceUpdate(to_wire(feed)))
            self.published += 1
            for client in self._clients:
                if feed.symbol in client.symbols:
                    client.offer(message)

    async def run(self) -> None:
        """Heartbeats until cancelled; every client hears one every 30 s."""
        while True:
            await trio.sleep(HEARTBEAT_INTERVAL_S)
            beat = _encoder.encode(Heartbeat(time_text(utc_now())))
            for client in list(self._clients):
                client.offer(beat)

    def close_all(self) -> None:
        """At shutdown: end every client's queue so its handler closes with 1001."""
        for client in list(self._clients):
            client.send.close()

    def statistics(self) -> dict[str, Any]:
        return {
            "clients": len(self._clients),
            "published": self.published,
            "dropped": self._dropped_by_gone + sum(c.dropped for c in self._clients),
            "cut_off": self.cut_off,
        }
