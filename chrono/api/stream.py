"""``/stream``: live ``price_update`` messages over a WebSocket.

Auth by ``?key=`` or a first message ``{"action": "auth", "key": ...}``. Clients send
``{"action": "subscribe" | "unsubscribe", "symbols": [...]}`` and get ``{"type": "subscribed",
"symbols": [...]}`` back. The handler accepts at once (Quart accepts lazily, which would leave
the client hanging in the handshake) and leaves with close code 1001 when the service stops or
the hub cuts the client off, instead of waiting for hypercorn to cancel it.
"""

from __future__ import annotations

import logging
from typing import Literal

import msgspec
import trio
from quart import websocket
from quart_trio import QuartTrio

from chrono.api.app import ApiContext
from chrono.api.auth import Role
from chrono.api.errors import ApiError
from chrono.model import is_canonical_symbol
from chrono.pipeline.stream import StreamClient

AUTH_TIMEOUT_S = 10.0
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

log = logging.getLogger(__name__)


class Command(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["auth", "subscribe", "unsubscribe"]
    symbols: list[str] = []
    key: str | None = None


_decode = msgspec.json.Decoder(Command).decode
_encode = msgspec.json.Encoder().encode


def _error(code: str, message: str) -> bytes:
    return _encode({"type": "error", "error": {"code": code, "message": message}})


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.websocket("/stream")
    async def stream() -> None:
        await websocket.accept()
        try:
            await _serve_client(ctx)
        except Exception:  # once accepted, an error must not reach hypercorn (it sends a 400)
            log.exception("stream handler failed")
            with trio.move_on_after(1):
                await websocket.close(INTERNAL_ERROR, "internal error")


async def _serve_client(ctx: ApiContext) -> None:
    try:
        await _authenticate(ctx)
    except ApiError as exc:
        await websocket.send(_error(exc.code, exc.message))
        await websocket.close(POLICY_VIOLATION, exc.message[:100])
        return
    client = ctx.hub.connect()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, nursery.cancel_scope)
            await _read_commands(client)
            nursery.cancel_scope.cancel()
    finally:
        ctx.hub.disconnect(client)


async def _authenticate(ctx: ApiContext) -> None:
    key = websocket.args.get("key")
    if not key:
        with trio.move_on_after(AUTH_TIMEOUT_S):
            raw = await websocket.receive()
            try:
                command = _decode(raw)
            except msgspec.DecodeError as exc:
                raise ApiError("UNAUTHORIZED", "first message must be an auth action") from exc
            key = command.key if command.action == "auth" else None
    ctx.keys.require(key, {Role.PUBLIC})


async def _pump(client: StreamClient, scope: trio.CancelScope) -> None:
    """Queue -> socket; when the queue ends (shutdown or cut off), close with 1001."""
    async for message in client.messages:
        await websocket.send(message)
    await websocket.close(GOING_AWAY, "server going away")
    scope.cancel()


async def _read_commands(client: StreamClient) -> None:
    while True:
        raw = await websocket.receive()
        try:
            command = _decode(raw)
        except msgspec.DecodeError as exc:
            await websocket.send(_error("VALIDATION_ERROR", f"bad message: {exc}"))
            continue
        await websocket.send(_apply(client, command))


def _apply(client: StreamClient, command: Command) -> bytes:
    """Change the client's symbols; the reply lists them all (or says what was wrong)."""
    symbols = [s.upper() for s in command.symbols]
    bad = [s for s in symbols if not is_canonical_symbol(s)]
    if bad:
        return _error("VALIDATION_ERROR", f"not BASE/QUOTE symbols: {bad}")
    if command.action == "subscribe":
        client.symbols.update(symbols)
    elif command.action == "unsubscribe":
        client.symbols.difference_update(symbols)
    return _encode({"type": "subscribed", "symbols": sorted(client.symbols)})
