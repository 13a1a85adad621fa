"""``/stream``: live ``price_update`` messages over a WebSocket.

Auth by ``?key=`` or a first message ``{"action": "auth", "key": ...}`` (within
``AUTH_TIMEOUT_S``). Clients send ``{"action": "subscribe" | "unsubscribe", "symbols": [...]}``
and get ``{"type": "subscribed", "symbols": [...]}`` back; a bad command is answered with an
``error`` message and the stream stays open. Every message Chrono sends is JSON in a text frame.
A client's message is JSON in a text frame; a binary frame is read as the UTF-8 text it carries
(one that is not UTF-8 is a bad command). Close codes: 1001 when the service stops or the hub
cuts a slow client off, 1008 for a refused key, 1009 for a message over ``[server]
stream_max_message_bytes``, 1011 when the handler fails, 1013 (try again later) for a good key
over a limit: its rate limit (a connection takes a token, as a request does), or ``[limits]
stream_per_key`` / ``stream_total`` open streams (``Limiter.open_stream``). A refused client,
whatever the reason, gets an ``error`` message first and is never counted by the hub.

The handler accepts at once (Quart accepts lazily, which would leave the client hanging in the
handshake: docs/stack.md, trap 2), and leaves by closing with one of those codes instead of
waiting for hypercorn to cancel it. The hub counts the client for exactly the ``with
hub.connected()`` block, from a good key to the end of the stream however it ends: returning,
failing, or cancelled (the client closing, or vanishing, cancels the whole handler).

hypercorn itself enforces the size limit as a message arrives (its
``websocket_max_message_size``, set from the same key, with the fixes of
``chrono.api.ws_protocol``); the check here is the backstop.
"""

from __future__ import annotations

import logging
from typing import Literal

import msgspec
import trio
from quart import g, websocket
from quart_trio import QuartTrio

from chrono.api.auth import ApiKey, Role
from chrono.api.context import ApiContext
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.limits import StreamSlot
from chrono.api.ws_protocol import utf8_length
from chrono.model import is_canonical_symbol
from chrono.pipeline.stream import StreamClient, encode_text

AUTH_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0  # a close frame that cannot go out by then is given up on
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

log = logging.getLogger(__name__)


class Command(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["auth", "subscribe", "unsubscribe"]
    symbols: list[str] = []
    key: str | None = None


class _TooBig(Exception):
    """A client message over the limit: the stream closes with 1009."""


_decode = msgspec.json.Decoder(Command).decode


def _error(code: str, message: str) -> str:
    return encode_text({"type": "error", "error": {"code": code, "message": message}})


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.websocket("/stream")
    async def stream() -> None:
        await websocket.accept()
        try:
            code, reason = await _serve_client(ctx)
        except* _TooBig:
            code, reason = MESSAGE_TOO_BIG, f"message over {ctx.stream_max_message_bytes} bytes"
        except* Exception:  # once accepted, an error must not reach hypercorn (it sends a 400)
            log.exception("stream handler failed")
            code, reason = INTERNAL_ERROR, "internal error"
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await websocket.close(code, reason)


async def _serve_client(ctx: ApiContext) -> tuple[int, str]:
    """Auth, then the stream until the hub ends it; the close code and reason to leave with."""
    try:
        key = await _authenticate(ctx)
    except ApiError as exc:
        if ctx.stopping.is_set():  # it was still to send its key: no 1008 for that
            return GOING_AWAY, "server going away"
        await websocket.send(_error(exc.code.name, exc.message))
        return POLICY_VIOLATION, exc.message[:100]
    g.key_name = key.name
    try:
        slot = _admit(ctx, key)
    except ApiError as exc:
        log.debug("stream refused: %s", exc.message, extra={"data": {"key": key.name}})
        await websocket.send(_error(exc.code.name, exc.message))
        return TRY_AGAIN_LATER, exc.message[:100]
    with slot, ctx.hub.connected() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_commands, ctx, client)
            await _pump(client)
            nursery.cancel_scope.cancel()
    return GOING_AWAY, "server going away"


async def _receive(ctx: ApiContext) -> str | bytes:
    raw: str | bytes | None = await websocket.receive()
    if raw is None:
        return b""  # quart hands an empty binary message on as None
    if utf8_length(raw) > ctx.stream_max_message_bytes:
        raise _TooBig
    return raw


def _admit(ctx: ApiContext, key: ApiKey) -> StreamSlot:
    """A token of the key's rate limit and a stream slot, or ``ApiError`` 429."""
    state = ctx.limiter.take_key(key)
    if state is not None and not state.allowed:
        raise state.error()
    return ctx.limiter.open_stream(key)


async def _authenticate(ctx: ApiContext) -> ApiKey:
    key = websocket.args.get("key")
    if not key:
        raw = await _first_message(ctx)
        command = None if raw is None else _parse(raw)
        if isinstance(command, str):
            raise ApiError(ErrorCode.UNAUTHORIZED, "first message must be an auth action")
        key = command.key if command is not None and command.action == "auth" else None
    return ctx.keys.require(key, {Role.PUBLIC})


async def _first_message(ctx: ApiContext) -> str | bytes | None:
    """The client's first message; None if none came in time, or the service began to stop."""
    first = None
    async with trio.open_nursery() as nursery:

        async def stop_waiting() -> None:
            await ctx.stopping.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_waiting)
        with trio.move_on_after(AUTH_TIMEOUT_S):
            first = await _receive(ctx)
        nursery.cancel_scope.cancel()
    return first


async def _pump(client: StreamClient) -> None:
    """Queue -> socket, until the hub ends the queue (the service stops, or cut off)."""
    async for message in client.messages:
        await websocket.send(message)


async def _read_commands(ctx: ApiContext, client: StreamClient) -> None:
    while True:
        await websocket.send(_answer(client, await _receive(ctx)))


def _parse(raw: str | bytes) -> Command | str:
    """The command, or what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return "bad message: a binary message must carry UTF-8 JSON"
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        return f"bad message: {exc}"


def _answer(client: StreamClient, raw: str | bytes) -> str:
    """Apply one command; the answer lists all the client's symbols (or says what was wrong)."""
    command = _parse(raw)
    if isinstance(command, str):
        return _error("VALIDATION_ERROR", command)
    symbols = [s.upper() for s in command.symbols]
    bad = [s for s in symbols if not is_canonical_symbol(s)]
    if bad:
        return _error("VALIDATION_ERROR", f"not BASE/QUOTE symbols: {bad}")
    if command.action == "subscribe":
        client.symbols.update(symbols)
    elif command.action == "unsubscribe":
        client.symbols.difference_update(symbols)
    return encode_text({"type": "subscribed", "symbols": sorted(client.symbols)})
