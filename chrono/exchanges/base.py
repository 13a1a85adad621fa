"""The adapter seam: what a collector needs to know about one exchange's WebSocket protocol.

An adapter is built per collector from a ``SymbolMap`` (the collector's canonical symbols and
the exchange's spelling of each) and is pure: no I/O, no clock. The collector sends
``subscribe_messages`` after connecting (paced to ``Limits.messages_per_s``), sends
``ping_message`` every ``Exchange.ping_interval_s`` when the exchange wants application-level
pings, and hands every received frame to ``parse``. Exchange knowledge lives only in
``exchanges/<name>.py``; the registry entry (``Exchange``) carries the exchange's limits.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from chrono.model import PriceFeed


class FrameKind(enum.Enum):
    DATA = "data"  # carries ticks: the only kind that counts for freshness
    HEARTBEAT = "heartbeat"  # proves the link, not the data (heartbeats, pongs)
    ACK = "ack"  # the exchange confirmed subscriptions (``ParsedFrame.symbols``)
    ERROR = "error"  # the exchange reported an error (logged and counted, link kept)
    INFO = "info"  # anything else the protocol sends that needs no action
    RECONNECT = "reconnect"  # the exchange will close this link soon: rotate to a new one now


@dataclass(slots=True)
class ParsedFrame:
    """What one frame meant.

    ``skipped`` holds a reason per tick dropped on purpose; ``symbols`` the canonical symbols an
    ACK confirms or an ERROR refers to (empty when the frame does not say).
    """

    kind: FrameKind
    feeds: list[PriceFeed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    message: str = ""
    symbols: list[str] = field(default_factory=list)


class SymbolMap:
    """One collector's symbols: canonical ``BASE/QUOTE`` <-> the exchange's native spelling.

    Built by the collector from its config: each canonical quote is first replaced by its
    quote alias (Binance's ``USD -> USDT``), then spelled the exchange's way
    (``Exchange.native_symbol``). The feeds an adapter builds carry the canonical symbol of the
    config and keep the native one in ``metadata["native_symbol"]``.
    """

    def __init__(self, pairs: Mapping[str, str]) -> None:
        """``pairs`` maps canonical -> native, in the config's order."""
        self._native = dict(pairs)
        self._canonical = {native: canonical for canonical, native in pairs.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._native)

    def __len__(self) -> int:
        return len(self._native)

    @property
    def canonical(self) -> list[str]:
        return list(self._native)

    def native(self, canonical: str) -> str:
        return self._native[canonical]

    def natives(self, canonical: Sequence[str] | None = None) -> list[str]:
        """The native spellings of ``canonical`` (default: every symbol), in order."""
        return [self._native[s] for s in (self._native if canonical is None else canonical)]

    @property
    def by_native(self) -> Mapping[str, str]:
        """Native -> canonical, for a fast path's lookups (``to_canonical`` without a call)."""
        return self._canonical

    def to_canonical(self, native: str) -> str | None:
        """The canonical symbol for a native one, or ``None`` if this collector has no such."""
        return self._canonical.get(native)


class Adapter(Protocol):
    """One exchange connection's protocol, for a fixed set of symbols."""

    def subscribe_messages(self, symbols: Sequence[str], *, resubscribe: bool = False) -> list[str]:
        """Text frames that subscribe ``symbols`` (canonical, a subset of the map's).

        Batched within the exchange's per-message limits (Bybit 10 args, Binance streams per
        request). ``resubscribe``: the symbols are subscribed on this connection already but
        went quiet, so a protocol that refuses a repeated subscribe puts an unsubscribe first;
        without it, the connection is new.
        """
        ...

    def ping_message(self) -> str | None:
        """The application-level ping to send every ``Exchange.ping_interval_s``, if any."""
        ...

    def parse(self, frame: str | bytes, received_at: datetime) -> ParsedFrame:
        """Turn one frame into feeds; raise ``InvalidFrame`` (with a reason) if malformed."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """An exchange's published limits, which Chrono stays within.

    ``connects`` attempts per ``connects_window_s`` is shared by every collector of the
    exchange in the process (the exchange counts per IP); ``messages_per_s`` paces what one
    connection sends; ``max_symbols`` is the subscriptions one connection may hold;
    ``subscribes_per_hour`` caps one connection's subscribe messages, resubscribes included
    (a resubscribe that would pass it is deferred to the symbol's next, later try).
    """

    connects: int = 1
    connects_window_s: float = 1.0
    messages_per_s: float = 5.0
    max_symbols: int = 1000
    subscribes_per_hour: int | None = None  # (re)subscribe messages per connection (OKX 480)


@dataclass(frozen=True, slots=True)
class Exchange:
    """A registry entry: how to build an adapter, where the exchange listens, its limits."""

    name: str  # the registry name and every feed's ``source``
    default_url: str
    adapter: Callable[[SymbolMap, str], Adapter]  # (symbols, worker_id)
    native_symbol: Callable[[str], str]  # canonical (quote aliased) -> the exchange's spelling
    limits: Limits = Limits()
    quote_aliases: Mapping[str, str] = field(default_factory=dict)  # a collector's default
    ping_interval_s: float | None = None  # application-level pings (``Adapter.ping_message``)
    rotate_after_s: float | None = None  # planned replacement before the exchange's own cut
    version: str = ""  # this entry's wire version, when the exchange has several
    protocols: Mapping[str, Exchange] = field(default_factory=dict)  # the other versions

    def protocol(self, version: str | None) -> Exchange:
        """The entry for wire ``version`` (``None``: this one); ``KeyError`` if unknown."""
        if version is None or version == self.version:
            return self
        return self.protocols[version]

    def symbol_map(
        self, symbols: Sequence[str], quote_aliases: Mapping[str, str] | None = None
    ) -> SymbolMap:
        """Canonical symbols -> native ones: quote aliased (default: the exchange's), respelled.

        With Binance's ``{"USD": "USDT"}``, ``BTC/USD`` is subscribed as ``BTCUSDT`` and its
        feeds come back as ``BTC/USD``; ``{}`` keeps quotes strict (``BTC/USDT``).
        """
        aliases = self.quote_aliases if quote_aliases is None else quote_aliases
        pairs = {}
        for symbol in symbols:
            base, _, quote = symbol.partition("/")
            pairs[symbol] = self.native_symbol(f"{base}/{aliases.get(quote, quote)}")
        return SymbolMap(pairs)
