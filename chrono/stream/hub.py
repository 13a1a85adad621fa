"""The stream hub: every update to every ``/stream`` client subscribed to it, never slowing
the pipeline.

Every update (a price from the fan-out, a consensus or a status event) takes the next ``seq``,
one counter for the whole hub, and carries ``prev_seq``: the seq of the hub's previous update of
the same symbol on the same channel, so a client checks its own symbols' chains and sees a break
only where it really lost something. The counter starts at the wall clock in microseconds, so a
restarted hub's numbers come after the old one's. The replay ring (``chrono.stream.ring``) keeps
recent updates for ``since_seq``.

An update is encoded once and offered to each subscription of its symbol
(``chrono.stream.client``), which queues it, holds it for its throttle, or, for a client that
fell behind, keeps it as the newest of its key. A client that fell behind is then parked: its
subscriptions leave the watch lists (nothing is encoded or offered for it, so a hundred stalled
clients cost the pipeline nothing per update), and once it has written out what it had queued
it is caught up from the ring: the newest update of each of its keys since it was parked, in seq
order, through its throttles; a ``gap`` and the newest prices (``snapshot``) if the ring no
longer reaches back that far. ``publish`` runs in the fan-out's task and only appends to lists:
it never waits for a client. ``run`` holds the periodic work: heartbeats, cutting clients that
stay behind, and the consensus and status channels (``chrono.stream.watch``).

A client is counted from ``connected()`` to the end of its ``with`` block, however the block
ends: ``statistics().clients`` is the number of handlers inside one.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import trio

from chrono.config import StreamConfig
from chrono.errors import ChronoError
from chrono.feeds import Feeds
from chrono.histogram import Histogram
from chrono.model import PriceFeed, WireFeed, is_canonical_symbol, time_text, to_wire, utc_now
from chrono.stream import messages
from chrono.stream.client import (
    ALL,
    CONSENSUS,
    GOING_AWAY,
    PLAIN,
    PRICES,
    STATUS,
    StreamClient,
    Subscription,
    Throttle,
)
from chrono.stream.ring import FeedsEntry, MessageEntry, ReplayRing

TICK_S = 1.0  # how often clients that stay behind are looked for


class StreamStatistics(msgspec.Struct, frozen=True, kw_only=True):
    clients: int  # open /stream connections with a good key
    published: int  # updates encoded for at least one subscriber
    dropped: int  # updates superseded while a client was behind, or queued when it was cut
    cut_off: int  # clients closed for being too slow
    parked: int  # times a client fell behind and stopped being offered updates
    seq: int  # the last seq given
    replay_updates: int  # updates the ring holds ...
    replay_first_seq: int | None  # ... from this seq on
    lagging: int  # clients behind now (conflating, or parked)


class ChannelValue(NamedTuple):
    """A consensus for the consensus channel: its price and state (for the thresholds) and the
    message's fields, encoded (``{"data": ...}``)."""

    symbol: str
    price: float | None
    state: str
    payload: str


ConsensusSource = Callable[[list[str]], Awaitable[list[ChannelValue]]]


class _PriceData(msgspec.Struct):
    data: WireFeed


def price_payload(feed: PriceFeed) -> str:
    return messages.encode_text(_PriceData(to_wire(feed)))


class Subscribed(NamedTuple):
    """What a subscribe command was answered with, and queued after the answer."""

    symbols: list[str]  # accepted (the unknown ones too: their updates come if a source starts)
    unknown: list[str]  # well-formed, but no source has them yet
    invalid: list[Any]  # not BASE/QUOTE: not subscribed


