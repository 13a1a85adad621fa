"""``/stream``: the WebSocket side of the stream hub (``chrono.stream``).

Auth by ``?key=`` or a first message ``{"action": "auth", "key": ...}`` (within
``AUTH_TIMEOUT_S``). Then commands ``{"action": "subscribe" | "unsubscribe", "id"?, "symbols":
[...], "channel"?: "prices" | "consensus" | "status", "min_interval_ms"?, "deviation_bps"?,
"heartbeat_ms"?, "since_seq"?, "batch"?}``, each answered with its ``id``: ``subscribed`` (the
channel's symbols now, those this command accepted, the ``unknown`` and ``invalid`` ones, and the
hub's ``seq``), or an ``error`` naming the field. A bad command, or a bad symbol, never closes the
stream. docs/architecture.md ("/stream") has the whole protocol.

Every message Chrono sends is JSON in a text frame; one task (``_pump``) writes them all, in the
order the hub queued them, so a reply always comes before its snapshot and the snapshot before
the updates. A client's message is JSON in a text frame; a binary frame is read as the UTF-8
text it carries (one that is not UTF-8 is a bad command). Close codes: 1001 when the service
stops or the connection's lifetime ends (after ``going_away``), 1008 for a refused key or a
client cut off for being too slow, 1009 for a message over ``[server]
stream_max_message_bytes``, 1011 when the handler fails or no pong came in time
(``chrono.api.ws_protocol``), 1013 (try again later) for a good key over a limit: its rate limit
(a connection takes a token, as a request does), or ``[limits] stream_per_key`` /
``stream_total`` open streams (``Limiter.open_stream``). A refused client, whatever the reason,
gets an ``error`` message first and is never counted by the hub.

``/stream`` is answered in ASGI here, beside the Quart app that serves everything else:
Quart's WebSocket wrapper (two more tasks, a queue, a request context) was about a quarter of
an idle connection's memory (docs/stack.md, trap 2). The handler accepts at once, and leaves by
closing with one of those codes instead of waiting for hypercorn to cancel it. The hub counts
the client for exactly the ``with hub.connected()`` block, from a good key to the end of the
stream however it ends: returning, failing, or the client closing or vanishing (its
``websocket.disconnect`` ends the reader, and with it the handler). The reader takes the next
command only while the client's outbox has room, so a client that sends without reading fills
its own TCP window, not the server's memory.

hypercorn itself enforces the size limit as a message arrives (its
``websocket_max_message_size``, set from the same key, with the fixes of
``chrono.api.ws_protocol``); the check here is the backstop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, NoReturn, cast
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope
from quart_trio import QuartTrio

from chrono.api.auth import ApiKey, Role
from chrono.api.context import ApiContext, msgspec_problem
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.limits import StreamSlot
from chrono.api.protocol import ABORT_EXTENSION, SEND_TEXTS_EXTENSION
from chrono.api.ws_protocol import utf8_length
from chrono.stream import messages
from chrono.stream.client import PRICES, STATUS, StreamClient, Throttle
from chrono.stream.hub import Subscribed

AUTH_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0  # a close frame that cannot go out by then is given up on
MAX_SUBSCRIPTIONS = 1000  # per connection, all channels: what a client holds stays bounded
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

log = logging.getLogger(__name__)


Ms = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]


class Command(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["auth", "subscribe", "unsubscribe"]
    id: str | int | None = None
    symbols: list[Any] = []  # anything: a symbol that is not BASE/QUOTE is listed as invalid
    channel: Literal["prices", "consensus", "status"] = PRICES
    min_interval_ms: Ms = 0
    deviation_bps: Annotated[float, msgspec.Meta(gt=0, le=10_000)] | None = None
    heartbeat_ms: Annotated[int, msgspec.Meta(ge=1, le=86_400_000)] = 60_000
    since_seq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    batch: bool | None = None  # updates bundled in ``price_updates`` frames, from now on
    key: str | None = None


class _TooBig(Exception):
    """A client message over the limit: the stream closes with 1009."""


_decode = msgspec.json.Decoder(Command).decode


class _Bad(Exception):
    """A command that cannot be applied: answered with an ``error`` naming ``field``."""

    def __init__(self, message: str, field: str | None = None, id: Any = None) -> None:
        super().__init__(message)
        self.message, self.field, self.id = message, field, id


class _Gone(Exception):
    """The client disconnected (hypercorn's ``websocket.disconnect``): the handler just ends."""


class _Socket:
    """One ``/stream`` connection's ASGI side. Chrono speaks ASGI to hypercorn directly here:
    Quart's WebSocket wrapper (two more tasks, a queue, a request context and its headers
    copied) was about a quarter of an idle connection's memory (bench/README.md)."""

    __slots__ = ("_receive", "_send", "scope")

    def __init__(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        self.scope, self._receive, self._send = scope, receive, send

    async def accept(self) -> None:
        if (await self._receive())["type"] != "websocket.connect":
            raise _Gone
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def receive(self) -> str | bytes:
        message = await self._receive()
        if message["type"] != "websocket.receive":
            raise _Gone
        text: str | None = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "bytes": None, "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def arg(self, name: str) -> str | None:
        values = parse_qs(self.scope["query_string"].decode("latin-1")).get(name)
        return values[0] if values else None

    def extension(self, name: str) -> Any:
        """One of ``chrono.api.protocol``'s scope extensions (always there under its server)."""
        extensions = cast(dict[str, Any], self.scope.get("extensions") or {})
        return extensions[name]


def register(app: QuartTrio, ctx: ApiContext) -> None:
    quart = app.asgi_app

    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/stream":
            await _session(ctx, _Socket(scope, receive, send))
        else:
            await quart(scope, receive, send)

    app.asgi_app = asgi_app  # type: ignore[method-assign]

    @app.get("/stream")
    async def plain_get() -> NoReturn:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR, "/stream is a WebSocket: open it with an upgrade request"
        )


async def _session(ctx: ApiContext, ws: _Socket) -> None:
    gone = False
    try:
        await ws.accept()
        code, reason = await _serve_client(ctx, ws)
    except* _Gone:
        gone = True
    except* _TooBig:
        code, reason = MESSAGE_TOO_BIG, f"message over {ctx.stream_max_message_bytes} bytes"
    except* Exception:  # once accepted, an error must not reach hypercorn (it sends a 400)
        log.exception("stream handler failed")
        code, reason = INTERNAL_ERROR, "internal error"
    if gone:
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drop_after, ws, CLOSE_TIMEOUT_S)  # a close frame stuck in a full socket
        await ws.close(code, reason)
        nursery.cancel_scope.cancel()


