"""A Coinbase Exchange market-data server on loopback, speaking the real protocol (exchanges.md §1).

It owns one book per product (random-walk price, strictly increasing ``trade_id`` and ``time``)
and broadcasts each trade to every client subscribed to it, as the exchange does. Per client it
keeps the ``ticker`` and ``heartbeat`` product sets and an outbox drained by one writer task, so
generation never waits on a slow socket; a client whose outbox fills is dropped (the exchange's
``ErrSlowConsume``).

Protocol choices where exchanges.md is silent: a client that sends no valid subscribe within
``subscribe_timeout_s`` is closed with 1008 "subscribe timeout"; a request that is not a JSON
subscribe/unsubscribe gets ``{"type":"error","message":"Malformed message",...}``; an unknown
channel is refused with ``"<name> is not a valid channel"``.

Knobs for tests: ``drop_connections`` (TCP closed with no close frame: the client sees 1006),
``set_silent`` (no tickers at all, not even the one after a subscribe), ``set_heartbeats``,
``inject`` (raw frames to the clients subscribed right now, queued behind their pending frames)
and ``send_burst`` (benchmark mode). Cancelling ``serve`` ends every connection abruptly.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from itertools import cycle, islice
from time import time_ns
from typing import Any, Final

import msgspec
import trio
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import OPEN
from websockets.trio.server import Server, ServerConnection
from websockets.trio.server import serve as serve_websockets

# Frames a client may lag behind before it is dropped as a slow consumer; bounds memory per client.
OUTBOX_FRAMES: Final = 10_000
# Bytes per socket write in send_burst: large enough that the Trio cost is paid per chunk.
BURST_CHUNK_BYTES: Final = 64 * 1024
CHANNELS: Final = ("ticker", "heartbeat")
_START_CENTS: Final = {"BTC": 6_723_456, "ETH": 345_678, "SOL": 14_567}
_ENCODER: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class SentTick:
    """One generated trade, as its ticker frame spelled it."""

    product_id: str
    price: str
    time: str
    trade_id: int


def _fixed(units: int, places: int) -> str:
    """``units`` of 10**-places as a decimal string with exactly ``places`` digits."""
    whole, fraction = divmod(units, 10**places)
    return f"{whole}.{fraction:0{places}d}"


@lru_cache(maxsize=8)
def _second_prefix(second: int) -> str:
    return f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}."


def _stamp(epoch_us: int) -> str:
    """ISO 8601 UTC with 6 fractional digits and ``Z``, as the exchange writes ``time``."""
    second, micro = divmod(epoch_us, 1_000_000)
    return f"{_second_prefix(second)}{micro:06d}Z"


def _now_us() -> int:
    return time_ns() // 1000


class _Product:
    """One product's book, shared by every client: the source of its trades and heartbeats."""

    def __init__(self, product_id: str, rng: random.Random, *, traded: bool) -> None:
        self.id, self.traded, self._random = product_id, traded, rng.random
        self._cents = self._low_cents = self._high_cents = _START_CENTS.get(
            product_id.partition("-")[0], 10_000
        )
        self._step = max(1, self._cents // 20_000)  # a price step is about 0.005 %
        self._open = self._low = self._high = _fixed(self._cents, 2)
        self._volume = 0
        self.sequence = rng.randint(10**8, 9 * 10**8)
        self.trade_id = rng.randint(10**5, 9 * 10**5)
        self._time_us = 0
        self.last: bytes | None = None  # the last trade's frame, repeated on every subscribe

    def trade(self) -> tuple[SentTick, bytes]:
        """A new trade: the price walks one step, ``trade_id`` and ``time`` strictly increase."""
        r, step = self._random, self._step
        cents = self._cents = max(1, self._cents + round((2 * r() - 1) * step))
        self._track_range(cents)
        size = 1 + int(r() * 10**8)
        self._volume += size
        self.trade_id += 1
        self.sequence += 1 + int(r() * 20)  # the ticker skips sequence values, as the real feed
        self._time_us = max(_now_us(), self._time_us + 1)
        price, time, bid = _fixed(cents, 2), _stamp(self._time_us), max(1, cents - int(r() * step))
        frame = {  # the exchange's field order and spelling
            "type": "ticker",
            "sequence": self.sequence,
            "product_id": self.id,
            "price": price,
            "open_24h": self._open,
            "volume_24h": _fixed(self._volume, 8),
            "low_24h": self._low,
            "high_24h": self._high,
            "volume_30d": _fixed(self._volume + 30 * 10**12, 8),
            "best_bid": _fixed(bid, 2),
            "best_bid_size": _fixed(int(r() * 10**8), 8),
            "best_ask": _fixed(max(bid + 1, cents), 2),
            "best_ask_size": _fixed(int(r() * 10**8), 8),
            "side": "buy" if r() < 0.5 else "sell",
            "time": time,
            "trade_id": self.trade_id,
            "last_size": _fixed(size, 8),
        }
        self.last = _ENCODER.encode(frame)
        return SentTick(self.id, price, time, self.trade_id), self.last

    def _track_range(self, cents: int) -> None:
        if cents < self._low_cents:
            self._low_cents, self._low = cents, _fixed(cents, 2)
        elif cents > self._high_cents:
            self._high_cents, self._high = cents, _fixed(cents, 2)

    def untraded(self) -> bytes:
        """The zeros, without ``time``/``trade_id``, that a product with no trades sends."""
        zeros = dict.fromkeys(("price", "open_24h", "volume_24h", "low_24h", "high_24h"), "0")
        frame = {"type": "ticker", "sequence": self.sequence, "product_id": self.id, **zeros}
        frame |= {"volume_30d": "0", "best_bid": "0.00000", "best_ask": "0.00000"}
        return _ENCODER.encode(frame)

    def heartbeat(self) -> bytes:
        last_trade_id = self.trade_id if self.last else 0
        beat = {"type": "heartbeat", "sequence": self.sequence, "last_trade_id": last_trade_id}
        return _ENCODER.encode(beat | {"product_id": self.id, "time": _stamp(_now_us())})


_Out = tuple[str | bytes, bool, bool]  # (frame, sent as text, is a subscription ack)


class _Client:
    """One connection's subscriptions and outbox. ``drop`` ends it without a close frame."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.channels: dict[str, set[str]] = {name: set() for name in CHANNELS}
        self.subscribed = False  # a subscribe succeeded: the subscribe timeout no longer applies
        self.dropped = False
        self.scope = trio.CancelScope()
        self.write_lock = trio.Lock()  # held by the outbox writer and by send_burst
        self._send, self.outbox = trio.open_memory_channel[_Out](OUTBOX_FRAMES)

    @property
    def active(self) -> bool:
        return any(self.channels.values())

    def push(self, data: str | bytes, *, text: bool = True, ack: bool = False) -> None:
        try:
            self._send.send_nowait((data, text, ack))
        except trio.WouldBlock:
            self.drop()

    def drop(self) -> None:
        self.dropped = True
        self.scope.cancel()

    def close(self) -> None:
        self._send.close()
        self.outbox.close()


class _Rejected(Exception):
    """A request the exchange refuses; the message is the error frame's ``reason``."""


def _error(message: str, reason: str) -> bytes:
    return _ENCODER.encode({"type": "error", "message": message, "reason": reason})


def _channel_spec(channel: object, default: object) -> tuple[str, list[Any]]:
    """``"ticker"`` or ``{"name": "ticker", "product_ids": [...]}`` -> (name, product ids)."""
    if isinstance(channel, dict):
        name, ids = channel.get("name"), channel.get("product_ids", default)
    else:
        name, ids = channel, default
    if not isinstance(name, str) or name not in CHANNELS:
        raise _Rejected(f"{name} is not a valid channel")
    if not isinstance(ids, list):
        raise _Rejected("Invalid product ID provided")
    return name, ids


def _text_frame(payload: bytes) -> bytes:
    """An unmasked server text frame (RFC 6455 §5.2): a burst skips the per-frame protocol call."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def _chunks(frames: Sequence[bytes], limit: int) -> list[bytes]:
    """Frames joined into writes of about ``limit`` bytes (burst frames are all alike in size)."""
    step = max(1, limit // len(frames[0]))
    return [b"".join(frames[i : i + step]) for i in range(0, len(frames), step)]


class CoinbaseSimulator:
    """Serves the Coinbase ``ticker`` and ``heartbeat`` channels; see the module docstring."""

    def __init__(
        self,
        *,
        products: Sequence[str] = ("BTC-USD", "ETH-USD"),
        tick_interval_s: float = 0.05,
        heartbeat_interval_s: float = 1.0,
        subscribe_timeout_s: float = 5.0,
        seed: int = 0,
        untraded: Sequence[str] = (),
    ) -> None:
        rng = random.Random(seed)
        known = dict.fromkeys([*products, *untraded])  # a product listed in both is untraded
        self._products = {pid: _Product(pid, rng, traded=pid not in untraded) for pid in known}
        self.tick_interval_s = tick_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.port = 0
        self.url = ""
        self.ticks: list[SentTick] = []
        self.connections_total = 0
        self.subscribe_requests: list[dict[str, Any]] = []
        self._clients: dict[_Client, None] = {}  # insertion-ordered set
        self._silent = False
        self._heartbeats = True
        self._acks_sent = 0
        self._ack_sent = trio.Event()

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``task_status.started(port)`` once accepting."""
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(serve_websockets, self._serve_client, port, host=host, compression=None)
            )
            self.port = server.listeners[0].socket.getsockname()[1]
            self.url = f"ws://{f'[{host}]' if ':' in host else host}:{self.port}"
            nursery.start_soon(self._run_tickers)
            nursery.start_soon(self._run_heartbeats)
            task_status.started(self.port)

    async def wait_subscribed(self, count: int = 1) -> None:
        """Return once ``count`` subscribe acks in total have been written to clients."""
        while self._acks_sent < count:
            await self._ack_sent.wait()

    def drop_connections(self) -> None:
        """Close every client's TCP connection with no close frame (the client sees 1006)."""
        for client in self._clients:
            client.drop()

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) every ticker, including the one sent on subscribe."""
        self._silent = silent

    def set_heartbeats(self, on: bool) -> None:
        self._heartbeats = on

    def inject(self, frames: Sequence[str | bytes]) -> None:
        """Queue raw frames to every subscribed client (``str`` as text, ``bytes`` as binary)."""
        for client in self._clients:
            if client.active:
                for frame in frames:
                    client.push(frame, text=isinstance(frame, str))

    async def send_burst(self, count: int) -> None:
        """Generate ``count`` trades round-robin, then write them in ~64 KiB socket writes."""
        traded = [product for product in self._products.values() if product.traded]
        burst = [(p.id, _text_frame(self._trade(p))) for p in islice(cycle(traded), count)]
        async with trio.open_nursery() as nursery:
            for client in list(self._clients):
                frames = [frame for pid, frame in burst if pid in client.channels["ticker"]]
                if frames:
                    nursery.start_soon(self._write_raw, client, frames)

    def _trade(self, product: _Product) -> bytes:
        tick, frame = product.trade()
        self.ticks.append(tick)
        return frame

    def _subscribers(self, channel: str, product_id: str) -> list[_Client]:
        return [client for client in self._clients if product_id in client.channels[channel]]

    async def _run_tickers(self) -> None:
        while True:
            await trio.sleep(self.tick_interval_s)
            for product in self._products.values():
                if self._silent or not product.traded:
                    continue
                clients = self._subscribers("ticker", product.id)
                if clients:
                    frame = self._trade(product)
                    for client in clients:
                        client.push(frame)

    async def _run_heartbeats(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval_s)
            for product in self._products.values():
                clients = self._subscribers("heartbeat", product.id) if self._heartbeats else []
                if clients:
                    frame = product.heartbeat()
                    for client in clients:
                        client.push(frame)

    async def _serve_client(self, ws: ServerConnection) -> None:
        """One connection: a reader applying requests and a writer draining the outbox."""
        self.connections_total += 1
        client = _Client(ws)
        self._clients[client] = None
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_outbox, client)
                    await self._read_requests(client)
                    nursery.cancel_scope.cancel()
        finally:
            del self._clients[client]
            client.close()
            if client.dropped:  # before websockets' own exit path can send a close frame
                await trio.aclose_forcefully(ws.stream)

    async def _read_requests(self, client: _Client) -> None:
        """Apply requests until the client leaves; close it if no subscribe arrives in time."""
        try:
            with trio.move_on_after(self.subscribe_timeout_s):
                while not client.subscribed:
                    self._handle_request(client, await client.ws.recv())
            if not client.subscribed:
                await client.ws.aclose(CloseCode.POLICY_VIOLATION, "subscribe timeout")
                return
            while True:
                self._handle_request(client, await client.ws.recv())
        except ConnectionClosed:
            return

    async def _write_outbox(self, client: _Client) -> None:
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

    async def _write_raw(self, client: _Client, frames: Sequence[bytes]) -> None:
        """Pre-encoded frames straight to the socket, every other writer held off meanwhile."""
        ws = client.ws
        async with client.write_lock, ws.send_lock:
            for chunk in _chunks(frames, BURST_CHUNK_BYTES):
                if ws.protocol.state is not OPEN:
                    return
                try:
                    await ws.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    def _handle_request(self, client: _Client, raw: str | bytes) -> None:
        """Apply one client message; a refused one gets an error frame and changes nothing."""
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        kind = request.get("type") if isinstance(request, dict) else None
        try:
            if kind == "subscribe":
                self.subscribe_requests.append(request)
                self._subscribe(client, request)
            elif kind == "unsubscribe":
                self._unsubscribe(client, request)
            else:
                client.push(_error("Malformed message", "expected a subscribe or unsubscribe"))
        except _Rejected as exc:
            client.push(_error(f"Failed to {kind}", str(exc)))

    def _requested(self, request: dict[str, Any], *, subscribing: bool) -> dict[str, list[str]]:
        """Channel -> product ids named by ``request``; raises ``_Rejected`` like the exchange."""
        channels = request.get("channels")
        if not isinstance(channels, list) or not channels:
            raise _Rejected("No channels provided")
        wanted: dict[str, list[str]] = {}
        for channel in channels:
            name, ids = _channel_spec(channel, request.get("product_ids", []))
            if subscribing and not ids:
                raise _Rejected(f"You need to specify at least one product ID for channel {name}")
            for pid in ids:
                if not isinstance(pid, str) or pid not in self._products:
                    raise _Rejected(f"{pid} is not a valid product")
            wanted.setdefault(name, []).extend(ids)
        return wanted

    def _subscribe(self, client: _Client, request: dict[str, Any]) -> None:
        """Ack the cumulative set, then one ticker per requested product with its last trade."""
        wanted = self._requested(request, subscribing=True)
        for name, ids in wanted.items():
            client.channels[name].update(ids)
        client.subscribed = True
        client.push(self._ack(client), ack=True)
        if not self._silent:
            for pid in dict.fromkeys(wanted.get("ticker", [])):
                client.push(self._snapshot(self._products[pid]))

    def _unsubscribe(self, client: _Client, request: dict[str, Any]) -> None:
        """A channel named without products leaves all of that channel's products."""
        for name, ids in self._requested(request, subscribing=False).items():
            if ids:
                client.channels[name].difference_update(ids)
            else:
                client.channels[name].clear()
        client.push(self._ack(client))  # wait_subscribed counts subscribe acks only

    def _ack(self, client: _Client) -> bytes:
        channels = [
            {"name": name, "product_ids": sorted(ids)}
            for name, ids in client.channels.items()
            if ids
        ]
        return _ENCODER.encode({"type": "subscriptions", "channels": channels})

    def _snapshot(self, product: _Product) -> bytes:
        """The latest state: the same last trade again, or a first one if none happened yet."""
        if not product.traded:
            return product.untraded()
        return product.last or self._trade(product)
