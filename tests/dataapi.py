"""A running service for the data API tests, and feeds with chosen sources, prices and times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from chrono.feeds import Feeds
from chrono.model import PriceFeed, utc_now
from chrono.service import Service
from tests.conftest import ADMIN_KEY, INTERNAL_KEY, PUBLIC_KEY, service_config
from tests.waiting import wait_until

PUBLIC = {"Authorization": f"Bearer {PUBLIC_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
INTERNAL = {"Authorization": f"Bearer {INTERNAL_KEY}"}


@dataclass
class Api:
    service: Service
    http: httpx.AsyncClient

    async def push(self, feeds: list[PriceFeed], *, stored: bool = True) -> None:
        """Through the real intake; then wait until the fan-out saw them (and the store has
        them, when ``stored``)."""
        seen = self.service.fanout.feeds_in + len(feeds)
        written = self.service.writer.feeds_written + len(feeds)
        async with self.service.intake() as intake:
            await intake.send(Feeds.of(feeds))
        await wait_until(lambda: self.service.fanout.feeds_in >= seen)
        if stored:
            await wait_until(lambda: self.service.writer.feeds_written >= written)

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params, headers=PUBLIC)
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def running_api(tmp_path: Path, **sections: Any) -> AsyncIterator[Api]:
    """A whole service (no collectors unless given) with a short batch interval."""
    sections.setdefault("batch", {"max_interval_ms": 50})
    service = Service(service_config(tmp_path, **sections))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(service.run)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield Api(service, http)
        service.stop()


def feed(
    source: str,
    price: str,
    *,
    symbol: str = "BTC/USD",
    at: datetime | None = None,
    age_s: float = 0.0,
    volume: str | None = None,
    worker_id: str | None = None,
    **metadata: Any,
) -> PriceFeed:
    """A feed from ``source``; at ``at``, or ``age_s`` before now."""
    when = at if at is not None else utc_now() - timedelta(seconds=age_s)
    return PriceFeed(
        symbol=symbol,
        price=Decimal(price),
        timestamp=when,
        received_at=when,
        source=source,
        worker_id=worker_id or source,
        volume=None if volume is None else Decimal(volume),
        metadata={"native_symbol": symbol.replace("/", ""), **metadata},
    )
