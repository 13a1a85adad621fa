"""Flare FTSOv2 feed value provider endpoints, so a data provider can point its client at Chrono.

The shapes are those of Flare's example value provider:

- ``POST /feed-values/{votingRoundId}`` with ``{"feeds": [{"category": 1, "name": "BTC/USD"}]}``
  -> ``{"votingRoundId", "data": [{"feed": {"category", "name"}, "value": <number | null>}]}``
  (used by the FTSO scaling client; each answer is recorded with its round id);
- ``POST /feed-values/`` with the same body -> ``{"data": [...]}`` (the fast updates client).

``value`` is the live consensus price as a JSON number written with its exact decimal digits;
``null`` when the consensus has no quorum, is guarded, or the feed is unknown. Feeds are
answered in the order asked. ``GET /feed-values/{votingRoundId}`` reads back what was answered
for a round and from which consensus (``body``). Enabled by ``[ftso] enabled``; a key is needed
only with ``[ftso] require_key``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from chrono.api.context import MAX_SYMBOLS, ApiContext, json_response
from chrono.api.errors import ApiError, ErrorCode
from chrono.api.schema import (
    AnsweredValue,
    CurrentValues,
    FeedRef,
    FeedValue,
    RoundAnswers,
    RoundValues,
    stored_row,
)
from chrono.consensus import Consensus, to_json
from chrono.errors import StoreError
from chrono.model import (
    is_canonical_symbol,
    optional_decimal_text,
    time_text,
    utc_now,
)
from chrono.store import FtsoAnswer

log = logging.getLogger(__name__)

_number = msgspec.json.Encoder(decimal_format="number")

# Voting round ids are uint32 in the FTSO protocol: a larger one is refused (a 400 to answer,
# never answered to read back) rather than overflowing the store's integer column.
MAX_ROUND_ID = 2**32 - 1
ROUND_RULE = "/feed-values/<int:voting_round_id>"


class FeedId(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    category: Annotated[int, msgspec.Meta(ge=0, le=255)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class FeedValuesRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    feeds: Annotated[list[FeedId], msgspec.Meta(min_length=1, max_length=MAX_SYMBOLS)]


_decode_request = msgspec.json.Decoder(FeedValuesRequest).decode


def register(app: QuartTrio, ctx: ApiContext) -> None:
    if not ctx.ftso.enabled:
        return

    @app.post(ROUND_RULE)
    async def round_values(voting_round_id: int) -> Response:
        if voting_round_id > MAX_ROUND_ID:
            raise ApiError(ErrorCode.VALIDATION_ERROR, f"votingRoundId is at most {MAX_ROUND_ID}",
                           {"votingRoundId": voting_round_id})  # fmt: skip
        feeds = await _feeds()
        found = await _consensus(ctx, feeds)
        await _record(ctx, voting_round_id, feeds, found)
        body = RoundValues(votingRoundId=voting_round_id, data=_data(feeds, found))
        return Response(_number.encode(body), content_type="application/json")

    @app.post("/feed-values/")
    async def current_values() -> Response:
        feeds = await _feeds()
        found = await _consensus(ctx, feeds)
        return Response(_number.encode(CurrentValues(data=_data(feeds, found))),
                        content_type="application/json")  # fmt: skip

    @app.get(ROUND_RULE)
    async def answered(voting_round_id: int) -> Response:
        answers = (
            await ctx.reader.ftso_round(voting_round_id) if voting_round_id <= MAX_ROUND_ID else []
        )
        if not answers:
            raise ApiError(ErrorCode.NOT_FOUND, f"round {voting_round_id} was not answered",
                           {"votingRoundId": voting_round_id})  # fmt: skip
        data = [
            AnsweredValue(
                feed=FeedRef(category=a.category, name=a.name),
                value=optional_decimal_text(a.value),
                answered_at=time_text(a.answered_at),
                consensus=None if a.body is None else stored_row(a.body),
            )
            for a in answers
        ]
        return json_response(RoundAnswers(votingRoundId=voting_round_id, data=data))


async def _feeds() -> list[FeedId]:
    raw = await request.get_data(as_text=False)
    try:
        return _decode_request(raw).feeds
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"bad body: {exc}") from None


async def _consensus(ctx: ApiContext, feeds: list[FeedId]) -> dict[str, Consensus]:
    names = list(dict.fromkeys(f.name for f in feeds if is_canonical_symbol(f.name)))
    return {c.symbol: c for c in await ctx.aggregator.live(names)} if names else {}


def _value(consensus: Consensus | None) -> Decimal | None:
    if consensus is None or consensus.status != "ok":
        return None
    return consensus.price


def _data(feeds: list[FeedId], found: dict[str, Consensus]) -> list[FeedValue]:
    return [
        FeedValue(feed=FeedRef(category=f.category, name=f.name), value=_value(found.get(f.name)))
        for f in feeds
    ]


async def _record(
    ctx: ApiContext, voting_round_id: int, feeds: list[FeedId], found: dict[str, Consensus]
) -> None:
    """Keep what was answered; a store that fails costs the record, never the answer."""
    now = utc_now()
    answers = []
    for f in dict.fromkeys(feeds):
        consensus = found.get(f.name)
        body = None if consensus is None else msgspec.json.encode(to_json(consensus))
        answers.append(FtsoAnswer(voting_round_id=voting_round_id, category=f.category,
                                  name=f.name, value=_value(consensus), answered_at=now,
                                  body=body))  # fmt: skip
    try:
        await ctx.writer.record_ftso_round(answers)
    except StoreError as exc:
        log.warning("ftso round %d not recorded: %s", voting_round_id, exc)
