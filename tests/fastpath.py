"""One frame through an adapter's fast path and its full path, for the adapters' own tests
(``tests/test_fast_path.py`` replays whole corpora the same way)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from chrono.exchanges.base import Adapter
from chrono.exchanges.fast import FastPath, Received, TextRules
from chrono.model import FeedRules, PriceFeed, feed_text


def fast_only(
    make: Callable[[], Adapter], frame: str, received_at: datetime
) -> list[PriceFeed] | None:
    """``frame`` through a new adapter's fast path (``None``: it gave up); a fast feed's text
    must be what the store would write for it."""
    parser = make()
    assert isinstance(parser, FastPath)
    fast = parser.parse_fast([frame.encode()], Received.of(received_at), TextRules(FeedRules()))
    for feed in fast or []:
        assert feed.text == feed_text(msgspec.structs.replace(feed, text=None))
    return fast


def fast_and_full(
    make: Callable[[], Adapter], frame: str, received_at: datetime
) -> tuple[list[PriceFeed] | None, list[PriceFeed]]:
    """``fast_only``, and the full path's feeds of ``frame`` on another new adapter."""
    return fast_only(make, frame, received_at), make().parse(frame, received_at).feeds


def fast_feeds(
    make: Callable[[], Adapter], frame: str, received_at: datetime
) -> list[PriceFeed] | None:
    """``fast_only``; where the fast path takes the frame, the full path makes the same feeds
    (and is not asked otherwise: the frame may be one it refuses)."""
    fast = fast_only(make, frame, received_at)
    if fast is not None:
        assert fast == make().parse(frame, received_at).feeds
    return fast
