"""The in-process pipeline: fan-out, batcher, writer and store, drained by `Service.stop()`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from chrono.feeds import Feeds
from chrono.service import Service
from tests.conftest import service_config
from tests.feeds import make_feed
from tests.waiting import wait_until


async def test_stop_drains_every_feed_into_the_store_once(tmp_path: Path) -> None:
    config = service_config(tmp_path, batch={"max_feeds": 100, "max_interval_ms": 60_000})
    service = Service(config)
    feeds = [make_feed(i) for i in range(250)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            async with service.intake() as intake:
                await intake.send(Feeds.of(feeds[:150]))
                await intake.send(Feeds.of(feeds[100:]))  # 50 repeats: dropped by the fan-out
                await intake.send(Feeds.of(feeds[:10]))  # 10 more
            await wait_until(lambda: service.fanout.feeds_in == 310)
            # 250 distinct: two full batches are written, 50 wait for the 60 s interval ...
            await wait_until(lambda: service.writer.feeds_written == 200)
            service.stop()  # ... and the drain writes them now
    assert service.fanout.duplicates == 60
    assert service.writer.feeds_written == 250
    assert service.batcher.flushes["drain"] == 1
    with sqlite3.connect(tmp_path / "chrono.db") as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT timestamp) FROM price_feeds").fetchone()
    assert rows == (250, 250)


async def test_a_crashed_stage_is_restarted_and_the_pipeline_goes_on(tmp_path: Path) -> None:
    service = Service(service_config(tmp_path, supervisor={"backoff_initial_s": 0.01}))
    original = service.latest.update
    calls = 0

    def flaky_update(feeds: list) -> None:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug in a stage")
        original(feeds)

    service.latest.update = flaky_update  # type: ignore[method-assign]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            async with service.intake() as intake:
                for i in range(5):
                    await intake.send(Feeds.of([make_feed(i)]))
                    await wait_until(lambda i=i: calls == i + 1)  # one list per pass
            service.stop()
    fanout = service.children["fanout"]
    assert fanout.restarts == 1
    assert fanout.last_error == "RuntimeError: a bug in a stage"
    # The feed list in hand when it crashed is gone with the crash; every other one is stored.
    assert service.writer.feeds_written == 4
