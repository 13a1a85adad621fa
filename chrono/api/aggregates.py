"""``GET /aggregates/consensus`` and ``GET /aggregates/history``: the consensus price, auditable.

Each symbol's answer stands alone: one with too few usable sources says
``insufficient_sources`` with a null price beside the others' prices, never failing the request.
Every answer lists every input with its age and, if it was left out, why
(``chrono.consensus.engine``). ``timestamp=T`` answers as of ``T``: the snapshot written at
``T`` when there is one (``"snapshot": true``, unless the request sets its own ``method`` or
``max_age_ms``), else a recomputation from stored feeds that gives the same answer and
``inputs_digest`` every time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

import msgspec
from quart import Response
from quart_trio import QuartTrio

from chrono.api.context import ApiContext, elapsed_ms, json_response, query, symbol_list
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.prices import MAX_CANDLE_SPAN, UtcTime, in_utc
from chrono.api.schema import (
    ConsensusBody,
    ConsensusItem,
    HistoryBody,
    consensus_item,
    snapshot_item,
    stored_row,
)
from chrono.consensus import Method
from chrono.model import utc_now

MAX_AGE_LIMIT_MS = 7 * 86_400_000  # a window wider than a week is no "latest" price
FUTURE_SLACK = timedelta(seconds=1)  # clocks differ a little; T past this is in the future


class ConsensusQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbols: str
    timestamp: UtcTime | None = None
    max_age_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_AGE_LIMIT_MS)] | None = None
    method: Method | None = None


class HistoryQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbol: str
    start: UtcTime = msgspec.field(name="from")
    end: UtcTime = msgspec.field(name="to")
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000


def register(app: QuartTrio, ctx: ApiContext) -> None:
    @app.get("/aggregates/consensus")
    async def consensus() -> Response:
        started = time.perf_counter()
        asked = query(ConsensusQuery)
        if asked.timestamp is not None:
            asked = msgspec.structs.replace(asked, timestamp=in_utc(asked.timestamp, "timestamp"))
        symbols = symbol_list(asked.symbols)
        if asked.timestamp is None:
            found = await ctx.aggregator.live(
                symbols, method=asked.method, max_age_ms=asked.max_age_ms
            )
            data = [consensus_item(c) for c in found]
        else:
            data = await _as_of(ctx, symbols, asked)
        return json_response(ConsensusBody(data=data, latency_ms=elapsed_ms(started)))

    @app.get("/aggregates/history")
    async def history() -> Response:
        started = time.perf_counter()
        asked = query(HistoryQuery)
        asked = msgspec.structs.replace(
            asked, start=in_utc(asked.start, "from"), end=in_utc(asked.end, "to")
        )
        symbols = symbol_list(asked.symbol)
        if len(symbols) != 1:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "symbol takes one symbol",
                           {"parameter": "symbol"})  # fmt: skip
        if asked.end <= asked.start or asked.end - asked.start > MAX_CANDLE_SPAN:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "to must be after from, within 2 years",
                           {"parameter": "to"})  # fmt: skip
        snapshots = await ctx.reader.snapshots_between(
            symbols[0], asked.start, asked.end, limit=asked.limit
        )
        rows = [stored_row(s.body) for s in snapshots]
        return json_response(HistoryBody(data=rows, count=len(rows),
                                         latency_ms=elapsed_ms(started)))  # fmt: skip


async def _as_of(ctx: ApiContext, symbols: list[str], asked: ConsensusQuery) -> list[ConsensusItem]:
    when = asked.timestamp
    assert when is not None
    if when > utc_now() + FUTURE_SLACK:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "timestamp is in the future",
                       {"parameter": "timestamp"})  # fmt: skip
    stored: dict[str, ConsensusItem] = {}
    if asked.method is None and asked.max_age_ms is None:
        for snapshot in await ctx.reader.snapshots_at(symbols, when):
            stored[snapshot.symbol] = snapshot_item(snapshot.body)
    rest = [s for s in symbols if s not in stored]
    computed = await ctx.aggregator.at(rest, when, method=asked.method,
                                       max_age_ms=asked.max_age_ms)  # fmt: skip
    for c in computed:
        stored[c.symbol] = consensus_item(c)
    return [stored[s] for s in symbols]