class StreamHub:
    def __init__(
        self,
        config: StreamConfig | None = None,
        latest: Any = None,  # LatestPrices: snapshots and heartbeat ages
        *,
        known: Callable[[str], bool] | None = None,
        consensus: ConsensusSource | None = None,
        states: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.config = config = config or StreamConfig()
        self._latest = latest
        self._known = known or (lambda symbol: True)
        self.consensus = consensus
        self.states_of = states
        self._clients: set[StreamClient] = set()
        self._ids = itertools.count(1)
        self.seq = time.time_ns() // 1000  # after any earlier run's (module docstring)
        self.ring = ReplayRing(config.replay_max_updates, config.replay_max_age_s)
        self._last: dict[str, dict[str, int]] = {c: {} for c in (PRICES, CONSENSUS, STATUS)}
        self._watch: dict[str, dict[str, dict[Subscription, None]]] = {
            c: {} for c in (PRICES, CONSENSUS, STATUS)
        }
        self.states: dict[str, str] = {}  # status subject -> state, as last read
        self.published = 0
        self.cut_off = 0
        self.parked = 0
        self.streamed_latency = Histogram()  # received -> queued for the clients, per feed
        self._to_park: list[StreamClient] = []  # fell behind since the last update
        self._dropped_by_gone = 0  # drops of clients that have left, so the total never shrinks
        self._closed = False  # close_all() has run: a client connecting now is ended at once

    # -- clients --------------------------------------------------------------------------

    @contextmanager
    def connected(
        self, abort: Callable[[], Awaitable[None]] | None = None
    ) -> Iterator[StreamClient]:
        """A new client, counted until the block ends (returns, raises or is cancelled).
        ``abort`` drops its connection: the hub calls it for a client cut off whose handler
        is still stuck in a socket write a tick later."""
        config = self.config
        client = StreamClient(
            next(self._ids), config.queue_messages, trio.current_time() + config.max_lifetime_s,
            on_lag=self._to_park.append, on_drain=self._catch_up, abort=abort,
        )  # fmt: skip
        wait_ms = random.randrange(config.reconnect_after_ms + 1)
        client.going_away = messages.encode_text(
            {"type": "going_away", "reconnect_after_ms": wait_ms}
        )
        self._clients.add(client)
        if self._closed:
            client.end(GOING_AWAY, "server going away")  # it authenticated during the shutdown
        try:
            yield client
        finally:
            self._clients.discard(client)
            for sub in client.subscriptions.values():
                self._unwatch(sub)
            self._dropped_by_gone += client.dropped
            self.cut_off += client.cut
            client.end(GOING_AWAY, "gone")

    async def subscribe(
        self,
        client: StreamClient,
        channel: str,
        symbols: list[Any],
        throttle: Throttle = PLAIN,
        *,
        since_seq: int | None = None,
        reply: Callable[[Subscribed], str],
    ) -> None:
        """Subscribe ``client`` to ``symbols`` on ``channel``; queue ``reply(...)``, then the
        snapshot (or, with ``since_seq``, what it missed), in that order, before any update."""
        accepted, unknown, invalid = _sort_out(symbols, self._known)
        if channel == STATUS:
            accepted = [ALL, *accepted]
        snapshot: list[str] = []
        if channel == CONSENSUS and since_seq is None and accepted and self.consensus:
            try:  # before subscribing: nothing can come between it and the updates
                values = await self.consensus(accepted)
            except ChronoError:  # a rate it needs is in a store that is down: updates follow
                values = []
            snapshot = [self._consensus_snapshot(v) for v in values]
        for symbol in accepted:
            old = client.subscriptions.pop((channel, symbol), None)
            if old is not None:
                self._unwatch(old)
            sub = client.subscriptions[channel, symbol] = Subscription(
                client, channel, symbol, throttle, self.seq
            )
            if client.parked_at is None:  # a parked one is watched again when caught up
                self._watch[channel].setdefault(symbol, {})[sub] = None
        client.put_control(reply(Subscribed([s for s in accepted if s != ALL], unknown, invalid)))
        if since_seq is not None:
            for message in self._replay(client, channel, accepted, since_seq):
                client.put_control(message)
            return
        if channel == PRICES:
            snapshot = [self._price_snapshot(s, f) for s in accepted for f in self._sources(s)]
        elif channel == STATUS:
            snapshot = self._status_snapshot(accepted)
        for message in snapshot:
            client.put_control(message)

    def unsubscribe(self, client: StreamClient, channel: str, symbols: list[str]) -> None:
        """Symbols off ``channel``; no symbols: the whole channel (on ``status``, the source and
        store events too)."""
        drop = set(symbols) if symbols else {s for c, s in client.subscriptions if c == channel}
        for symbol in drop:
            sub = client.subscriptions.pop((channel, symbol), None)
            if sub is not None:
                self._unwatch(sub)

    def _unwatch(self, sub: Subscription) -> None:
        self._leave(sub)
        sub.client.forget(sub)

    def _leave(self, sub: Subscription) -> None:
        watchers = self._watch[sub.channel].get(sub.symbol)
        if watchers is not None:
            watchers.pop(sub, None)
            if not watchers:
                del self._watch[sub.channel][sub.symbol]

    def _park(self) -> None:
        """Clients that fell behind stop being offered updates, from the hub's seq now on."""
        for client in self._to_park:
            if client.lagging_since is not None and client.parked_at is None and not client.cut:
                client.parked_at = self.seq
                self.parked += 1
                for sub in client.subscriptions.values():
                    self._leave(sub)
        self._to_park.clear()

    def _catch_up(self, client: StreamClient) -> None:
        """A parked client wrote out its outbox: the newest update of each of its keys since it
        was parked, oldest first, through its subscriptions; then it is watched again."""
        since, client.parked_at = client.parked_at, None
        assert since is not None
        subs, now = client.subscriptions, trio.current_time()
        newest: dict[tuple[Subscription, str], tuple[int, Callable[[], str], float | None]] = {}
        matched, symbols = 0, {s for c, s in subs if c == PRICES}
        for entry in self.ring.after(since):
            if isinstance(entry, FeedsEntry):
                feeds = entry.feeds
                for seq, prev, i in _feed_updates(entry, symbols):
                    sub = subs[PRICES, feeds.symbols[i]]
                    if seq > since and seq > sub.start:
                        matched += 1
                        encode = _encoder(seq, prev, feeds, i)
                        newest[sub, feeds.sources[i]] = (seq, encode, float(feeds.prices[i]))
            elif entry.first > since:
                on = subs.get((entry.channel, _route(entry.channel, entry.subject)))
                if on is not None and entry.first > on.start:
                    matched += 1
                    newest[on, entry.subject] = (entry.first, _const(entry.message), entry.price)
        client.dropped += matched - len(newest)
        oldest = self.ring.first_seq
        if self.seq > since and (oldest is None or oldest > since + 1):
            covered = {(sub.symbol, source) for sub, source in newest if sub.channel == PRICES}
            self._fill_gap(client, since, self.seq if oldest is None else oldest - 1, covered)
        for (sub, source), (_, encode, price) in sorted(newest.items(), key=lambda kv: kv[1][0]):
            sub.offer(source, encode(), price, now)
        for sub in subs.values():
            self._watch[sub.channel].setdefault(sub.symbol, {})[sub] = None
        if self._to_park:  # it fell behind again on the way
            self._park()

    def _fill_gap(
        self, client: StreamClient, since: int, to_seq: int, covered: set[tuple[str, str]]
    ) -> None:
        """Updates of a parked client the ring lost: a ``gap`` per channel, and the newest
        price of each of its symbols' sources the ring has none of (nothing newest is lost)."""
        for channel in sorted({c for c, _ in client.subscriptions}):
            gap = {"type": "gap", "from_seq": since + 1, "to_seq": to_seq, "channel": channel}
            client.put_control(messages.encode_text(gap))
        for symbol in client.symbols(PRICES):
            for feed in self._sources(symbol):
                if (symbol, feed.source) not in covered:
                    client.put_control(self._price_snapshot(symbol, feed))

    def watched(self, channel: str) -> list[str]:
        """The symbols someone subscribes to on ``channel``."""
        return [s for s in self._watch[channel] if s != ALL]

    # -- updates --------------------------------------------------------------------------

    def publish(self, feeds: Feeds) -> None:
        """Prices from the fan-out: each takes a seq; subscribed symbols' go to their clients."""
        count = len(feeds)
        if not count:
            return
        first = self.seq + 1
        self.seq += count
        symbols = feeds.symbols
        last = self._last[PRICES]
        prev = {s: last.get(s) for s in set(symbols)}
        now = trio.current_time()
        self.ring.add(FeedsEntry(first, feeds, prev, now))
        watched = self._watch[PRICES]
        if watched:
            hits = [i for i, s in enumerate(symbols) if s in watched]
            if hits:
                self._deliver(feeds, hits, first, prev, watched, now)
        last.update(zip(symbols, range(first, first + count), strict=True))
        if self._to_park:
            self._park()

    def _deliver(
        self,
        feeds: Feeds,
        hits: list[int],
        first: int,
        prev: dict[str, int | None],
        watched: Mapping[str, Mapping[Subscription, None]],
        now: float,
    ) -> None:
        wall = utc_now()
        observe = self.streamed_latency.observe
        symbols, sources, prices, received = (
            feeds.symbols, feeds.sources, feeds.prices, feeds.received_at)  # fmt: skip
        before = dict(prev)
        for i in hits:
            symbol, seq = symbols[i], first + i
            message = messages.update("price_update", seq, before[symbol], price_payload(feeds[i]))
            before[symbol] = seq
            self.published += 1
            observe((wall - received[i]).total_seconds())
            source, price = sources[i], float(prices[i])
            for sub in watched[symbol]:
                sub.offer(source, message, price, now)

    def publish_message(
        self, channel: str, subject: str, payload: str, price: float | None = None
    ) -> None:
        """A consensus or status update (``payload``: its encoded fields) to the ring and to
        the subscriptions of ``subject`` (a status event that is not a symbol's: to all of the
        channel's clients)."""
        self.seq += 1
        seq, last = self.seq, self._last[channel]
        message = messages.update(_TYPES[channel], seq, last.get(subject), payload)
        last[subject] = seq
        now = trio.current_time()
        self.ring.add(MessageEntry(seq, channel, subject, message, now, price))
        watchers = self._watch[channel].get(_route(channel, subject))
        if watchers:
            self.published += 1
            for sub in watchers:
                sub.offer(subject, message, price, now)
            if self._to_park:
                self._park()

    def update_states(self, current: dict[str, str]) -> None:
        """The status channel: an event for each subject whose state changed (the first read
        only records them)."""
        first_read, before = not self.states, self.states
        self.states = dict(current)
        if first_read:
            return
        stamp = time_text(utc_now())
        for subject, state in current.items():
            if before.get(subject) != state:
                self.publish_message(STATUS, subject, _status_payload(subject, state, stamp))

    # -- snapshots and replays ------------------------------------------------------------

    def _sources(self, symbol: str) -> Iterable[PriceFeed]:
        if self._latest is None:
            return ()
        found: Mapping[str, PriceFeed] = self._latest.by_source(symbol)
        return sorted(found.values(), key=lambda f: f.source)

    def _price_snapshot(self, symbol: str, feed: PriceFeed) -> str:
        last = self._last[PRICES].get(symbol)
        seq = self.seq if last is None else last
        return messages.update("price_update", seq, last, price_payload(feed), snapshot=True)

    def _consensus_snapshot(self, value: ChannelValue) -> str:
        last = self._last[CONSENSUS].get(value.symbol)
        seq = self.seq if last is None else last
        return messages.update("consensus_update", seq, last, value.payload, snapshot=True)

    def _status_snapshot(self, subjects: list[str]) -> list[str]:
        stamp, last, out = time_text(utc_now()), self._last[STATUS], []
        for subject, state in sorted(self.states.items()):
            if _route(STATUS, subject) in subjects:
                seq = last.get(subject, self.seq)
                payload = _status_payload(subject, state, stamp)
                out.append(messages.update("status_update", seq, last.get(subject), payload,
                                           snapshot=True))  # fmt: skip
        return out

    def _replay(
        self, client: StreamClient, channel: str, subjects: list[str], since: int
    ) -> list[str]:
        """What ``client`` missed on ``channel`` after ``since``, as the messages live clients
        got, the newest ``limit`` of them; a ``gap`` first for what the ring no longer holds."""
        if since > self.seq:
            return [messages.error("VALIDATION_ERROR", f"since_seq {since} is ahead of the "
                                   f"stream (seq {self.seq})", field="since_seq")]  # fmt: skip
        wanted, out = set(subjects), list[tuple[int, str]]()
        for entry in self.ring.after(since):
            if isinstance(entry, FeedsEntry):
                if channel == PRICES:
                    out.extend(_replayed_feeds(entry, wanted, since))
            elif entry.channel == channel and _route(channel, entry.subject) in wanted:
                out.append((entry.first, entry.message))
        oldest = self.ring.first_seq
        gap_to = (oldest - 1) if oldest is not None else self.seq
        if len(out) > client.limit:
            gap_to = out[-client.limit - 1][0]
            out = out[-client.limit :]
        replayed = [m for _, m in out]
        if gap_to > since:
            gap = {"type": "gap", "from_seq": since + 1, "to_seq": gap_to, "channel": channel}
            replayed.insert(0, messages.encode_text(gap))
        return replayed

    # -- the periodic work ----------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeats, cut-offs and the consensus and status channels, until cancelled."""
        from chrono.stream import watch

        config = self.config
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            nursery.start_soon(self._tick, nursery)
            if self.consensus is not None:
                nursery.start_soon(watch.publish_consensus, self, self.consensus, config)
            if self.states_of is not None:
                nursery.start_soon(watch.publish_status, self, self.states_of, config)

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_s)
            self.heartbeat()

    def heartbeat(self) -> None:
        """To every client: the time, the hub's seq and each of its symbols' data age."""
        now = utc_now()
        stamp = time_text(now)
        for client in list(self._clients):
            ages = {s: self._age_ms(s, now) for s in client.symbols()}
            beat = {"type": "heartbeat", "timestamp": stamp, "seq": self.seq, "ages_ms": ages}
            client.put_control(messages.encode_text(beat))

    def _age_ms(self, symbol: str, now: datetime) -> int | None:
        newest = max((f.received_at for f in self._sources(symbol)), default=None)
        return None if newest is None else max(0, int((now - newest).total_seconds() * 1000))

    async def _tick(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(TICK_S)
            for abort in self.cut_slow(trio.current_time()):
                nursery.start_soon(abort)

    def cut_slow(self, now: float) -> list[Callable[[], Awaitable[None]]]:
        """Cut every client behind, or stuck in a socket write, for ``send_timeout_s``; wake
        those whose lifetime has passed (their handler waits with no deadline of its own).
        The aborts of clients cut a tick ago and still here: their write never ended (hypercorn
        writes in a shielded scope, docs/stack.md, trap 1), so their connection is dropped."""
        limit = self.config.send_timeout_s
        aborts = []
        for client in list(self._clients):
            if client.cut:
                if client.abort is not None:
                    aborts.append(client.abort)
                    client.abort = None  # once
            elif client.lagging_since is not None and now - client.lagging_since >= limit:
                client.cut_off(f"too slow: behind for {limit:g} s")
            elif client.sending_since is not None and now - client.sending_since >= limit:
                client.cut_off(f"too slow: a write blocked for {limit:g} s")
            elif now >= client.ends_at:
                client.wake()
        self.ring.trim(now)
        return aborts

    def close_all(self) -> None:
        """At shutdown: end every client's stream, and any later one's, so each closes with 1001."""
        self._closed = True
        for client in list(self._clients):
            client.end(GOING_AWAY, "server going away")

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            clients=len(self._clients),
            published=self.published,
            dropped=self._dropped_by_gone + sum(c.dropped for c in self._clients),
            cut_off=self.cut_off + sum(c.cut for c in self._clients),
            parked=self.parked,
            seq=self.seq,
            replay_updates=len(self.ring),
            replay_first_seq=self.ring.first_seq,
            lagging=sum(
                c.lagging_since is not None or c.parked_at is not None for c in self._clients
            ),
        )


