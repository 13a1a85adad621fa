"""The batcher's three flush triggers and its drain, on trio's autojump clock."""

from __future__ import annotations

import msgspec
import trio
import trio.testing

from chrono.config import BatchConfig
from chrono.feeds import Feeds
from chrono.pipeline.batcher import Batcher
from tests.feeds import make_feed


def start(
    nursery: trio.Nursery, limits: BatchConfig
) -> tuple[trio.MemorySendChannel[Feeds], trio.MemoryReceiveChannel[Feeds], Batcher]:
    """A running batcher: its input's send end, its output's receive end, and itself."""
    feeds_in, feeds_out = trio.open_memory_channel[Feeds](100)
    batches_in, batches_out = trio.open_memory_channel[Feeds](100)
    batcher = Batcher(feeds_out, batches_in, limits)
    nursery.start_soon(batcher.run)
    return feeds_in, batches_out, batcher


async def test_flushes_at_max_feeds(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        send, out, batcher = start(nursery, BatchConfig(max_feeds=100, max_interval_ms=5000))
        await send.send(Feeds.of([make_feed(i) for i in range(250)]))
        first, second = await out.receive(), await out.receive()
        assert [len(first), len(second)] == [100, 100]
        assert trio.current_time() == 0  # by count, not by waiting
        assert [f.metadata["trade_id"] for f in [*first, *second]] == list(range(200))
        await send.aclose()
        rest = await out.receive()
        assert len(rest) == 50
    assert batcher.flushes == {"count": 2, "interval": 0, "bytes": 0, "drain": 1}


async def test_flushes_after_max_interval_from_the_first_feed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        send, out, batcher = start(nursery, BatchConfig(max_feeds=100, max_interval_ms=5000))
        await send.send(Feeds.of([make_feed(0)]))
        await trio.sleep(3)
        await send.send(Feeds.of([make_feed(1)]))
        batch = await out.receive()
        assert trio.current_time() == 5.0  # 5 s after the first feed, not the last
        assert len(batch) == 2
        await trio.sleep(60)  # nothing pending: no empty flushes
        assert batcher.flushes["interval"] == 1
        nursery.cancel_scope.cancel()


async def test_flushes_at_max_bytes(autojump_clock: trio.testing.MockClock) -> None:
    limits = BatchConfig(max_feeds=1000, max_interval_ms=5000, max_bytes=2000)
    async with trio.open_nursery() as nursery:
        send, out, batcher = start(nursery, limits)
        await send.send(Feeds.of([make_feed(i) for i in range(20)]))
        batch = await out.receive()
        sizes = [len(msgspec.json.encode(f)) for f in batch]
        assert sum(sizes) >= 2000 > sum(sizes[:-1])  # flushed by the feed that crossed it
        assert trio.current_time() == 0
        assert batcher.flushes["bytes"] >= 1
        nursery.cancel_scope.cancel()


async def test_drain_flushes_the_rest_and_closes_the_output(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        send, out, _ = start(nursery, BatchConfig())
        async with send:
            await send.send(Feeds.of([make_feed(i) for i in range(7)]))
        batches = [batch async for batch in out]
    assert [len(b) for b in batches] == [7]
    assert trio.current_time() == 0


async def test_the_interval_holds_while_feeds_keep_coming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        send, out, _ = start(nursery, BatchConfig(max_feeds=10_000, max_interval_ms=5000))
        for i in range(80):  # a feed every 100 ms, never enough for the count
            await send.send(Feeds.of([make_feed(i)]))
            await trio.sleep(0.1)
        first = await out.receive()
        assert 49 <= len(first) <= 51  # the first 5 s worth, flushed by the interval
        nursery.cancel_scope.cancel()
