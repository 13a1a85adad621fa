"""One ``/stream`` client: its subscriptions, their throttles, and its bounded outbox.

The hub puts messages in; the client's handler takes them out (``next_batch``) and writes them
to the socket. Nothing here blocks the hub: a client that falls ``queue_messages`` behind
switches to conflation, keeping only the newest undelivered update of each (channel, symbol,
source); its queue is not grown and no newest value is lost. The hub then parks it (``on_lag``):
its subscriptions leave the hub's watch lists, so a stalled client costs the pipeline nothing per
update, and when its handler has written out the outbox (``on_drain``) the hub catches it up
from the replay ring, the newest update of each key since it was parked. A client that stays
behind for ``send_timeout_s``, or whose socket write blocks that long, is cut (the hub's tick):
its outbox is emptied at once and its handler closes with 1008; if its write is still stuck at
the next tick, the hub drops the connection (``abort``). The handler reads the client's next
command only while the outbox is under ``limit`` (``room``): answers never pile up unread.

A throttled subscription (``min_interval_ms``, ``deviation_bps``) holds each source's newest
update until it is due and then sends that one, so it also never loses the newest value.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio

PRICES: Final = "prices"
CONSENSUS: Final = "consensus"
STATUS: Final = "status"
CHANNELS = (PRICES, CONSENSUS, STATUS)
ALL = "*"  # a status subscription's subject for source and store events

GOING_AWAY, POLICY_VIOLATION = 1001, 1008


@dataclass(frozen=True, slots=True)
class Throttle:
    """A subscription's update model: at most one update per ``min_interval_s`` per source,
    and, with ``deviation``, only a price that moved that fraction since the last one sent, or
    the newest once ``heartbeat_s`` has passed."""

    min_interval_s: float = 0.0
    deviation: float | None = None  # a fraction (bps / 10,000)
    heartbeat_s: float = 60.0

    @property
    def plain(self) -> bool:
        return self.min_interval_s == 0 and self.deviation is None


PLAIN = Throttle()


@dataclass(eq=False, slots=True)
class Subscription:
    client: StreamClient
    channel: str
    symbol: str
    throttle: Throttle
    start: int = 0  # the hub's seq when subscribed: a catch-up skips what came before
    sent_at: dict[str, float] = field(default_factory=dict)  # per source: when last sent
    sent_price: dict[str, float] = field(default_factory=dict)  # ... and at what price

    def offer(self, source: str, message: str, price: float | None, now: float) -> None:
        """A new update of ``source``: to the client now, or held until due."""
        client = self.client
        if self.throttle.plain:
            client.put(message, (self.channel, self.symbol, source), now)
            return
        due = self.due(source, price)
        if due <= now:
            self.sent(source, price, now)
            client.put(message, (self.channel, self.symbol, source), now)
        else:
            client.hold(self, source, message, price, due)

    def due(self, source: str, price: float | None) -> float:
        """When an update of ``source`` at ``price`` may go out."""
        last = self.sent_at.get(source)
        if last is None:
            return -math.inf
        throttle = self.throttle
        due = last + throttle.min_interval_s
        if throttle.deviation is not None and not self._moved(source, price):
            due = max(due, last + throttle.heartbeat_s)
        return due

    def _moved(self, source: str, price: float | None) -> bool:
        before = self.sent_price.get(source)
        if price is None or before is None or before == 0:
            return price != before
        assert self.throttle.deviation is not None
        return abs(price - before) >= abs(before) * self.throttle.deviation

    def sent(self, source: str, price: float | None, now: float) -> None:
        self.sent_at[source] = now
        if price is not None:
            self.sent_price[source] = price


@dataclass(slots=True)
class _Held:
    due: float
    message: str
    price: float | None


@dataclass(eq=False, slots=True)
class StreamClient:
    """The hub's side of one connection (the module docstring says how it behaves)."""

    id: int
    limit: int  # queued messages before conflation
    ends_at: float  # trio time the connection's lifetime ends
    batch: bool = False  # several messages in one ``price_updates`` frame
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    newest: dict[tuple[str, str, str], str] = field(default_factory=dict)  # while lagging
    held: dict[tuple[Subscription, str], _Held] = field(default_factory=dict)
    next_due: float = math.inf  # the earliest held update's due time
    lagging_since: float | None = None
    parked_at: int | None = None  # the hub's seq when it stopped offering updates (lagging)
    on_lag: Callable[[StreamClient], None] | None = None  # the hub's, when it falls behind
    on_drain: Callable[[StreamClient], None] | None = None  # ... and when, parked, it wrote all
    sending_since: float | None = None  # set by the handler around each socket write
    ended: tuple[int, str] | None = None  # the close code and reason, once ending
    dropped: int = 0  # updates superseded while lagging, or queued when cut
    cut: bool = False
    going_away: Any = None  # the message to send when the lifetime ends (set by the hub)
    abort: Callable[[], Awaitable[None]] | None = None  # drops the connection (the hub's tick)
    _lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    _room: trio.Event | None = None  # set when the outbox has room again (``room``)

    def put(self, message: str, key: tuple[str, str, str], now: float) -> None:
        """An update: queued, or, once ``limit`` behind, the newest of its key."""
        if self.ended is not None:
            return
        if self.lagging_since is None:
            queue = self.queue
            queue.append(message)
            if len(queue) == 1:
                self._lot.unpark_all()
            elif len(queue) >= self.limit:
                self.lagging_since = now
                if self.on_lag is not None:
                    self.on_lag(self)
            return
        if self.newest.pop(key, None) is not None:  # re-added last: the batch stays in seq order
            self.dropped += 1
        self.newest[key] = message

    def put_control(self, message: str) -> None:
        """A reply, snapshot, replay, gap or heartbeat: always queued, in order."""
        if self.ended is not None:
            return
        self.queue.append(message)
        self._lot.unpark_all()

    async def room(self) -> None:
        """Until the outbox is under ``limit`` (or the stream ends): the handler reads the
        client's next command only then, so a client that sends without reading fills its own
        TCP window, not the server's memory."""
        while len(self.queue) >= self.limit and self.ended is None:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    def _roomy(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def hold(
        self, sub: Subscription, source: str, message: str, price: float | None, due: float
    ) -> None:
        """A throttled update, until ``due``; a newer one of the same source replaces it, and
        moves to the end: the held are kept (and released) in seq order."""
        self.held.pop((sub, source), None)
        self.held[sub, source] = _Held(due, message, price)
        if due < self.next_due:
            self.next_due = due
            self._lot.unpark_all()  # the handler sleeps until the earliest due time

    def forget(self, sub: Subscription) -> None:
        """Drop what ``sub`` held (it was unsubscribed)."""
        for key in [k for k in self.held if k[0] is sub]:
            del self.held[key]

    def end(self, code: int, reason: str, last: str | None = None) -> None:
        """Close after what is queued (and ``last``) is sent."""
        if self.ended is None:
            if last is not None:
                self.queue.append(last)
            self.ended = (code, reason)
            self._lot.unpark_all()
            self._roomy()

    def cut_off(self, reason: str) -> None:
        """Too slow: everything queued is dropped now, and the handler closes with 1008."""
        if self.cut or (self.ended is not None and not self.queue):
            return
        self.cut = True
        self.dropped += len(self.queue) + len(self.newest) + len(self.held)
        self.queue, self.newest, self.held = [], {}, {}
        self.ended = (POLICY_VIOLATION, reason)
        self._lot.unpark_all()
        self._roomy()

    async def next_batch(self) -> list[str] | None:
        """Everything ready to send, waiting until there is some; None: close now (``ended``)."""
        while True:
            now = trio.current_time()
            if (
                self.parked_at is not None
                and self.ended is None
                and not (self.queue or self.newest)
            ):
                assert self.on_drain is not None  # all written: what it missed since it parked
                self.on_drain(self)
            if self.held and self.next_due <= now:
                self._release(now)
            if self.queue or self.newest:
                out, self.queue = self.queue, []
                self._roomy()
                if self.newest:
                    out.extend(self.newest.values())
                    self.newest = {}
                self.lagging_since = None
                return out
            if self.ended is not None:
                return None
            if now >= self.ends_at:
                self.end(GOING_AWAY, "connection lifetime reached", self.going_away)
                continue
            if self.next_due == math.inf:  # no deadline to keep (the hub's tick ends the life)
                await self._lot.park()
            else:
                with trio.move_on_at(self.next_due):
                    await self._lot.park()

    def wake(self) -> None:
        """Its handler looks again (the hub's tick, once the lifetime has passed)."""
        self._lot.unpark_all()

    def _release(self, now: float) -> None:
        """Held updates now due go out (as the newest of their key if lagging)."""
        due = [(k, h) for k, h in self.held.items() if h.due <= now]
        for key, held in due:
            del self.held[key]
            sub, source = key
            sub.sent(source, held.price, now)
            self.put(held.message, (sub.channel, sub.symbol, source), now)
        self.next_due = min((h.due for h in self.held.values()), default=math.inf)

    def symbols(self, channel: str | None = None) -> list[str]:
        """The client's symbols (on ``channel``, or on any), sorted."""
        return sorted({s for c, s in self.subscriptions if s != ALL and channel in (None, c)})
