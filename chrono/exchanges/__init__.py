"""Exchange adapters, one module each, looked up by registry name (``[[collectors]] exchange``)."""

from __future__ import annotations

from chrono.exchanges import coinbase
from chrono.exchanges.base import Adapter, Exchange, FrameKind, ParsedFrame

EXCHANGES: dict[str, Exchange] = {
    coinbase.EXCHANGE.name: coinbase.EXCHANGE,
}

__all__ = ["EXCHANGES", "Adapter", "Exchange", "FrameKind", "ParsedFrame"]
