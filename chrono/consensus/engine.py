"""The consensus of several sources' prices for one symbol: a pure computation, no I/O.

All arithmetic is exact ``Decimal`` in ``stats.CONTEXT`` (40 digits, sums exact), never float.

- Conversion. The symbol's quote follows "/" (BTC/USD: USD). An input quoted otherwise is
  converted: value = price x ``rates[quote].rate``. A stablecoin quote without a rate is taken at
  par (rate 1, basis "par") when the symbol's quote is USD or a stablecoin too. Any other quote
  without a rate is the caller's error: ``ValueError``.
- Exclusion, the first reason that applies: ``stale``, at - timestamp > max_age_ms (a timestamp
  after ``at`` has age 0); ``out_of_bounds``, value outside ``bounds`` (inclusive);
  ``depeg``, a stablecoin quote converted at a "consensus" rate with |rate - 1| x 10000 >
  depeg_bps (par cannot be checked: its row says "par"); ``outlier``, among the rest, farther
  from their median than ``outlier_k`` MADs (``stats.outliers``).
- Quorum: fewer than ``min_sources`` distinct included sources gives "insufficient_sources" and
  no price; the statistics still describe what was included (all None if nothing was).
- Price: ``median``; ``volume_weighted``, the weighted median with weight = volume x value (the
  24 h volume in the quote; no volume weighs 0; if every weight is 0, the median, and params say
  ``"fallback": "median"``); ``time_decay``, the weighted median with weight
  2^(-age_ms / half_life_ms), so an input ``half_life_ms`` old counts half.
- Order: rows are sorted by source, then timestamp (then their other fields), and sums are exact,
  so neither the answer nor ``inputs_digest`` depends on the order of ``inputs``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from types import MappingProxyType
from typing import Any, Literal, get_args

import msgspec

from chrono.consensus.stats import BPS, CONTEXT, Stats, outliers, summarize, weighted_median
from chrono.model import Bounds, decimal_text, optional_decimal_text, time_text

Method = Literal["median", "volume_weighted", "time_decay"]
Reason = Literal["stale", "out_of_bounds", "depeg", "outlier"]
Status = Literal["ok", "insufficient_sources", "guarded"]

DEFAULT_STABLECOINS = frozenset({"USDT", "USDC", "DAI", "FDUSD", "TUSD", "USDP", "PYUSD", "BUSD"})
_NO_RATES: Mapping[str, Rate] = MappingProxyType({})
_MS = timedelta(milliseconds=1)
_LN2 = CONTEXT.ln(Decimal(2))


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach a consensus; ``describe()`` goes into the answer and its digest."""

    method: Method = "median"
    max_age_ms: int = 300_000  # older inputs are "stale"
    min_sources: int = 2  # quorum of distinct included sources
    outlier_k: Decimal = Decimal(5)  # x MAD
    mad_floor_bps: Decimal = Decimal(10)  # the MAD is at least this share of the median
    max_deviation_bps: Decimal = Decimal(0)  # also an outlier beyond this from the median; 0 off
    bounds: Bounds | None = None  # inclusive, on the converted value
    depeg_bps: Decimal = Decimal(100)
    half_life_ms: int = 14_000  # time_decay

    def __post_init__(self) -> None:
        if self.method not in get_args(Method):
            raise ValueError(f"method must be one of {get_args(Method)}")
        if self.max_age_ms < 0 or self.min_sources < 1 or self.half_life_ms <= 0:
            raise ValueError("max_age_ms must be >= 0, min_sources >= 1, half_life_ms > 0")
        for name in ("outlier_k", "mad_floor_bps", "max_deviation_bps", "depeg_bps"):
            value: Decimal = getattr(self, name)
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite decimal >= 0")

    def describe(self) -> dict[str, Any]:
        """The method and its parameters as JSON (decimals as strings)."""
        out: dict[str, Any] = {
            "method": self.method,
            "max_age_ms": self.max_age_ms,
            "min_sources": self.min_sources,
            "outlier_k": decimal_text(self.outlier_k),
            "mad_floor_bps": decimal_text(self.mad_floor_bps),
            "max_deviation_bps": decimal_text(self.max_deviation_bps),
            "bounds": None
            if self.bounds is None
            else {
                "low": optional_decimal_text(self.bounds.low),
                "high": optional_decimal_text(self.bounds.high),
            },
            "depeg_bps": decimal_text(self.depeg_bps),
        }
        if self.method == "time_decay":
            out["half_life_ms"] = self.half_life_ms
        return out


