"""The answers of the REST routes as msgspec Structs: the routes build them, and
``chrono.api.openapi`` generates the document's schemas from the same types, so neither can
drift from the other.

Decimals are plain-notation strings (``decimal_text``) and times RFC 3339 UTC strings with ``Z``
(``time_text``), as on the wire; the FTSO answers' values are ``Decimal``, written as JSON
numbers with their exact digits by the FTSO routes' encoder.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from chrono.api.errors import ErrorCode
from chrono.consensus import Consensus, to_json
from chrono.readiness import Check

DecimalText = Annotated[
    str, msgspec.Meta(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="a decimal in plain notation")
]
TimeText = Annotated[
    str, msgspec.Meta(extra_json_schema={"format": "date-time"}, description="RFC 3339 UTC, Z")
]
LatencyMs = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
# The FTSO protocol wants JSON numbers: a Decimal written as one (``decimal_format="number"``).
# msgspec's schema of a Decimal is a string whatever the Meta says: the marker tells
# ``chrono.api.openapi`` to document a number.
JSON_NUMBER = "x-json-number"
DecimalNumber = Annotated[Decimal, msgspec.Meta(extra_json_schema={JSON_NUMBER: True})]
ErrorCodeName = Annotated[
    str, msgspec.Meta(extra_json_schema={"enum": [c.name for c in ErrorCode]})
]


class Body(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every answer (the fields in declaration order, nothing omitted)."""


# /prices/latest and /prices/range


class RawItem(Body, frozen=True, kw_only=True):
    """One feed as collected."""

    symbol: str
    price: DecimalText
    volume: DecimalText | None
    bid: DecimalText | None
    ask: DecimalText | None
    source: str
    timestamp: TimeText


class LatestItem(RawItem, frozen=True, kw_only=True):
    """A symbol's latest price: one source's, or ``"source": "aggregated"``."""

    sources: list[str]
    num_sources: Annotated[int, msgspec.Meta(ge=1)]
    staleness_ms: Count
    stale: bool


class LatestBody(Body, frozen=True, kw_only=True):
    data: list[LatestItem]
    missing: list[str]
    cached: bool
    latency_ms: LatencyMs


class CandleItem(Body, frozen=True, kw_only=True):
    """An OHLCV bucket aligned to the UTC epoch; ``closed`` is false for the forming one."""

    timestamp: TimeText
    open: DecimalText
    high: DecimalText
    low: DecimalText
    close: DecimalText
    volume: DecimalText | None
    num_feeds: Count
    closed: bool


class RangeRawBody(Body, frozen=True, kw_only=True):
    data: list[RawItem]
    interval: Literal["raw"]
    count: Count
    next: str | None
    latency_ms: LatencyMs


class RangeCandleBody(Body, frozen=True, kw_only=True):
    data: list[CandleItem]
    interval: Literal["1m", "5m", "15m", "1h", "1d"]
    count: Count
    next: str | None
    latency_ms: LatencyMs


# /aggregates/*


class ConversionOut(Body, frozen=True, kw_only=True):
    from_quote: str
    to_quote: str
    rate: DecimalText
    basis: Literal["consensus", "par"]


class InputRowOut(Body, frozen=True, kw_only=True):
    source: str
    native_symbol: str | None
    quote: str
    price: DecimalText
    conversion: ConversionOut | None
    value: DecimalText
    timestamp: TimeText
    age_ms: Count
    weight: DecimalText | None
    included: bool
    reason: Literal["stale", "out_of_bounds", "depeg", "outlier"] | None


class ConsensusRow(Body, frozen=True, kw_only=True):
    """A consensus as computed (``chrono.consensus.engine``), as stored in a snapshot."""

    symbol: str
    status: Literal["ok", "insufficient_sources", "guarded"]
    price: DecimalText | None
    median: DecimalText | None
    mean: DecimalText | None
    std_dev: DecimalText | None
    mad: DecimalText | None
    min: DecimalText | None
    max: DecimalText | None
    spread_bps: DecimalText | None
    conf: DecimalText | None
    num_sources: Count
    sources: list[str]
    timestamp: TimeText
    method: Literal["median", "volume_weighted", "time_decay"]
    params: dict[str, Any]
    inputs: list[InputRowOut]
    inputs_digest: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ConsensusItem(ConsensusRow, frozen=True, kw_only=True):
    """A consensus answered by ``/aggregates/consensus``: from a snapshot, or computed."""

    snapshot: bool


class ConsensusBody(Body, frozen=True, kw_only=True):
    data: list[ConsensusItem]
    latency_ms: LatencyMs


class HistoryBody(Body, frozen=True, kw_only=True):
    data: list[ConsensusRow]
    count: Count
    latency_ms: LatencyMs


def consensus_row(consensus: Consensus) -> ConsensusRow:
    return msgspec.convert(to_json(consensus), ConsensusRow)


def consensus_item(consensus: Consensus, *, snapshot: bool = False) -> ConsensusItem:
    return msgspec.convert({**to_json(consensus), "snapshot": snapshot}, ConsensusItem)


_row_decoder = msgspec.json.Decoder(ConsensusRow)


def stored_row(body: bytes) -> ConsensusRow:
    """A stored consensus body (a snapshot, an FTSO answer's) as the row it was written from."""
    return _row_decoder.decode(body)


def snapshot_item(body: bytes) -> ConsensusItem:
    return msgspec.convert(
        {**msgspec.to_builtins(stored_row(body)), "snapshot": True}, ConsensusItem
    )


# POST /internal/ingest


class IngestError(Body, frozen=True, kw_only=True):
    index: Count
    field: str
    reason: str


class IngestReply(Body, frozen=True, kw_only=True):
    status: Literal["success", "partial"]
    ingested: Count
    duplicates: Count
    failed: Count
    errors: list[IngestError]
    latency_ms: LatencyMs
    message: str


# /feed-values/*


class FeedRef(Body, frozen=True, kw_only=True):
    category: Annotated[int, msgspec.Meta(ge=0, le=255)]
    name: str


class FeedValue(Body, frozen=True, kw_only=True):
    feed: FeedRef
    value: DecimalNumber | None


class RoundValues(Body, frozen=True, kw_only=True):
    votingRoundId: Count
    data: list[FeedValue]


class CurrentValues(Body, frozen=True, kw_only=True):
    data: list[FeedValue]


class AnsweredValue(Body, frozen=True, kw_only=True):
    feed: FeedRef
    value: DecimalText | None
    answered_at: TimeText
    consensus: ConsensusRow | None


class RoundAnswers(Body, frozen=True, kw_only=True):
    votingRoundId: Count
    data: list[AnsweredValue]


# Probes


class LiveBody(Body, frozen=True, kw_only=True):
    status: Literal["alive"]
    timestamp: TimeText


class ReadyBody(Body, frozen=True, kw_only=True):
    status: Literal["ready", "not_ready"]
    timestamp: TimeText
    checks: list[Check]
    failed: list[str]


class HealthServices(Body, frozen=True, kw_only=True):
    store: str
    collectors: dict[str, str]


class HealthBody(Body, frozen=True, kw_only=True):
    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: TimeText
    services: HealthServices
    uptime_seconds: Annotated[float, msgspec.Meta(ge=0)]


# The error envelope (``chrono.api.errors.error_body``)


class ErrorDetail(Body, frozen=True, kw_only=True):
    code: ErrorCodeName
    message: str
    details: dict[str, Any]
    request_id: str


class ErrorBody(Body, frozen=True, kw_only=True):
    error: ErrorDetail
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
