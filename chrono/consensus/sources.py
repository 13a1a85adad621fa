"""Where a consensus gets its inputs: the newest feed of each source, live or as of a time.

``Aggregator`` turns the config into per-symbol ``Params``, knows which quote each feed is
priced in, and finds the stablecoin rates a conversion needs:

- **Quotes.** A feed collected through a quote alias (Binance's ``BTCUSDT`` collected as
  ``BTC/USD``) is priced in USDT. The quote is the feed's ``metadata.quote`` when it carries
  one (ingest may say so), else the alias of the collector that made it (by ``worker_id``), else
  the symbol's own quote.
- **Rates.** A USD symbol with inputs in a stablecoin converts them with the consensus of that
  coin's ``COIN/USD`` from the same sources (median, the section's quorum, no conversion of its
  own); when no collector provides the pair, or it has no quorum, the engine uses par and says
  so in the input row.
- **Live** (``live``): inputs from memory (``LatestPrices``), the store for a symbol memory does
  not hold; the recent-deviation guard applies. **As of T** (``at``): the newest stored feed of
  each source within ``max_age`` before ``T`` (inclusive): the same ``T`` gives the same answer
  and ``inputs_digest`` while the stored feeds are the same. The guard needs the live history,
  so it does not apply to a recomputed past.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import trio

from chrono.config import Config
from chrono.consensus.engine import Consensus, Input, Method, Params, Rate, compute
from chrono.consensus.guard import Guard
from chrono.exchanges import EXCHANGES
from chrono.model import Bounds, PriceFeed, utc_now
from chrono.pipeline.latest import LatestPrices
from chrono.store import StoreReader

log = logging.getLogger(__name__)

_USD = "USD"


class Aggregator:
    def __init__(self, config: Config, latest: LatestPrices, reader: StoreReader) -> None:
        self.settings = config.consensus
        self.stablecoins = frozenset(config.consensus.stablecoins)
        self._latest = latest
        self._reader = reader
        self._aliases = {c.worker_id: _aliases_of(c.exchange, c.protocol, c.quote_aliases)
                         for c in config.collectors}  # fmt: skip
        self._guards: dict[float, Guard] = {}
        self.computed = 0
        self.guarded = 0

    def params(
        self, symbol: str, *, method: Method | None = None, max_age_ms: int | None = None
    ) -> Params:
        """``[consensus]`` with the symbol's overrides and the request's own choices."""
        s = self.settings
        own = s.symbols.get(symbol)
        low, high = (own.min, own.max) if own else (None, None)
        return Params(
            method=method or s.method,
            max_age_ms=s.max_age_ms if max_age_ms is None else max_age_ms,
            min_sources=(own.min_sources if own and own.min_sources else s.min_sources),
            outlier_k=s.outlier_k,
            mad_floor_bps=s.mad_floor_bps,
            max_deviation_bps=_first(own and own.max_deviation_bps, s.max_deviation_bps),
            bounds=None if low is None and high is None else Bounds(low, high),
            depeg_bps=s.depeg_bps,
            half_life_ms=s.half_life_ms,
        )

    def quote_of(self, feed: PriceFeed) -> str:
        quote = feed.metadata.get("quote")
        if isinstance(quote, str) and quote.isalnum():
            return quote.upper()
        own = feed.symbol.partition("/")[2]
        return self._aliases.get(feed.worker_id, {}).get(own, own)

    async def live(
        self, symbols: Sequence[str], *, method: Method | None = None,
        max_age_ms: int | None = None,
    ) -> list[Consensus]:  # fmt: skip
        """The consensus of each symbol now, guarded."""
        now = utc_now()
        feeds = await self._live_feeds(symbols, self._rate_symbols(symbols), now, max_age_ms)
        out = []
        clock = trio.current_time()
        for symbol in symbols:
            params = self.params(symbol, method=method, max_age_ms=max_age_ms)
            consensus = self._compute(symbol, feeds, params, now)
            guard_bps, window_s = self._guard_settings(symbol)
            if guard_bps > 0:
                guard = self._guards.setdefault(window_s, Guard(window_s))
                consensus = guard.check(consensus, guard_bps=guard_bps, now=clock)
                self.guarded += consensus.status == "guarded"
            out.append(consensus)
        return out

    async def at(
        self, symbols: Sequence[str], when: datetime, *, method: Method | None = None,
        max_age_ms: int | None = None,
    ) -> list[Consensus]:  # fmt: skip
        """The consensus of each symbol as of ``when``, from stored feeds only."""
        if not symbols:
            return []
        pairs = self._rate_symbols(symbols)
        widest = max(self.params(s, max_age_ms=max_age_ms).max_age_ms for s in [*symbols, *pairs])
        since = when - timedelta(milliseconds=widest)
        stored = await self._reader.latest_by_source(symbols, since=since, until=when)
        quotes = {self.quote_of(f) for f in stored}  # only the rates some input needs
        needed = [p for p in pairs if p.partition("/")[0] in quotes and p not in symbols]
        if needed:
            stored += await self._reader.latest_by_source(needed, since=since, until=when)
        feeds = _by_symbol(stored)
        return [
            self._compute(s, feeds, self.params(s, method=method, max_age_ms=max_age_ms), when)
            for s in symbols
        ]

    def _compute(
        self,
        symbol: str,
        feeds: Mapping[str, list[PriceFeed]],
        params: Params,
        at: datetime,
    ) -> Consensus:
        self.computed += 1
        inputs = [i for f in feeds.get(symbol, []) if (i := self._input(symbol, f))]
        return compute(
            symbol, inputs, params, at=at, rates=self._rates(symbol, inputs, feeds, at),
            stablecoins=self.stablecoins,
        )  # fmt: skip

    def _input(self, symbol: str, feed: PriceFeed) -> Input | None:
        """The feed as an engine input; None if it is in a quote that cannot be converted (only
        stablecoins into USD can)."""
        quote = self.quote_of(feed)
        own = symbol.partition("/")[2]
        if quote != own and not (quote in self.stablecoins and own in {_USD, *self.stablecoins}):
            log.debug("%s from %s is in %s: not convertible, left out", symbol, feed.source, quote)
            return None
        native = feed.metadata.get("native_symbol")
        return Input(
            source=feed.source,
            price=feed.price,
            timestamp=feed.timestamp,
            quote=quote,
            native_symbol=native if isinstance(native, str) else None,
            volume=feed.volume,
        )

    def _rates(
        self,
        symbol: str,
        inputs: Iterable[Input],
        feeds: Mapping[str, list[PriceFeed]],
        at: datetime,
    ) -> dict[str, Rate]:
        own = symbol.partition("/")[2]
        rates = {}
        for quote in {i.quote for i in inputs} - {own}:
            pair = f"{quote}/{_USD}"
            if own != _USD or pair == symbol or not feeds.get(pair):
                continue  # par: the engine says so in the input's row
            rate = compute(pair, [i for f in feeds[pair] if (i := self._input(pair, f))],
                           self.params(pair, method="median"), at=at,
                           stablecoins=self.stablecoins)  # fmt: skip
            if rate.status == "ok" and rate.price is not None:
                rates[quote] = Rate(quote=quote, rate=rate.price, basis="consensus")
        return rates

    def _rate_symbols(self, symbols: Iterable[str]) -> list[str]:
        """The COIN/USD pairs a USD symbol may need to convert its stablecoin inputs."""
        if not any(s.endswith(f"/{_USD}") for s in symbols):
            return []
        return [f"{coin}/{_USD}" for coin in sorted(self.stablecoins)]

    async def _live_feeds(
        self, symbols: Sequence[str], rate_pairs: Sequence[str], now: datetime,
        max_age_ms: int | None,
    ) -> dict[str, list[PriceFeed]]:  # fmt: skip
        """From memory; a symbol asked for (not a rate pair) that memory lacks, from the store."""
        wanted = dict.fromkeys([*symbols, *rate_pairs])
        feeds = {s: list(self._latest.by_source(s).values()) for s in wanted}
        absent = [s for s in dict.fromkeys(symbols) if not feeds[s]]
        if absent:  # e.g. just after a restart: what the store has within the window
            age = max(self.params(s, max_age_ms=max_age_ms).max_age_ms for s in absent)
            since = now - timedelta(milliseconds=age)
            for feed in await self._reader.latest_by_source(absent, since=since):
                feeds[feed.symbol].append(feed)
        return feeds

    def _guard_settings(self, symbol: str) -> tuple[Decimal, float]:
        s = self.settings
        own = s.symbols.get(symbol)
        guard_bps = _first(own and own.guard_bps, s.guard_bps)
        window_s = own.guard_window_s if own and own.guard_window_s else s.guard_window_s
        return guard_bps, window_s


def _first(override: object, default: Decimal) -> Decimal:
    return override if isinstance(override, Decimal) else default


def _by_symbol(feeds: Iterable[PriceFeed]) -> dict[str, list[PriceFeed]]:
    out: dict[str, list[PriceFeed]] = {}
    for feed in feeds:
        out.setdefault(feed.symbol, []).append(feed)
    return out


def _aliases_of(exchange: str, protocol: str | None, own: dict[str, str] | None) -> dict[str, str]:
    if own is not None:
        return own
    return dict(EXCHANGES[exchange].protocol(protocol).quote_aliases)
