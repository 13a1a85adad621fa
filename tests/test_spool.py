"""The spool on a real folder: batches kept whole and in order across a restart, bounded, loud
as it fills, and a damaged file set aside rather than lost in silence."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
import trio

from chrono.errors import SpoolError
from chrono.store.spool import Spool
from tests.feeds import make_feed


def batch(start: int, n: int = 3) -> list:  # type: ignore[type-arg]
    return [make_feed(i) for i in range(start, start + n)]


async def test_batches_come_back_oldest_first_and_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    await spool.open()
    assert spool.is_empty()
    for start in (0, 10, 20):
        await spool.append(batch(start))
    assert len(spool) == 3
    assert await spool.oldest(1) == (batch(0), 1)  # at least one batch, however small the limit
    assert await spool.oldest(6) == (batch(0) + batch(10), 2)
    await spool.pop()

    # A new process: the files are all there is.
    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    await again.open()
    assert len(again) == 2
    assert again.bytes == spool.bytes
    assert await again.oldest(3) == (batch(10), 1)
    await again.pop()
    await again.append(batch(30))  # numbered after what it found
    assert await again.oldest(100) == (batch(20) + batch(30), 2)
    await again.pop(2)
    assert again.is_empty()
    assert await again.oldest(100) == ([], 0)
    assert list((tmp_path / "spool").iterdir()) == []


async def test_a_write_a_crash_interrupted_is_removed_at_open(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, max_bytes=1 << 20)
    await spool.open()
    await spool.append(batch(0))
    (folder / "000000000002.feeds.tmp").write_bytes(b"half a bat")
    again = Spool(folder, max_bytes=1 << 20)
    await again.open()
    assert len(again) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["000000000001.feeds"]


async def test_a_damaged_file_is_set_aside_and_the_next_one_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, max_bytes=1 << 20)
    await spool.open()
    await spool.append(batch(0))
    await spool.append(batch(10))
    await spool.append(batch(20))
    (folder / "000000000002.feeds").write_bytes(b"\xc1 not msgpack")
    assert await spool.oldest(100) == (batch(0) + batch(20), 2)
    assert spool.corrupt == 1
    assert (folder / "corrupt" / "000000000002.feeds").exists()
    assert len(spool) == 2
    assert "cannot be read" in caplog.text


async def test_a_full_spool_waits_for_room_and_warns_as_it_fills(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    size = len(msgspec.msgpack.encode(batch(0)))
    spool = Spool(tmp_path / "spool", max_bytes=size * 4)
    await spool.open()
    for start in range(0, 40, 10):
        await spool.append(batch(start))
    assert spool.fill() == 1.0
    warnings = [r.getMessage() for r in caplog.records if "full" in r.getMessage()]
    assert warnings == ["spool 50% full: the store has not taken batches for a while",
                        "spool 95% full: the store has not taken batches for a while"]  # fmt: skip
    appended = trio.Event()

    async def append_fifth() -> None:
        await spool.append(batch(40))
        appended.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append_fifth)
            await trio.sleep(0.2)
            assert not appended.is_set()  # held: nothing was dropped or written past the bound
            assert spool.full_waits == 1
            await spool.pop()
            await appended.wait()
    assert len(spool) == 4
    assert spool.bytes <= spool.max_bytes


async def test_an_unusable_folder_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(blocker / "spool", max_bytes=1 << 20)  # no folder under a file, even for root
    with pytest.raises(SpoolError, match="spool"):
        await spool.open()
    ok = Spool(tmp_path / "spool", max_bytes=1 << 20)
    await ok.open()
    (tmp_path / "spool").rmdir()
    blocker.rename(tmp_path / "spool")  # the folder went away and a file took its place
    with pytest.raises(SpoolError, match="spool"):
        await ok.append(batch(0))
