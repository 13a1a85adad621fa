"""The REST section of docs/architecture.md is what the service answers: its documented ingest
request is accepted as it stands, and every documented answer has exactly the keys (nested too)
of the real answer to the same kind of request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio

from tests.dataapi import INTERNAL, feed, running_api

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def documented() -> list[Any]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### REST API") : text.index("## 6. ")]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively (a list by its first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def test_the_examples_are_the_ones_expected() -> None:
    kinds = [next(iter(example)) for example in documented()]
    assert kinds == ["worker_id", "status", "data", "data", "votingRoundId"]


async def test_the_documented_shapes_are_the_answers(tmp_path: Path) -> None:
    ingest, ingested, latest, consensus, ftso = documented()
    with trio.fail_after(30):
        async with running_api(tmp_path, ftso={"enabled": True}) as api:
            for source in ("coinbase", "kraken", "bitstamp"):
                await api.push([feed(source, "100", age_s=1)])
            await api.push([feed("binance", "100.1", age_s=1, quote="USDT")])
            reply = await api.http.post("/internal/ingest", json=ingest, headers=INTERNAL)
            bad = dict(ingest, feeds=[*ingest["feeds"], {**ingest["feeds"][0], "price": "-1"}])
            partial = await api.http.post("/internal/ingest", json=bad, headers=INTERNAL)
            got_latest = await api.get("/prices/latest", symbols="BTC/USD,DOGE/USD")
            got_consensus = await api.get("/aggregates/consensus", symbols="BTC/USD")
            got_ftso = await api.http.post(
                "/feed-values/123", json={"feeds": [{"category": 1, "name": "BTC/USD"}]}
            )
    assert reply.status_code == 200, reply.text
    assert shape(partial.json()) == shape(ingested)
    assert partial.json()["status"] == "partial"
    assert shape(got_latest) == shape(latest)
    assert shape(got_consensus) == shape(consensus)
    binance = next(r for r in got_consensus["data"][0]["inputs"] if r["source"] == "binance")
    assert set(binance["conversion"]) == set(consensus["data"][0]["inputs"][0]["conversion"])
    assert shape(got_ftso.json()) == shape(ftso)
