"""``GET /prices/latest``: the newest price of each asked symbol, from memory first."""

from __future__ import annotations

import time
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from chrono.api.app import ApiContext, json_response
from chrono.api.auth import Role, bearer
from chrono.api.errors import ApiError
from chrono.errors import StoreError
from chrono.model import PriceFeed, is_canonical_symbol, to_wire, utc_now

MAX_SYMBOLS = 100


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/prices/latest")
    async def latest() -> Response:
        started = time.perf_counter()
        ctx.keys.require(bearer(request.headers.get("Authorization")), {Role.PUBLIC})
        symbols = _symbols(request.args.get("symbols", ""))
        found = {s: feed for s in symbols if (feed := ctx.latest.get(s)) is not None}
        missing = [s for s in symbols if s not in found]
        cached = not missing
        if missing:
            try:
                found.update((feed.symbol, feed) for feed in await ctx.store.latest(missing))
            except StoreError as exc:
                raise ApiError("DATABASE_ERROR", "the store is unavailable") from exc
        if not found:
            raise ApiError("NOT_FOUND", "no price yet for these symbols", {"symbols": symbols})
        body = {
            "data": [_item(found[s]) for s in symbols if s in found],
            "missing": [s for s in symbols if s not in found],
            "cached": cached,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        return json_response(body)


def _symbols(raw: str) -> list[str]:
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise ApiError("VALIDATION_ERROR", "symbols is required, e.g. ?symbols=BTC/USD,ETH/USD")
    if len(symbols) > MAX_SYMBOLS:
        raise ApiError("VALIDATION_ERROR", f"at most {MAX_SYMBOLS} symbols per request")
    bad = [s for s in symbols if not is_canonical_symbol(s)]
    if bad:
        raise ApiError("VALIDATION_ERROR", "symbols must be BASE/QUOTE", {"invalid": bad})
    return list(dict.fromkeys(symbols))


def _item(feed: PriceFeed) -> dict[str, Any]:
    wire = to_wire(feed)
    return {
        "symbol": wire.symbol,
        "price": wire.price,
        "volume": wire.volume,
        "bid": wire.bid,
        "ask": wire.ask,
        "source": wire.source,
        "timestamp": wire.timestamp,
        "staleness_ms": round((utc_now() - feed.timestamp).total_seconds() * 1000),
    }
