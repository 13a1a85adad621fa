"""A Bybit v5 public market-data server on loopback: spot and linear ``tickers``.

The protocol is docs/exchanges.md §7.

Serves ``/v5/public/spot`` and ``/v5/public/linear``; a client's category is its path, kept in
``client.state``. Every trade renders two frames: a full spot snapshot (channel ``tickers``)
and a linear delta carrying only the fields that changed since the market's previous trade
(channel ``tickers_linear``, one delta shared by every linear client). A linear subscribe is
answered with a full snapshot of the current state, a spot subscribe with the last ticker.
Replies (acks, errors, pongs) take the category's shape: spot writes ``ret_msg``
``"subscribe"``/``"unsubscribe"`` and its pong has no ``req_id``; linear writes ``ret_msg`` ``""``
and always echoes ``req_id`` (``""`` when none was sent).

Protocol choices where the docs are silent:

- One bad topic rejects the whole request and nothing in it is subscribed; the error names the
  first bad topic: ``"error:handler not found,topic:tickers.NOPEUSDT"`` for an unknown symbol
  and ``"error:already subscribed,topic:..."`` for a held one (live replies, 2026),
  ``"Invalid topic: ..."`` for anything not ``tickers.<symbol>`` (docs/exchanges.md); more than 10
  args on spot ``"args size >10"``; missing args ``"Params Error"``; another op
  ``"error:invalid op"``; a frame that is not a JSON object ``"Failed to decode incoming
  data"``. Linear has no per-request cap (the docs: "no args limit for Futures").
- Unsubscribing a topic the connection does not hold is acked like any unsubscribe.
- No ping and no data for ``idle_timeout_s`` (Bybit: 10 min): the connection is cut with no
  close frame. A path other than the two is cut at once. The server sends no WebSocket pings.
- While ``set_silent`` holds, a linear subscribe gets no snapshot, so its deltas are useless to
  a client until it resubscribes, as after any lost snapshot.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import msgspec
import trio

from chrono.exchanges.base import Exchange
from chrono.exchanges.bybit import EXCHANGE, MAX_ARGS_PER_REQUEST, TOPIC_PREFIX
from chrono.testing.simulators.base import Client, Market, Simulator, Trade, fixed

SPOT: Final = "tickers"
LINEAR: Final = "tickers_linear"
PATHS: Final = {"/v5/public/spot": "spot", "/v5/public/linear": "linear"}
FUNDING_INTERVAL_MS: Final = 8 * 3600 * 1000
_ENCODER: Final = msgspec.json.Encoder()


class _Refused(Exception):
    """A request Bybit refuses; the message is the reply's ``ret_msg``."""


def _signed(units: int, places: int) -> str:
    return f"-{fixed(-units, places)}" if units < 0 else fixed(units, places)


