"""The stream hub: live feeds to every ``/stream`` client, never slowing the pipeline.

Each client has a bounded queue of messages, JSON text ready for a WebSocket text frame.
``publish`` encodes a feed once (and turns the bytes into text once) and offers that one string
to every client subscribed to its symbol with ``send_nowait``; a client whose queue is full loses
that message, and past ``MAX_DROPS_IN_A_ROW`` it is cut off (its queue is closed, its handler
sees the end and closes the socket). ``run`` sends the 30 s heartbeat.

A client is counted from ``connected()`` to the end of its ``with`` block, however the block
ends: ``statistics().clients`` is the number of handlers inside one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from chrono.histogram import Histogram
from chrono.model import PriceFeed, WireFeed, time_text, to_wire, utc_now

CLIENT_QUEUE_MESSAGES = 1000  # ~ a few seconds of a busy symbol set; then we drop
MAX_DROPS_IN_A_ROW = 5000  # a client this far behind is cut off
HEARTBEAT_INTERVAL_S = 30.0


class StreamStatistics(msgspec.Struct, frozen=True, kw_only=True):
    clients: int  # open /stream connections with a good key
    published: int
    dropped: int  # messages a full client queue did not take
    cut_off: int  # clients closed for being too slow


class PriceUpdate(msgspec.Struct, tag_field="type", tag="price_update"):
    data: WireFeed


class Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    timestamp: str


_encoder = msgspec.json.Encoder()


def encode_text(message: Any) -> str:
    """JSON as ``str``: quart sends a ``str`` as a text frame (``bytes`` would be binary)."""
    return _encoder.encode(message).decode()


@dataclass(eq=False)
class StreamClient:
    """One subscriber: its symbols and its outgoing queue (the handler reads ``messages``)."""

    id: int
    send: trio.MemorySendChannel[str]
    messages: trio.MemoryReceiveChannel[str]
    symbols: set[str] = field(default_factory=set)
    dropped: int = 0
    drops_in_a_row: int = 0

    def offer(self, message: str) -> None:
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
        self.streamed_latency = Histogram()  # received -> queued for the clients, per feed
        self._dropped_by_gone = 0  # drops of clients that have left, so the total never shrinks
        self._closed = False  # close_all() has run: a client connecting now is ended at once

    @contextmanager
    def connected(self) -> Iterator[StreamClient]:
        """A new client, counted until the block ends (returns, raises or is cancelled)."""
        send, receive = trio.open_memory_channel[str](CLIENT_QUEUE_MESSAGES)
        client = StreamClient(next(self._ids), send, receive)
        self._clients.add(client)
        if self._closed:
            send.close()  # it authenticated during the shutdown: it leaves with 1001 at once
        try:
            yield client
        finally:
            self._clients.discard(client)
            self._dropped_by_gone += client.dropped
            if client.drops_in_a_row >= MAX_DROPS_IN_A_ROW:
                self.cut_off += 1
            send.close()

    def publish(self, feeds: Iterable[PriceFeed]) -> None:
        if not self._clients:
            return
        now = utc_now()
        observe = self.streamed_latency.observe
        for feed in feeds:
            message = encode_text(PriceUpdate(to_wire(feed)))  # once, for every client
            self.published += 1
            observe((now - feed.received_at).total_seconds())
            for client in self._clients:
                if feed.symbol in client.symbols:
                    client.offer(message)

    async def run(self) -> None:
        """Heartbeats until cancelled; every client hears one every 30 s."""
        while True:
            await trio.sleep(HEARTBEAT_INTERVAL_S)
            beat = encode_text(Heartbeat(time_text(utc_now())))
            for client in list(self._clients):
                client.offer(beat)

    def close_all(self) -> None:
        """At shutdown: end every client's queue, and any later one's, so each closes with 1001."""
        self._closed = True
        for client in list(self._clients):
            client.send.close()

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            clients=len(self._clients),
            published=self.published,
            dropped=self._dropped_by_gone + sum(c.dropped for c in self._clients),
            cut_off=self.cut_off,
        )
