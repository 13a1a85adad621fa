"""An OKX v5 public market-data server on loopback, speaking the real protocol.

The protocol is docs/exchanges.md §6.

Serves ``/ws/v5/public`` and its ``tickers`` channel for SPOT instIds. Each subscribe or
unsubscribe arg is acked on its own (``{"event":"subscribe","arg":{...}}``, with the request's
``id`` and the connection's ``connId``), and a subscribe is answered with the pair's latest
ticker. The text ``ping`` is answered with the text ``pong``.

The server cuts that a collector must survive: a connection that subscribes nothing within
``subscribe_timeout_s`` (30 s, the base closes it with 1008), and one that was pushed no data
and sent no ``ping`` for ``idle_timeout_s`` (30 s: closed with OKX's 4004 "No data received in
30s."). ``send_notice`` sends each client the 64008 "service upgrade" notice.

Protocol choices where docs/exchanges.md is silent: a request that is not JSON, not a
subscribe/unsubscribe or has no well-formed ``args`` gets one 60012 ``Invalid request: <text>``;
in a well-formed request each arg naming another channel, an unknown instId, or sent on
another path gets its own 60018 while the other args are acked (so one typo does not sink a
batch). The 480 requests/hour cap is not enforced.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import msgspec
import trio

from chrono.exchanges.base import Exchange
from chrono.exchanges.okx import CHANNEL, EXCHANGE, PING, RECONNECT_NOTICE
from chrono.testing.simulators.base import Client, Market, SentTick, Simulator, Trade, fixed

PATH: Final = urlsplit(EXCHANGE.default_url).path  # /ws/v5/public
IDLE_CLOSE_CODE: Final = 4004  # OKX's close code for an idle link
IDLE_CLOSE_REASON: Final = "No data received in 30s."
NOTICE_TEXT: Final = "The connection will soon be closed for a service upgrade. Please reconnect."
_ENCODER: Final = msgspec.json.Encoder()
_OPS: Final = ("subscribe", "unsubscribe")


def okx_number(units: int, places: int) -> str:
    """``units`` of 10**-places as OKX writes numbers: no trailing zeros (``"30236"``)."""
    text = fixed(units, places)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _price(cents: int) -> str:
    return okx_number(cents, 2)


class _Invalid(Exception):
    """A request OKX refuses as a whole (60012)."""


def _checked(message: str | bytes) -> dict[str, Any]:
    """The request if it is a well-formed (un)subscribe, else ``_Invalid``."""
    try:
        request = json.loads(message)
    except ValueError as exc:  # also bad UTF-8 in a binary frame
        raise _Invalid from exc
    if not isinstance(request, dict) or request.get("op") not in _OPS:
        raise _Invalid
    if not isinstance(request.get("id", ""), str):
        raise _Invalid
    args = request.get("args")
    if not isinstance(args, list) or not args:
        raise _Invalid
    for arg in args:
        if not (
            isinstance(arg, dict)
            and isinstance(arg.get("channel"), str)
            and isinstance(arg.get("instId"), str)
        ):
            raise _Invalid
    return request


class OkxSimulator(Simulator):
    """Serves the OKX ``tickers`` channel; see the module docstring."""

    exchange: ClassVar[Exchange] = EXCHANGE
    sample_quote: ClassVar[str] = "USDT"  # OKX lists no USD spot quotes (USD is not USDT)
    data_channel: ClassVar[str] = CHANNEL
    resolution_us: ClassVar[int] = 1000  # ``ts`` is milliseconds
    default_subscribe_timeout_s: ClassVar[float | None] = 30.0

    def __init__(
        self,
        *,
        symbols: Sequence[str] = ("BTC-USDT", "ETH-USDT"),
        idle_timeout_s: float | None = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(symbols=symbols, **options)
        self.idle_timeout_s = idle_timeout_s
        self.idle_cuts = 0
        self._conn_ids = random.Random(options.get("seed", 0))

    def base_asset(self, native: str) -> str:
        return native.partition("-")[0]

    # --- serving: the base's server plus the idle cut ---------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled, closing idle connections; ``started(port)`` once accepting."""
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(partial(super().serve, host, port, tls=tls))
            if self.idle_timeout_s is not None:
                nursery.start_soon(self._run_idle_cuts, self.idle_timeout_s)
            task_status.started(bound)

    async def _run_idle_cuts(self, idle_s: float) -> None:
        """Close (4004) every client that got no data and sent no ``ping`` for ``idle_s``."""
        while True:
            await trio.sleep(min(1.0, idle_s / 4))
            now = trio.current_time()
            idle = [
                client
                for client in self.clients
                if not client.state.get("cut")
                and now - client.state.get("active_at", now) >= idle_s
            ]
            async with trio.open_nursery() as nursery:
                for client in idle:
                    client.state["cut"] = True
                    self.idle_cuts += 1
                    nursery.start_soon(client.ws.aclose, IDLE_CLOSE_CODE, IDLE_CLOSE_REASON)

    def on_connect(self, client: Client) -> None:
        client.state["conn_id"] = f"{self._conn_ids.getrandbits(32):08x}"
        client.state["active_at"] = trio.current_time()

    def _push_data(self, client: Client, frame: bytes) -> None:
        client.state["active_at"] = trio.current_time()
        super()._push_data(client, frame)

    # --- requests ---------------------------------------------------------------------------

    def handle(self, client: Client, message: str | bytes) -> None:
        """Apply one client message: ``ping``, or a subscribe/unsubscribe with per-arg replies."""
        if message == PING:
            client.state["active_at"] = trio.current_time()
            client.push("pong")
            return
        try:
            request = _checked(message)
        except _Invalid:
            text = message if isinstance(message, str) else message.decode(errors="replace")
            client.push(self._event(client, None, event="error", code="60012",
                                    msg=f"Invalid request: {text}"))  # fmt: skip
            return
        if request["op"] == "subscribe":
            self.subscribe_requests.append(request)
        known = [arg for arg in request["args"] if self._check_arg(client, request, arg)]
        if request["op"] == "subscribe":
            self._subscribe_args(client, request, known)
        else:
            self._unsubscribe_args(client, request, known)

    def _check_arg(self, client: Client, request: dict[str, Any], arg: dict[str, Any]) -> bool:
        """True for a ``tickers`` arg of a known instId on this path; else push its 60018."""
        channel, inst_id = arg["channel"], arg["instId"]
        if channel == CHANNEL and inst_id in self.markets and _path(client) == PATH:
            return True
        text = (
            f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use the "
            "correct URL, channel and parameters referring to API document."
        )
        client.push(self._event(client, request, event="error", code="60018", msg=text))
        return False

    def _subscribe_args(
        self, client: Client, request: dict[str, Any], args: list[dict[str, Any]]
    ) -> None:
        """Every ack first, then each pair's latest ticker (``snapshot``)."""
        for arg in args:
            self.ack(client, self._event(client, request, event="subscribe", arg=_arg(arg)))
        for arg in args:
            self.subscribe(client, CHANNEL, arg["instId"])

    def _unsubscribe_args(
        self, client: Client, request: dict[str, Any], args: list[dict[str, Any]]
    ) -> None:
        for arg in args:
            self.unsubscribe(client, CHANNEL, arg["instId"])
            client.push(self._event(client, request, event="unsubscribe", arg=_arg(arg)))

    def _event(self, client: Client, request: dict[str, Any] | None, **fields: Any) -> bytes:
        """An event frame in OKX's field order: ``id`` (if the request had one) ... ``connId``."""
        head = {"id": request["id"]} if request is not None and "id" in request else {}
        return _ENCODER.encode(head | fields | {"connId": client.state.get("conn_id", "")})

    # --- frames -----------------------------------------------------------------------------

    def render(self, market: Market, trade: Trade) -> list[tuple[str, bytes]]:
        """The ``tickers`` push, every field of the real capture, in its order and spelling."""
        item = {
            "instType": "SPOT",
            "instId": market.native,
            "last": _price(trade.cents),
            "lastSz": okx_number(trade.size, 8),
            "askPx": _price(trade.ask_cents),
            "askSz": okx_number(1 + trade.size * 7 % 10**8, 8),
            "bidPx": _price(trade.bid_cents),
            "bidSz": okx_number(1 + trade.size * 3 % 10**8, 8),
            "open24h": _price(trade.open_cents),
            "high24h": _price(trade.high_cents),
            "low24h": _price(trade.low_cents),
            "sodUtc0": _price(trade.open_cents),
            "sodUtc8": _price((trade.open_cents + trade.low_cents) // 2),
            "volCcy24h": okx_number(trade.volume * trade.cents // 100, 8),
            "vol24h": okx_number(trade.volume, 8),
            "ts": str(trade.time_us // 1000),
        }
        push = {"arg": {"channel": CHANNEL, "instId": market.native}, "data": [item]}
        return [(CHANNEL, _ENCODER.encode(push))]

    def sent_tick(self, market: Market, trade: Trade) -> SentTick:
        """OKX writes ``last`` without trailing zeros."""
        return SentTick(market.native, _price(trade.cents), trade.time, trade.trade_id)

    def snapshot(self, client: Client, channel: str, market: Market) -> list[bytes]:
        """The latest ticker: the last trade again, or a first one if the pair has none yet."""
        if channel != CHANNEL:
            return []
        if market.last is None:
            self.ticks.append(self.sent_tick(market, market.trade()))
        assert market.last is not None
        client.state["active_at"] = trio.current_time()
        return [self.render(market, market.last)[0][1]]

    def notice(self) -> bytes:
        """The 64008 notice (``send_notice`` adds each connection's own ``connId``)."""
        return _ENCODER.encode({"event": "notice", "code": RECONNECT_NOTICE, "msg": NOTICE_TEXT})

    def send_notice(self) -> bool:
        """Send every client the 64008 notice, as OKX does 30 s before a service upgrade."""
        for client in list(self.clients):
            client.push(self._event(client, None, event="notice", code=RECONNECT_NOTICE,
                                    msg=NOTICE_TEXT))  # fmt: skip
        return True


def _arg(arg: dict[str, Any]) -> dict[str, str]:
    return {"channel": arg["channel"], "instId": arg["instId"]}


def _path(client: Client) -> str:
    return urlsplit(client.path).path