async def _drop_after(ws: _Socket, delay_s: float) -> None:
    """Drop the connection in ``delay_s``: hypercorn's writes cannot be cancelled, so a client
    that stopped reading would hold the handler (and its place in the hub) until TCP gives up."""
    await trio.sleep(delay_s)
    abort: Callable[[], Awaitable[None]] = ws.extension(ABORT_EXTENSION)
    await abort()


async def _serve_client(ctx: ApiContext, ws: _Socket) -> tuple[int, str]:
    """Auth, then the stream until the hub ends it; the close code and reason to leave with."""
    try:
        key = await _authenticate(ctx, ws)
    except ApiError as exc:
        if ctx.stopping.is_set():  # it was still to send its key: no 1008 for that
            return GOING_AWAY, "server going away"
        await ws.send(messages.error(exc.code.name, exc.message))
        return POLICY_VIOLATION, exc.message[:100]
    try:
        slot = _admit(ctx, key)
    except ApiError as exc:
        log.debug("stream refused: %s", exc.message, extra={"data": {"key": key.name}})
        await ws.send(messages.error(exc.code.name, exc.message))
        return TRY_AGAIN_LATER, exc.message[:100]
    with slot, ctx.hub.connected(abort=ws.extension(ABORT_EXTENSION)) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_commands, ctx, ws, client)
            ended = await _pump(ws, client)
            nursery.cancel_scope.cancel()
    return ended


async def _receive(ctx: ApiContext, ws: _Socket) -> str | bytes:
    raw = await ws.receive()
    if utf8_length(raw) > ctx.stream_max_message_bytes:
        raise _TooBig
    return raw


def _admit(ctx: ApiContext, key: ApiKey) -> StreamSlot:
    """A token of the key's rate limit and a stream slot, or ``ApiError`` 429."""
    state = ctx.limiter.take_key(key)
    if state is not None and not state.allowed:
        raise state.error()
    return ctx.limiter.open_stream(key)


async def _authenticate(ctx: ApiContext, ws: _Socket) -> ApiKey:
    key = ws.arg("key")
    if not key:
        raw = await _first_message(ctx, ws)
        command = None if raw is None else _parse(raw)
        if isinstance(command, str):
            raise ApiError(ErrorCode.UNAUTHORIZED, "first message must be an auth action")
        key = command.key if command is not None and command.action == "auth" else None
    return ctx.keys.require(key, {Role.PUBLIC})