class Input(msgspec.Struct, frozen=True, kw_only=True):
    """One source's latest price for the symbol."""

    source: str
    price: Decimal  # as the source quoted it, in ``quote``
    timestamp: datetime  # UTC
    quote: str  # what the price is in: "USD", or "USDT" for Binance's BTCUSDT as BTC/USD
    native_symbol: str | None = None
    volume: Decimal | None = None  # 24 h base volume, if the source reports it

    def __post_init__(self) -> None:
        if not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"{self.source}: price must be finite and positive")
        if self.volume is not None and (not self.volume.is_finite() or self.volume < 0):
            raise ValueError(f"{self.source}: volume must be finite and >= 0")
        _check_utc(self.timestamp, "timestamp")


class Rate(msgspec.Struct, frozen=True, kw_only=True):
    """USD (the symbol's quote) per 1 unit of a stablecoin quote."""

    quote: str
    rate: Decimal
    basis: Literal["consensus", "par"]  # par: no live USDT/USD etc. data, 1 assumed

    def __post_init__(self) -> None:
        if not self.rate.is_finite() or self.rate <= 0:
            raise ValueError(f"{self.quote}: rate must be finite and positive")


class Conversion(msgspec.Struct, frozen=True, kw_only=True):
    from_quote: str
    to_quote: str
    rate: Decimal
    basis: Literal["consensus", "par"]


class InputRow(msgspec.Struct, frozen=True, kw_only=True):
    """One input as the consensus saw it, and what it made of it."""

    source: str
    native_symbol: str | None
    quote: str
    price: Decimal  # as given
    conversion: Conversion | None  # None when quote is the symbol's quote
    value: Decimal  # price x rate: what the consensus uses
    timestamp: datetime
    age_ms: int  # whole milliseconds, never negative
    weight: Decimal | None  # the weight the method gave it (None for median and when excluded)
    included: bool
    reason: Reason | None


