"""``ForwardStore``: the store of an edge Chrono, a central Chrono's ``/internal/ingest``.

The ingest writer treats it as any store, so an edge inherits the writer's durability: while
the central is down (no answer, a refused connection, a timeout, a 5xx) each batch goes to the
spool and is replayed in order once it answers again, so nothing is lost. A 4xx is the central
refusing those feeds (a bad key, a bad feed): ``BatchRefused``, logged and skipped, as the
seed's collectors did. A batch goes out in requests of at most ``MAX_FEEDS`` (the central's
limit); one resent after a failure is stored once, the central ignoring what it already has.

An edge keeps nothing to read: every read is a ``StoreError`` (the API answers 503 and names
the central), except the start's warm-up of the latest prices, which finds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import httpx
import msgspec

from chrono.api.ingest import MAX_FEEDS
from chrono.client import error_message
from chrono.config import ForwardConfig
from chrono.errors import BatchRefused, StoreError
from chrono.model import PriceFeed, time_text, utc_now
from chrono.store.base import Candle, FeedPage, StoreStatistics
from chrono.store.snapshots import FtsoAnswer, Snapshot

_encode = msgspec.json.Encoder(decimal_format="string").encode
_JSON = {"Content-Type": "application/json"}


def _feed(f: PriceFeed) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": f.symbol, "price": f.price, "source": f.source,
        "timestamp": time_text(f.timestamp), "received_at": time_text(f.received_at),
        "worker_id": f.worker_id,
    }  # fmt: skip
    for name in ("volume", "bid", "ask"):
        if (value := getattr(f, name)) is not None:
            body[name] = value
    if f.metadata:
        body["metadata"] = f.metadata
    return body


class ForwardStore:
    kind = "forward"

    def __init__(self, config: ForwardConfig) -> None:
        self.config = config
        self._url = config.url.rstrip("/") + "/internal/ingest"
        self._client: httpx.AsyncClient | None = None
        self.rows_written = self.batches_written = 0
        self.last_write_at: datetime | None = None

    async def open(self) -> None:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.config.key}"}
            self._client = httpx.AsyncClient(headers=headers, timeout=self.config.timeout_s)

    async def write(self, feeds: Sequence[PriceFeed]) -> int:
        await self.open()
        assert self._client is not None
        added = 0
        for start in range(0, len(feeds), MAX_FEEDS):
            body = {
                "worker_id": self.config.worker_id,
                "timestamp": time_text(utc_now()),
                "feeds": [_feed(f) for f in feeds[start : start + MAX_FEEDS]],
            }
            try:
                answer = await self._client.post(self._url, content=_encode(body), headers=_JSON)
            except httpx.HTTPError as exc:
                raise StoreError(f"central {self.config.url}: {type(exc).__name__}") from exc
            if answer.status_code >= 500:
                raise StoreError(f"central {self.config.url} answered {answer.status_code}")
            if answer.status_code >= 400:
                raise BatchRefused(f"central {self.config.url} answered {answer.status_code}: "
                                   f"{error_message(answer)}")  # fmt: skip
            added += int(answer.json().get("ingested", 0))
        self.rows_written += added
        self.batches_written += 1
        self.last_write_at = utc_now()
        return added

    async def latest_by_source(
        self, symbols: Sequence[str], *, since: datetime, until: datetime | None = None
    ) -> list[PriceFeed]:
        return []  # an edge warms nothing up: its collectors' feeds come in fresh

    async def write_snapshots(self, snapshots: Sequence[Snapshot]) -> int:
        return 0  # the central takes its own

    async def schema_version(self) -> int:
        return 0

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            kind=self.kind, url=self.config.url, rows_written=self.rows_written,
            batches_written=self.batches_written, snapshots_written=0, ftso_answers_written=0,
            last_write_at=self.last_write_at,
        )  # fmt: skip

    def _nothing(self) -> NoReturn:
        raise StoreError(f"an edge Chrono keeps no store: read the central, {self.config.url}")

    async def latest(self, symbols: Sequence[str], *, source: str | None = None) -> list[PriceFeed]:
        self._nothing()

    async def feeds_between(self, *args: Any, **kwargs: Any) -> list[PriceFeed]:
        self._nothing()

    async def feeds_page(self, *args: Any, **kwargs: Any) -> FeedPage:
        self._nothing()

    async def candles(self, *args: Any, **kwargs: Any) -> list[Candle]:
        self._nothing()

    async def snapshots_at(self, symbols: Sequence[str], at: datetime) -> list[Snapshot]:
        self._nothing()

    async def snapshots_between(self, *args: Any, **kwargs: Any) -> list[Snapshot]:
        self._nothing()

    async def ftso_round(self, voting_round_id: int) -> list[FtsoAnswer]:
        self._nothing()

    async def record_ftso_round(self, answers: Sequence[FtsoAnswer]) -> int:
        self._nothing()