_TYPES = {PRICES: "price_update", CONSENSUS: "consensus_update", STATUS: "status_update"}


def _route(channel: str, subject: str) -> str:
    """The subscription subject an update goes to: a status event that is not a symbol's goes
    to every status client (``ALL``)."""
    if channel != STATUS:
        return subject
    kind, _, name = subject.partition(":")
    return name if kind == "symbol" else ALL


def _status_payload(subject: str, state: str, stamp: str) -> str:
    kind, _, name = subject.partition(":")
    return messages.encode_text({"kind": kind, "name": name or kind, "state": state,
                                 "timestamp": stamp})  # fmt: skip


def _feed_updates(entry: FeedsEntry, wanted: set[str]) -> Iterator[tuple[int, int | None, int]]:
    """The seq, prev_seq and index of each of ``entry``'s feeds of ``wanted`` symbols."""
    before = dict(entry.prev)
    first = entry.first
    for i, symbol in enumerate(entry.feeds.symbols):
        if symbol in wanted:
            seq = first + i
            yield seq, before[symbol], i
            before[symbol] = seq


def _price_update(seq: int, prev: int | None, feed: PriceFeed) -> str:
    return messages.update("price_update", seq, prev, price_payload(feed))


def _encoder(seq: int, prev: int | None, feeds: Feeds, i: int) -> Callable[[], str]:
    return lambda: _price_update(seq, prev, feeds[i])


def _const(message: str) -> Callable[[], str]:
    return lambda: message


def _replayed_feeds(entry: FeedsEntry, wanted: set[str], since: int) -> Iterator[tuple[int, str]]:
    feeds = entry.feeds
    for seq, prev, i in _feed_updates(entry, wanted):
        if seq > since:
            yield seq, _price_update(seq, prev, feeds[i])


def _sort_out(
    symbols: list[Any], known: Callable[[str], bool]
) -> tuple[list[str], list[str], list[Any]]:
    """The well-formed symbols (canonical case, once each), those of them no source has, and
    the malformed ones."""
    accepted: dict[str, None] = {}
    unknown, invalid = [], []
    for raw in symbols:
        symbol = raw.upper() if isinstance(raw, str) else None
        if symbol is None or not is_canonical_symbol(symbol):
            if raw not in invalid:
                invalid.append(raw)
        elif symbol not in accepted:
            accepted[symbol] = None
            if not known(symbol):
                unknown.append(symbol)
    return list(accepted), unknown, invalid
