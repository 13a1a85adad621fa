"""What every exchange simulator shares: markets, clients, the tick loop and the chaos knobs.

A simulator is a real WebSocket server on loopback. This base holds the exchange-neutral parts
(markets in ``market.py``, connections in ``client.py``):

- one ``Market`` per native symbol (a random walk; ``trade_id`` and time strictly increase),
  shared by every client, so one trade is broadcast to all its subscribers as on an exchange;
  a market trades only while someone subscribes to it, unless ``trade_unwatched`` (as a real
  market does: then ``ticks`` holds trades no client saw, what a reconnecting client misses);
- one ``Client`` per connection, with its ``topics`` (``(channel, native)`` pairs) and an
  outbox drained by one writer task, so generation never waits on a slow socket; a client
  whose outbox fills is dropped (the exchanges' slow-consumer cut);
- the knobs tests and ``chrono simulate`` turn: ``drop_connections``, ``set_silent``,
  ``set_heartbeats``, ``inject``, ``set_garbage_ratio``, ``reject_connections`` (HTTP 429 with
  ``Retry-After``), ``mute`` (acks that lie), ``send_notice`` (the exchange's "reconnect soon"),
  ``max_connection_age_s`` (the exchange's own cut), ``send_burst`` (benchmarks).

A subclass speaks one exchange's protocol (docs/exchanges.md): ``handle`` applies a client message
(calling ``subscribe``/``unsubscribe``/``ack``/``push``), ``render`` turns a trade into frames
per channel, ``heartbeats`` and ``notice`` are optional, ``snapshot`` is what a subscribe
answers with. Cancelling ``serve`` ends every connection abruptly.
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import cycle, islice
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import trio
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.trio.server import Server, ServerConnection
from websockets.trio.server import serve as serve_websockets

from chrono.exchanges.base import Exchange
from chrono.testing.simulators.client import Client, chunks, text_frame
from chrono.testing.simulators.market import (
    Market,
    SentTick,
    Trade,
    fixed,
    now_us,
    scaled,
)

__all__ = [
    "Chaos",
    "Client",
    "Market",
    "SentTick",
    "Simulator",
    "Trade",
    "fixed",
    "now_us",
    "scaled",
    "text_frame",
]

# Bytes per socket write in send_burst: large enough that the Trio cost is paid per chunk.
BURST_CHUNK_BYTES: Final = 64 * 1024
MIN_WAKE_S: Final = 0.005  # the tick loop wakes at most this often; faster rates batch trades


@dataclass(slots=True)
class _Rejecting:
    remaining: int
    status: int
    retry_after_s: float | None


@dataclass(slots=True)
class Chaos:
    """Faults ``run_chaos`` applies; 0 turns one off."""

    drop_every_s: float = 0.0  # close every connection abruptly (1006) this often
    silent_every_s: float = 0.0  # go silent (no data, heartbeats kept) this often ...
    silent_for_s: float = 0.0  # ... for this long
    garbage_ratio: float = 0.0  # a malformed frame after this share of data frames
    reject_every_s: float = 0.0  # refuse the next connection attempt with 429 this often
    notice_every_s: float = 0.0  # send the exchange's "reconnect soon" notice this often
    extra: dict[str, float] = field(default_factory=dict)


class Simulator:
    """One exchange's market-data server on loopback; see the module docstring."""

    exchange: ClassVar[Exchange]  # the registry entry this simulator stands in for
    data_channel: ClassVar[str] = "ticker"  # the channel whose frames carry prices
    resolution_us: ClassVar[int] = 1  # the exchange's time resolution (1000: milliseconds)
    sends_time: ClassVar[bool] = True  # False: data frames carry no exchange time
    default_subscribe_timeout_s: ClassVar[float | None] = None  # no subscribe: closed (1008)
    ws_ping_interval_s: ClassVar[float | None] = 20.0  # WebSocket pings the server sends
    sample_quote: ClassVar[str] = "USD"  # the quote of ``sample_symbols``: one it really lists

    @classmethod
    def sample_symbols(cls, bases: Sequence[str] = ("BTC", "ETH")) -> list[str]:
        """Canonical pairs the exchange really lists, for tests, demos and benchmarks."""
        return [f"{base}/{cls.sample_quote}" for base in bases]

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        tick_interval_s: float = 0.05,
        heartbeat_interval_s: float = 1.0,
        max_connection_age_s: float | None = None,
        subscribe_timeout_s: float | None = -1.0,  # negative: the exchange's own
        trade_unwatched: bool = False,  # markets trade with no subscriber (not `untraded` ones)
        seed: int = 0,
    ) -> None:
        rng = random.Random(seed)
        self._rng = random.Random(seed + 1)
        self.markets = {
            native: Market(native, self.base_asset(native), rng, resolution_us=self.resolution_us)
            for native in dict.fromkeys(symbols)
        }
        self.tick_interval_s = tick_interval_s
        self.trade_unwatched = trade_unwatched
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_connection_age_s = max_connection_age_s
        self.subscribe_timeout_s = (
            self.default_subscribe_timeout_s
            if subscribe_timeout_s is not None and subscribe_timeout_s < 0
            else subscribe_timeout_s
        )
        self.port = 0
        self.url = ""
        self.ticks: list[SentTick] = []
        self.burst_written_at: datetime | None = None  # when the last burst's first write began
        self.connections_total = 0
        self.rejected_total = 0
        self.garbage_total = 0
        self.subscribe_requests: list[Any] = []
        self.clients: dict[Client, None] = {}  # insertion-ordered set
        self.silent = False
        self.heartbeats_on = True
        self.garbage_ratio = 0.0
        self._muted: dict[str, int] = {}
        self._rejecting: _Rejecting | None = None
        self._acks_sent = 0
        self._ack_sent = trio.Event()

    # --- what a subclass provides --------------------------------------------------------

    def base_asset(self, native: str) -> str:
        """The base asset of a native symbol (only picks a realistic starting price)."""
        return native[:3]

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one client message."""
        raise NotImplementedError

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The frames one trade produces, with the channel each goes to."""
        raise NotImplementedError

    def sent_tick(self, market: Market, trade: Trade) -> SentTick:
        """The tick a trade's data frame spells; override where prices are written otherwise."""
        return SentTick(
            market.native, fixed(trade.cents, 2), trade.time if self.sends_time else None,
            trade.trade_id,
        )  # fmt: skip

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """Frames a new subscription gets at once (default: the last trade again, if any)."""
        if market.last is None or channel != self.data_channel:
            return []
        return [frame for ch, frame in self.render(market, market.last) if ch == channel]

    def heartbeats(self, client: Client) -> list[bytes]:
        """Frames sent to ``client`` every ``heartbeat_interval_s`` (default: none)."""
        return []

    def on_connect(self, client: Client) -> None:
        """Called once a client connected, before its first message (e.g. a status frame)."""

    def notice(self) -> bytes | None:
        """The exchange's "this connection closes soon, reconnect" frame, if it has one."""
        return None

    # --- serving --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The URL a collector uses: this server with the exchange's own path."""
        return self.endpoint_for(None)

    def endpoint_for(self, version: str | None) -> str:
        """The URL for wire ``version`` of the exchange (the registry's path on this server)."""
        parts = urlsplit(self.exchange.protocol(version).default_url)
        return self.url + (parts.path or "") + (f"?{parts.query}" if parts.query else "")

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``task_status.started(port)`` once accepting. With ``tls``
        (a server context) it speaks ``wss://``, as every real exchange does."""
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(
                    serve_websockets,
                    self._serve_client,
                    port,
                    host=host,
                    compression=None,
                    process_request=self._process_request,
                    ping_interval=self.ws_ping_interval_s,
                    max_size=2**20,
                    ssl=tls,
                )
            )
            self.port = server.listeners[0].socket.getsockname()[1]
            scheme = "ws" if tls is None else "wss"
            self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"
            nursery.start_soon(self._run_ticks)
            nursery.start_soon(self._run_heartbeats)
            if self.max_connection_age_s is not None:
                nursery.start_soon(self._run_age_limit, self.max_connection_age_s)
            task_status.started(self.port)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        rejecting = self._rejecting
        if rejecting is None:
            return None
        rejecting.remaining -= 1
        if rejecting.remaining <= 0:
            self._rejecting = None
        self.rejected_total += 1
        response = connection.respond(rejecting.status, "Too Many Requests\n")
        if rejecting.retry_after_s is not None:
            response.headers["Retry-After"] = f"{rejecting.retry_after_s:g}"
        return response

    async def _serve_client(self, ws: ServerConnection) -> None:
        """One connection: a reader applying requests and a writer draining the outbox."""
        self.connections_total += 1
        client = Client(ws)
        self.clients[client] = None
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_outbox, client)
                    self.on_connect(client)
                    await self._read_requests(client)
                    nursery.cancel_scope.cancel()
        finally:
            del self.clients[client]
            client.close()
            if client.dropped:  # before websockets' own exit path can send a close frame
                await trio.aclose_forcefully(ws.stream)

    async def _read_requests(self, client: Client) -> None:
        """Apply requests until the client leaves; close it if no subscribe arrives in time."""
        try:
            timeout = self.subscribe_timeout_s
            if timeout is not None:
                with trio.move_on_after(timeout):
                    while not client.subscribed:
                        self.handle(client, await client.ws.recv())
                if not client.subscribed:
                    await client.ws.aclose(CloseCode.POLICY_VIOLATION, "subscribe timeout")
                    return
            while True:
                self.handle(client, await client.ws.recv())
        except ConnectionClosed:
            return

    async def _write_outbox(self, client: Client) -> None:
        async for data, text, ack in client.outbox:
            async with client.write_lock:
                try:
                    await client.ws.send(data, text=text)
                except ConnectionClosed:
                    return
            if ack:
                self._acks_sent += 1
                self._ack_sent.set()
                self._ack_sent = trio.Event()

    # --- protocol helpers for subclasses --------------------------------------------------

    def subscribe(self, client: Client, channel: str, native: str) -> None:
        """Add a topic (a muted symbol is acked by the caller but gets nothing) and send its
        snapshot. The caller acks; ``native`` must be a known market."""
        client.subscribed = True
        topic = (channel, native)
        if self._muted.get(native, 0) > 0:
            self._muted[native] -= 1
            client.muted.add(topic)
            client.topics.discard(topic)
            return
        client.muted.discard(topic)
        client.topics.add(topic)
        if not self.silent:
            for frame in self.snapshot(client, channel, self.markets[native]):
                client.push(frame)

    def unsubscribe(self, client: Client, channel: str, native: str) -> None:
        client.topics.discard((channel, native))
        client.muted.discard((channel, native))

    def ack(self, client: Client, frame: str | bytes) -> None:
        """Queue a subscription ack; ``wait_subscribed`` counts these once written."""
        client.push(frame, ack=True)

    # --- the knobs ------------------------------------------------------------------------

    async def wait_subscribed(self, count: int = 1) -> None:
        """Return once ``count`` subscription acks in total have been written to clients."""
        while self._acks_sent < count:
            await self._ack_sent.wait()

    def drop_connections(self) -> None:
        """Close every client's TCP connection with no close frame (the client sees 1006)."""
        for client in list(self.clients):
            client.drop()

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) every data frame, including snapshots; heartbeats go on."""
        self.silent = silent

    def set_heartbeats(self, on: bool) -> None:
        self.heartbeats_on = on

    def set_garbage_ratio(self, ratio: float) -> None:
        """After this share of data frames, also send a malformed one (a truncated frame)."""
        self.garbage_ratio = ratio

    def reject_connections(
        self, count: int = 1, *, status: int = 429, retry_after_s: float | None = 1.0
    ) -> None:
        """Refuse the next ``count`` handshakes with ``status`` (and ``Retry-After``)."""
        self._rejecting = _Rejecting(count, status, retry_after_s)

    def mute(self, native: str, count: int = 1) -> None:
        """The next ``count`` subscriptions of ``native`` are acked and then deliver nothing."""
        self._muted[native] = self._muted.get(native, 0) + count

    def send_notice(self) -> bool:
        """Send the exchange's reconnect notice to every client; False if it has none."""
        frame = self.notice()
        if frame is None:
            return False
        for client in list(self.clients):
            client.push(frame)
        return True

    def inject(self, frames: Sequence[str | bytes]) -> None:
        """Queue raw frames to every subscribed client (``str`` as text, ``bytes`` as binary)."""
        for client in list(self.clients):
            if client.topics:
                for frame in frames:
                    client.push(frame, text=isinstance(frame, str))

    async def run_chaos(self, chaos: Chaos) -> None:
        """Apply ``chaos`` until cancelled (``chrono simulate`` and the chaos test)."""
        self.set_garbage_ratio(chaos.garbage_ratio)
        async with trio.open_nursery() as nursery:
            for every, action in (
                (chaos.drop_every_s, self.drop_connections),
                (chaos.reject_every_s, self.reject_connections),
                (chaos.notice_every_s, self.send_notice),
            ):
                if every > 0:
                    nursery.start_soon(_every, every, action)
            if chaos.silent_every_s > 0 and chaos.silent_for_s > 0:
                nursery.start_soon(self._run_silences, chaos.silent_every_s, chaos.silent_for_s)

    async def _run_silences(self, every_s: float, for_s: float) -> None:
        while True:
            await trio.sleep(every_s)
            self.set_silent(True)
            try:
                await trio.sleep(for_s)
            finally:
                self.set_silent(False)

    async def send_burst(self, count: int) -> None:
        """Generate ``count`` trades round-robin, then write them in ~64 KiB socket writes.

        ``burst_written_at`` is set once every frame is made, as the first write begins: the
        time a receiver's clock for the burst can start (it cannot receive before)."""
        burst: list[tuple[str, list[tuple[str, bytes]]]] = []
        for market in islice(cycle(self.markets.values()), count):
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
            burst.append((market.native, self.render(market, trade)))
        writes = []
        for client in list(self.clients):
            frames = [
                text_frame(frame)
                for native, rendered in burst
                for channel, frame in rendered
                if (channel, native) in client.topics
            ]
            if frames:
                writes.append((client, chunks(frames, BURST_CHUNK_BYTES)))
        self.burst_written_at = datetime.now(UTC)
        async with trio.open_nursery() as nursery:
            for client, data in writes:
                nursery.start_soon(self._write_raw, client, data)

    async def _write_raw(self, client: Client, data: Sequence[bytes]) -> None:
        """Pre-encoded frames, joined into writes, straight to the socket, every other writer
        held off meanwhile."""
        ws = client.ws
        async with client.write_lock, ws.send_lock:
            for chunk in data:
                if ws.protocol.state is not OPEN:
                    return
                try:
                    await ws.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    # --- generation -----------------------------------------------------------------------

    def reprice(self, factor: float) -> None:
        """Every market's price moves to ``factor`` times what it is, from the next trade on."""
        for market in self.markets.values():
            market.rescale(factor)

    def set_rate(self, frames_per_s: float) -> None:
        """Trades per second across all markets (one round trades each market once)."""
        self.tick_interval_s = len(self.markets) / frames_per_s

    async def _run_ticks(self) -> None:
        """Trade every market once per ``tick_interval_s``, batching rounds at high rates."""
        due = 0.0
        last = trio.current_time()
        while True:
            await trio.sleep(max(self.tick_interval_s, MIN_WAKE_S))
            now = trio.current_time()
            due += (now - last) / self.tick_interval_s
            last = now
            rounds, due = math.floor(due), due - math.floor(due)
            for _ in range(min(rounds, 10_000)):
                self._tick_round()

    def _tick_round(self) -> None:
        if self.silent:
            return
        for market in self.markets.values():
            subscribers = self._subscribers(market.native)
            if not subscribers and not self.trade_unwatched:
                continue
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
            for channel, frame in self.render(market, trade):
                for client in subscribers:
                    if (channel, market.native) in client.topics:
                        self._push_data(client, frame)

    def _subscribers(self, native: str) -> list[Client]:
        topic = (self.data_channel, native)
        return [client for client in self.clients if topic in client.topics]

    def _push_data(self, client: Client, frame: bytes) -> None:
        client.push(frame)
        if self.garbage_ratio and self._rng.random() < self.garbage_ratio:
            self.garbage_total += 1
            client.push(frame[: len(frame) // 2])  # truncated: never valid JSON

    async def _run_heartbeats(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval_s)
            if not self.heartbeats_on:
                continue
            for client in list(self.clients):
                for frame in self.heartbeats(client):
                    client.push(frame)

    async def _run_age_limit(self, max_age_s: float) -> None:
        """The exchange's own cut (Binance: 24 h): older connections are closed."""
        while True:
            await trio.sleep(min(1.0, max_age_s / 4))
            now = trio.current_time()
            for client in list(self.clients):
                if now - client.opened_at >= max_age_s:
                    client.drop()


async def _every(interval_s: float, action: Any) -> None:
    while True:
        await trio.sleep(interval_s)
        action()