async def _first_message(ctx: ApiContext, ws: _Socket) -> str | bytes | None:
    """The client's first message; None if none came in time, or the service began to stop."""
    first = None
    async with trio.open_nursery() as nursery:

        async def stop_waiting() -> None:
            await ctx.stopping.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_waiting)
        with trio.move_on_after(AUTH_TIMEOUT_S):
            first = await _receive(ctx, ws)
        nursery.cancel_scope.cancel()
    return first


async def _pump(ws: _Socket, client: StreamClient) -> tuple[int, str]:
    """Queue -> socket, until the hub ends the stream; the close code and reason. Each batch
    goes out in one write (``chrono.send_texts``), a frame per message."""
    send_texts: Callable[[list[str]], Awaitable[None]] = ws.extension(SEND_TEXTS_EXTENSION)
    while (batch := await client.next_batch()) is not None:
        client.sending_since = trio.current_time()  # the hub cuts a write stuck too long
        try:
            await send_texts(messages.frames(batch, client.batch))
        finally:
            client.sending_since = None
    assert client.ended is not None
    return client.ended


async def _read_commands(ctx: ApiContext, ws: _Socket, client: StreamClient) -> None:
    while True:
        await client.room()  # its answers are not piling up unread
        raw = await _receive(ctx, ws)
        try:
            await _apply(ctx, client, raw)
        except _Bad as bad:
            client.put_control(
                messages.error("VALIDATION_ERROR", bad.message, id=bad.id, field=bad.field)
            )


def _parse(raw: str | bytes) -> Command | str:
    """The command, or what is wrong with it."""
    try:
        return _command(raw)
    except _Bad as bad:
        return bad.message


def _command(raw: str | bytes) -> Command:
    """The command, or ``_Bad`` naming the field at fault (and the command's id, if it has one)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise _Bad("bad message: a binary message must carry UTF-8 JSON") from None
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        name, code, detail = msgspec_problem(str(exc))
        field = name.split("[")[0] or None
        message = f"{field}: {detail}" if field and code == "invalid_value" else detail
        raise _Bad(f"bad message: {message}", field, _id_of(raw)) from None


def _id_of(raw: str) -> Any:
    """A malformed command's ``id``, if it has a usable one, to echo in the error."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


async def _apply(ctx: ApiContext, client: StreamClient, raw: str | bytes) -> None:
    """One command: the hub queues the answer (and the snapshot, or the replay)."""
    command = _command(raw)
    if command.batch is not None:
        client.batch = command.batch
    channel, id = command.channel, command.id
    if command.action == "auth":
        raise _Bad("already authenticated", "action", id)
    if command.action == "unsubscribe":
        ctx.hub.unsubscribe(client, channel, [_upper(s) for s in command.symbols])
        client.put_control(_subscribed(ctx, client, channel, id, Subscribed([], [], [])))
        return
    if command.deviation_bps is not None and channel == STATUS:
        raise _Bad("deviation_bps: the status channel has no price", "deviation_bps", id)
    if len(client.subscriptions) + len(command.symbols) > MAX_SUBSCRIPTIONS:
        raise _Bad(
            f"symbols: at most {MAX_SUBSCRIPTIONS} subscriptions per connection", "symbols", id
        )
    throttle = Throttle(
        command.min_interval_ms / 1000,
        None if command.deviation_bps is None else command.deviation_bps / 10_000,
        command.heartbeat_ms / 1000,
    )

    def reply(result: Subscribed) -> str:
        return _subscribed(ctx, client, channel, id, result)

    await ctx.hub.subscribe(
        client, channel, command.symbols, throttle, since_seq=command.since_seq, reply=reply
    )


def _upper(symbol: Any) -> Any:
    return symbol.upper() if isinstance(symbol, str) else symbol


def _subscribed(
    ctx: ApiContext, client: StreamClient, channel: str, id: Any, result: Subscribed
) -> str:
    answer: dict[str, Any] = {"type": "subscribed"}
    if id is not None:
        answer["id"] = id
    answer.update(
        channel=channel,
        symbols=client.symbols(channel),
        accepted=result.symbols,
        unknown=result.unknown,
        invalid=result.invalid,
        seq=ctx.hub.seq,
    )
    return messages.encode_text(answer)