def _spot_data(native: str, trade: Trade) -> dict[str, str]:
    """The spot ticker body, in Bybit's field order and decimals."""
    return {
        "symbol": native,
        "lastPrice": fixed(trade.cents, 2),
        "highPrice24h": fixed(trade.high_cents, 2),
        "lowPrice24h": fixed(trade.low_cents, 2),
        "prevPrice24h": fixed(trade.open_cents, 2),
        "volume24h": fixed(trade.volume // 100, 6),
        "turnover24h": fixed(trade.volume * trade.cents // 100, 8),
        "price24hPcnt": _signed((trade.cents - trade.open_cents) * 10**4 // trade.open_cents, 4),
        "usdIndexPrice": fixed(trade.cents * 10**5 + trade.size % 10**5, 7),
    }


def _linear_data(native: str, trade: Trade) -> dict[str, str]:
    """The full linear ticker body, in the docs' field order and decimals."""
    time_ms = trade.time_us // 1000
    mark = (trade.bid_cents + trade.ask_cents) // 2
    return {
        "symbol": native,
        "tickDirection": "PlusTick" if trade.buy else "MinusTick",
        "price24hPcnt": _signed((trade.cents - trade.open_cents) * 10**6 // trade.open_cents, 6),
        "lastPrice": fixed(trade.cents, 2),
        "prevPrice24h": fixed(trade.open_cents, 2),
        "highPrice24h": fixed(trade.high_cents, 2),
        "lowPrice24h": fixed(trade.low_cents, 2),
        "prevPrice1h": fixed(trade.open_cents, 2),
        "markPrice": fixed(mark, 2),
        "indexPrice": fixed(mark + 1, 2),
        "openInterest": fixed(68_744_761 + trade.sequence % 10_000, 3),
        "openInterestValue": fixed((68_744_761 + trade.sequence % 10_000) * mark // 1000, 2),
        "turnover24h": fixed(trade.volume * trade.cents // 100, 8),
        "volume24h": fixed(trade.volume // 10**5, 3),
        "nextFundingTime": str((time_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS),
        "fundingRate": "0.0001" if trade.cents >= trade.open_cents else "-0.000212",
        "bid1Price": fixed(trade.bid_cents, 2),
        "bid1Size": fixed(trade.size // 10**5, 3),
        "ask1Price": fixed(trade.ask_cents, 2),
        "ask1Size": fixed(trade.size * 7 % 10**8 // 10**5, 3),
    }


class BybitSimulator(Simulator):
    """Serves Bybit's spot and linear ``tickers`` topics; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    sample_quote: ClassVar[str] = "USDT"  # Bybit lists no USD spot quotes (USD is not USDT)
    data_channel: ClassVar[str] = SPOT
    resolution_us: ClassVar[int] = 1000
    ws_ping_interval_s: ClassVar[float | None] = None  # none seen on Bybit's streams

    def __init__(
        self,
        *,
        symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
        idle_timeout_s: float = 600.0,
        **options: Any,
    ) -> None:
        super().__init__(symbols=symbols, **options)
        self.idle_timeout_s = idle_timeout_s
        self._linear: dict[str, dict[str, str]] = {}  # native -> linear fields of its last trade

    def base_asset(self, native: str) -> str:
        return native.removesuffix("USDT").removesuffix("USDC")

    # --- frames ---------------------------------------------------------------------------

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The spot snapshot and the linear delta of one trade (called once per trade)."""
        full = _linear_data(market.native, trade)
        before = self._linear.get(market.native, {})
        changed = {key: value for key, value in full.items() if before.get(key) != value}
        self._linear[market.native] = full
        delta = {"symbol": market.native, **changed}
        return [
            (SPOT, self._spot_frame(market, trade)),
            (LINEAR, self._linear_frame(market.native, "delta", delta, trade)),
        ]

    def _spot_frame(self, market: Market, trade: Trade) -> bytes:
        return _ENCODER.encode(
            {
                "topic": TOPIC_PREFIX + market.native,
                "ts": trade.time_us // 1000,
                "type": "snapshot",
                "cs": trade.sequence,
                "data": _spot_data(market.native, trade),
            }
        )

    def _linear_frame(self, native: str, kind: str, data: dict[str, str], trade: Trade) -> bytes:
        return _ENCODER.encode(
            {
                "topic": TOPIC_PREFIX + native,
                "type": kind,
                "data": data,
                "cs": trade.sequence,
                "ts": trade.time_us // 1000,
            }
        )

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """The last trade (a first one if none yet): spot as usual, linear as a snapshot."""
        trade = market.last
        if trade is None:
            trade = market.trade()
            self.ticks.append(self.sent_tick(market, trade))
            self.render(market, trade)  # the linear state every later delta builds on
        if channel == LINEAR:
            full = self._linear[market.native]
            return [self._linear_frame(market.native, "snapshot", full, trade)]
        return [self._spot_frame(market, trade)]

    def _subscribers(self, native: str) -> list[Client]:
        topics = {(SPOT, native), (LINEAR, native)}
        return [client for client in self.clients if not topics.isdisjoint(client.topics)]

    def _push_data(self, client: Client, frame: bytes) -> None:
        client.state["active_at"] = trio.current_time()
        super()._push_data(client, frame)

    # --- requests -------------------------------------------------------------------------

    def on_connect(self, client: Client) -> None:
        """Note the category (from the path) and a ``conn_id``; cut an unknown path."""
        category = PATHS.get(urlsplit(client.path).path)
        if category is None:
            client.drop()
            return
        conn_id = str(uuid.UUID(int=self._rng.getrandbits(128)))
        client.state.update(category=category, conn_id=conn_id, active_at=trio.current_time())

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one request; a refused one gets ``success:false`` and changes nothing."""
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            client.push(self._reply(client, {}, "Failed to decode incoming data", success=False))
            return
        op = request.get("op")
        try:
            if op == "ping":
                client.state["active_at"] = trio.current_time()
                client.push(self._pong(client, request))
            elif op == "subscribe":
                self.subscribe_requests.append(request)
                self._subscribe(client, request)
            elif op == "unsubscribe":
                self._unsubscribe(client, request)
            else:
                raise _Refused("error:invalid op")
        except _Refused as exc:
            client.push(self._reply(client, request, str(exc), success=False))

    def _subscribe(self, client: Client, request: dict[str, Any]) -> None:
        """Ack, then a snapshot per topic; the whole request is refused for one bad topic."""
        topics = _args(request)
        if client.state["category"] == "spot" and len(topics) > MAX_ARGS_PER_REQUEST:
            raise _Refused(f"args size >{MAX_ARGS_PER_REQUEST}")
        channel = self._channel(client)
        natives = [self._subscribable(client, channel, topic) for topic in topics]
        self.ack(client, self._reply(client, request, self._ok_text(client, "subscribe")))
        for native in dict.fromkeys(natives):
            self.subscribe(client, channel, native)
        client.state["active_at"] = trio.current_time()

    def _subscribable(self, client: Client, channel: str, topic: str) -> str:
        """The native symbol of ``topic``; raises ``_Refused`` as Bybit would."""
        name, dot, native = topic.partition(".")
        if name + dot != TOPIC_PREFIX or not native:
            raise _Refused(f"Invalid topic: {topic}")
        if native not in self.markets:
            raise _Refused(f"error:handler not found,topic:{topic}")
        if (channel, native) in client.topics or (channel, native) in client.muted:
            raise _Refused(f"error:already subscribed,topic:{topic}")
        return native

    def _unsubscribe(self, client: Client, request: dict[str, Any]) -> None:
        channel = self._channel(client)
        for topic in _args(request):
            if topic.startswith(TOPIC_PREFIX):
                self.unsubscribe(client, channel, topic.removeprefix(TOPIC_PREFIX))
        client.push(self._reply(client, request, self._ok_text(client, "unsubscribe")))

    def _channel(self, client: Client) -> str:
        return LINEAR if client.state["category"] == "linear" else SPOT

    def _ok_text(self, client: Client, op: str) -> str:
        return op if client.state["category"] == "spot" else ""

    def _reply(
        self, client: Client, request: dict[str, Any], ret_msg: str, *, success: bool = True
    ) -> bytes:
        """``{"success":..,"ret_msg":..,"conn_id":..,"req_id":..,"op":..}`` in the category's
        shape: spot writes ``req_id`` only when one was sent, linear always."""
        frame: dict[str, Any] = {
            "success": success,
            "ret_msg": ret_msg,
            "conn_id": client.state["conn_id"],
        }
        req_id = request.get("req_id")
        if client.state["category"] == "linear" or isinstance(req_id, str):
            frame["req_id"] = req_id if isinstance(req_id, str) else ""
        if isinstance(op := request.get("op"), str):
            frame["op"] = op
        return _ENCODER.encode(frame)

    def _pong(self, client: Client, request: dict[str, Any]) -> bytes:
        """The docs' pongs: spot without ``req_id``, linear with it."""
        echoed = request if client.state["category"] == "linear" else {"op": "ping"}
        return self._reply(client, echoed, "pong")

    # --- the idle cut ---------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The base server plus the idle cut; ``task_status.started(port)`` once accepting."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_idle_cuts)
            bound: int = await nursery.start(partial(super().serve, host, port, tls=tls))
            task_status.started(bound)

    async def _run_idle_cuts(self) -> None:
        """Cut connections that sent no ping and got no data for ``idle_timeout_s``."""
        while True:
            await trio.sleep(min(1.0, self.idle_timeout_s / 4))
            now = trio.current_time()
            for client in list(self.clients):
                if now - client.state.get("active_at", now) >= self.idle_timeout_s:
                    client.drop()


def _args(request: dict[str, Any]) -> list[str]:
    args = request.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise _Refused("Params Error")
    return args
