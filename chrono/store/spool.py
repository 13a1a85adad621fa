"""The spool: batches kept on disk while the store is down, replayed oldest first.

Each batch is one file ``<seq>.feeds`` (msgpack of the feeds), written under a temporary name,
fsync'd, renamed into place, and the folder fsync'd: a file under its final name is whole and
survives a crash or a power cut; a ``.tmp`` left by a crash is removed at ``open()``. Sequence
numbers order the files, across restarts too.

The total size is bounded by ``max_bytes``: ``append`` waits while the spool is full, so the
writer stops taking batches and backpressure reaches the collectors; nothing is dropped. A
warning is logged as the spool passes each of ``ALERT_LEVELS``. A file that cannot be decoded
(disk corruption) is moved to ``corrupt/`` for a person to look at, counted, and skipped.
File I/O runs in worker threads.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from chrono.errors import SpoolError
from chrono.model import PriceFeed

log = logging.getLogger(__name__)

T = TypeVar("T")

ALERT_LEVELS = (0.5, 0.8, 0.95)  # share of max_bytes at which a warning is logged
SUFFIX = ".feeds"
READ_AHEAD_FILES = 32  # files read per thread hop while replaying (a hop costs ~130 us)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[PriceFeed])


class SpoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    folder: str
    batches: int
    bytes: int
    max_bytes: int
    fill: float  # bytes / max_bytes
    batches_spooled: int
    feeds_spooled: int
    corrupt: int  # files set aside in corrupt/
    full_waits: int


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    path: Path
    size: int


class Spool:
    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._segments: deque[Segment] = deque()
        self._next_seq = 1
        self._opened = False
        self._space = trio.Event()
        self.bytes = 0
        self.alert_level = 0.0
        self.batches_spooled = 0
        self.feeds_spooled = 0
        self.corrupt = 0
        self.full_waits = 0

    async def open(self) -> None:
        """Find what an earlier run left; idempotent."""
        if self._opened:
            return
        segments = await self._io(_scan, self.folder)
        self._segments = deque(segments)
        self.bytes = sum(s.size for s in segments)
        self._next_seq = segments[-1].seq + 1 if segments else 1
        self._opened = True
        if segments:
            log.warning(
                "spool holds %d batches from an earlier run; replaying them",
                len(segments),
                extra={"data": {"folder": str(self.folder), "bytes": self.bytes}},
            )

    def is_empty(self) -> bool:
        return not self._segments

    def __len__(self) -> int:
        return len(self._segments)

    async def append(self, feeds: Sequence[PriceFeed]) -> None:
        """Store ``feeds`` durably as the newest batch; waits while the spool is full."""
        data = _encoder.encode(list(feeds))  # as PriceFeed objects, the spool's format
        while self._segments and self.bytes + len(data) > self.max_bytes:
            self.full_waits += 1
            log.error(
                "spool full: waiting for the store to take batches; collection is paused",
                extra={"data": {"bytes": self.bytes, "max_bytes": self.max_bytes}},
            )
            await self._space.wait()
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        path = self.folder / f"{seq:012d}{SUFFIX}"
        await self._io(_write_durably, path, data)
        self._segments.append(Segment(seq, path, len(data)))
        self.bytes += len(data)
        self.batches_spooled += 1
        self.feeds_spooled += len(feeds)
        self._alert()

    async def oldest(self, max_feeds: int) -> tuple[list[PriceFeed], int]:
        """The oldest batches joined, up to ``max_feeds`` feeds (but at least one batch), and
        how many batches that is; they stay in place until ``pop(count)``. Empty: ``[], 0``."""
        feeds: list[PriceFeed] = []
        taken = 0
        while taken < len(self._segments):
            ahead = list(self._segments)[taken : taken + READ_AHEAD_FILES]
            contents = await self._io(_read_all, [s.path for s in ahead])  # one thread hop
            for segment, data in zip(ahead, contents, strict=True):
                try:
                    batch = _decoder.decode(data)
                except msgspec.DecodeError as exc:
                    await self._set_aside(segment, exc)
                    break  # the segments moved: read again from where this one was
                if feeds and len(feeds) + len(batch) > max_feeds:
                    return feeds, taken
                feeds.extend(batch)
                taken += 1
        return feeds, taken

    async def pop(self, count: int = 1) -> None:
        """Remove the ``count`` oldest batches: the store has them."""
        done = list(self._segments)[:count]
        await self._io(_unlink_all, [s.path for s in done])  # one thread hop
        for segment in done:
            self._forget(segment)
        if not self._segments:
            log.info("spool empty: every spooled batch is in the store")

    def _forget(self, segment: Segment) -> None:
        self._segments.remove(segment)
        self.bytes -= segment.size
        self.alert_level = self._level()
        self._space.set()
        self._space = trio.Event()

    async def _set_aside(self, segment: Segment, exc: Exception) -> None:
        self.corrupt += 1
        corrupt = self.folder / "corrupt"
        log.error(
            "spool file %s cannot be read (%s): moved to %s",
            segment.path.name,
            exc,
            corrupt,
        )

        def move() -> None:
            corrupt.mkdir(exist_ok=True)
            segment.path.rename(corrupt / segment.path.name)

        await self._io(move)
        self._forget(segment)

    def _level(self) -> float:
        """The highest of ``ALERT_LEVELS`` the spool has reached (0 below them all)."""
        return max((lv for lv in ALERT_LEVELS if self.fill() >= lv), default=0.0)

    def fill(self) -> float:
        return self.bytes / self.max_bytes

    def _alert(self) -> None:
        reached = self._level()
        if reached > self.alert_level:
            log.warning(
                "spool %d%% full: the store has not taken batches for a while",
                round(reached * 100),
                extra={"data": {"bytes": self.bytes, "max_bytes": self.max_bytes}},
            )
        self.alert_level = max(self.alert_level, reached)

    def statistics(self) -> SpoolStatistics:
        return SpoolStatistics(
            folder=str(self.folder),
            batches=len(self._segments),
            bytes=self.bytes,
            max_bytes=self.max_bytes,
            fill=round(self.fill(), 4),
            batches_spooled=self.batches_spooled,
            feeds_spooled=self.feeds_spooled,
            corrupt=self.corrupt,
            full_waits=self.full_waits,
        )

    @staticmethod
    async def _io(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            raise SpoolError(f"spool: {exc}") from exc


def _scan(folder: Path) -> list[Segment]:
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f"*{SUFFIX}.tmp"):
        leftover.unlink()  # a write a crash interrupted: its batch was never acknowledged
    found = []
    for path in folder.glob(f"*{SUFFIX}"):
        stem = path.name.removesuffix(SUFFIX)
        if stem.isdigit():
            found.append(Segment(int(stem), path, path.stat().st_size))
    return sorted(found, key=lambda s: s.seq)


def _read_all(paths: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.rename(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: give the space back
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable
    finally:
        os.close(fd)
