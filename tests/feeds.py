"""Feeds built for tests, with prices that exercise digit-for-digit storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chrono.model import PriceFeed

T0 = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)


def make_feed(
    i: int = 0,
    *,
    symbol: str = "BTC/USD",
    price: str = "67234.56",
    source: str = "coinbase",
) -> PriceFeed:
    return PriceFeed(
        symbol=symbol,
        price=Decimal(price),
        timestamp=T0 + timedelta(microseconds=i),
        received_at=T0 + timedelta(microseconds=i, milliseconds=3),
        source=source,
        worker_id=f"{source}-1",
        volume=Decimal("9756.91661100"),
        bid=Decimal("67234.55"),
        ask=Decimal("67234.57000000"),
        metadata={"native_symbol": symbol.replace("/", "-"), "trade_id": i},
    )