class Consensus(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    status: Status
    price: Decimal | None  # None unless status == "ok"
    median: Decimal | None
    mean: Decimal | None
    std_dev: Decimal | None
    mad: Decimal | None
    min: Decimal | None
    max: Decimal | None
    spread_bps: Decimal | None
    conf: Decimal | None
    num_sources: int
    sources: list[str]  # the included sources, sorted
    timestamp: datetime  # the time the consensus is "as of"
    method: Method
    params: dict[str, Any]
    inputs: list[InputRow]  # one per input, sorted by source
    inputs_digest: str  # sha256 hex of what went in


def compute(
    symbol: str,
    inputs: Sequence[Input],
    params: Params,
    *,
    at: datetime,
    rates: Mapping[str, Rate] = _NO_RATES,
    stablecoins: frozenset[str] = DEFAULT_STABLECOINS,
) -> Consensus:
    """The consensus of ``inputs`` for ``symbol`` as of ``at``; ``ValueError`` on a quote that
    cannot be converted (see the module docstring)."""
    _check_utc(at, "at")
    ordered = sorted(inputs, key=_order)
    conversions = _conversions(symbol, ordered, rates, stablecoins)
    with localcontext(CONTEXT):
        values = [_value(item, conversions.get(item.quote)) for item in ordered]
        ages = [max(0, (at - item.timestamp) // _MS) for item in ordered]
        reasons = [
            _first_reason(item, value, conversions.get(item.quote), params, at, stablecoins)
            for item, value in zip(ordered, values, strict=True)
        ]
        survivors = [index for index, reason in enumerate(reasons) if reason is None]
        flags = outliers(
            [values[index] for index in survivors],
            k=params.outlier_k,
            mad_floor_bps=params.mad_floor_bps,
            max_deviation_bps=params.max_deviation_bps,
        )
        for index, flag in zip(survivors, flags, strict=True):
            if flag:
                reasons[index] = "outlier"
        included = [index for index, reason in enumerate(reasons) if reason is None]
        stats = summarize(values[index] for index in included)
        sources = sorted({ordered[index].source for index in included})
        described = params.describe()
        price: Decimal | None = None
        weights: dict[int, Decimal] = {}
        status: Status = "insufficient_sources"
        if stats is not None and len(sources) >= params.min_sources:
            status = "ok"
            price, weights = _price(params, stats, ordered, values, ages, included)
            if params.method != "median" and price is None:
                price = stats.median
                described["fallback"] = "median"
    rows = [
        InputRow(
            source=item.source,
            native_symbol=item.native_symbol,
            quote=item.quote,
            price=item.price,
            conversion=conversions.get(item.quote),
            value=values[index],
            timestamp=item.timestamp,
            age_ms=ages[index],
            weight=weights.get(index),
            included=reasons[index] is None,
            reason=reasons[index],
        )
        for index, item in enumerate(ordered)
    ]
    return Consensus(
        symbol=symbol,
        status=status,
        price=price,
        **_statistics(stats),
        num_sources=len(sources),
        sources=sources,
        timestamp=at,
        method=params.method,
        params=described,
        inputs=rows,
        inputs_digest=_digest(symbol, ordered, params, at, conversions),
    )


def inputs_digest(
    symbol: str,
    inputs: Sequence[Input],
    params: Params,
    at: datetime,
    *,
    rates: Mapping[str, Rate] = _NO_RATES,
    stablecoins: frozenset[str] = DEFAULT_STABLECOINS,
) -> str:
    """The sha256 (hex) of everything ``compute`` reads, the same whatever the input order."""
    ordered = sorted(inputs, key=_order)
    return _digest(symbol, ordered, params, at, _conversions(symbol, ordered, rates, stablecoins))


def to_json(consensus: Consensus) -> dict[str, Any]:
    """The answer as JSON: decimals as plain strings, times with ``Z``, rows as dicts."""
    out: dict[str, Any] = _plain(consensus)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _price(
    params: Params,
    stats: Stats,
    ordered: Sequence[Input],
    values: Sequence[Decimal],
    ages: Sequence[int],
    included: Sequence[int],
) -> tuple[Decimal | None, dict[int, Decimal]]:
    """The method's price over the included inputs (None: every weight is 0) and their weights."""
    if params.method == "median":
        return stats.median, {}
    if params.method == "volume_weighted":
        weights = {i: (ordered[i].volume or Decimal(0)) * values[i] for i in included}
    else:
        weights = {i: (-ages[i] * _LN2 / params.half_life_ms).exp() for i in included}
    return weighted_median((values[i], weights[i]) for i in included), weights


def _first_reason(
    item: Input,
    value: Decimal,
    conversion: Conversion | None,
    params: Params,
    at: datetime,
    stablecoins: frozenset[str],
) -> Reason | None:
    if at - item.timestamp > timedelta(milliseconds=params.max_age_ms):
        return "stale"
    bounds = params.bounds
    if bounds is not None and (
        (bounds.low is not None and value < bounds.low)
        or (bounds.high is not None and value > bounds.high)
    ):
        return "out_of_bounds"
    if (
        conversion is not None
        and conversion.basis == "consensus"
        and item.quote in stablecoins
        and abs(conversion.rate - 1) * BPS > params.depeg_bps
    ):
        return "depeg"
    return None


def _value(item: Input, conversion: Conversion | None) -> Decimal:
    return item.price if conversion is None else item.price * conversion.rate


def _conversions(
    symbol: str, ordered: Sequence[Input], rates: Mapping[str, Rate], stablecoins: frozenset[str]
) -> dict[str, Conversion]:
    """How each foreign quote among ``ordered`` converts into the symbol's quote."""
    base, _, target = symbol.partition("/")
    if not base or not target:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE")
    out: dict[str, Conversion] = {}
    for quote in sorted({item.quote for item in ordered} - {target}):
        rate = rates.get(quote)
        if rate is not None:
            if rate.quote != quote:
                raise ValueError(f"rates[{quote!r}] is a rate for {rate.quote!r}")
            out[quote] = Conversion(from_quote=quote, to_quote=target, rate=rate.rate,
                                    basis=rate.basis)  # fmt: skip
        elif quote in stablecoins and (target == "USD" or target in stablecoins):
            out[quote] = Conversion(from_quote=quote, to_quote=target, rate=Decimal(1),
                                    basis="par")  # fmt: skip
        else:
            raise ValueError(f"no rate to convert {quote} into {target} for {symbol}")
    return out


def _digest(
    symbol: str,
    ordered: Sequence[Input],
    params: Params,
    at: datetime,
    conversions: Mapping[str, Conversion],
) -> str:
    payload = [
        symbol,
        time_text(at),
        params.describe(),
        [
            {"quote": quote, "rate": decimal_text(c.rate), "basis": c.basis}
            for quote, c in sorted(conversions.items())
        ],
        [
            {
                "source": item.source,
                "price": decimal_text(item.price),
                "timestamp": time_text(item.timestamp),
                "quote": item.quote,
                "native_symbol": item.native_symbol,
                "volume": optional_decimal_text(item.volume),
            }
            for item in ordered
        ],
    ]
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()


def _order(item: Input) -> tuple[Any, ...]:
    """Source, then timestamp, then every other field, so equal inputs sort the same."""
    return (item.source, item.timestamp, item.native_symbol is not None, item.native_symbol or "",
            item.quote, item.price, item.volume is not None, item.volume or 0)  # fmt: skip


def _statistics(stats: Stats | None) -> dict[str, Any]:
    if stats is None:
        return dict.fromkeys(Stats.__struct_fields__)
    return msgspec.structs.asdict(stats)


def _check_utc(value: datetime, name: str) -> None:
    if value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be an aware UTC datetime, not {value!r}")
