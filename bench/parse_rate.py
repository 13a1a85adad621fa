"""Parse rate per adapter: frames/s through ``Adapter.parse``, no network, one core.

For every registered exchange (and its other wire versions), its simulator renders N data
frames of realistic trades (``Simulator.render``, the same bytes it sends on a socket); the
adapter then parses them all, timed with ``perf_counter`` over the best of ``--repeat`` runs.
Every frame must yield a feed (or a documented skip), so a rate is never bought by an error.

Beside it, per feed, what each path costs all in: the full path is ``parse`` plus what the
collector and the writer then do with its feed (``FeedRules.check``, ``feed_text``); the fast
path (``FastPath.parse_fast``, where the adapter has one) takes reads of ``READ_FRAMES`` frames
and does its checks itself. A read it gives up on is counted (then the full path takes it);
one that gives up on every read is shown as such (Bybit's linear deltas have no fast path).

Usage: ``python bench/parse_rate.py [--frames N] [--repeat R] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from itertools import cycle
from time import perf_counter
from typing import Any, TypeVar

from chrono.errors import InvalidFrame
from chrono.exchanges import EXCHANGES, Adapter, Exchange
from chrono.exchanges.fast import FastPath, Received, TextRules
from chrono.model import FeedRules, feed_text, utc_now
from chrono.testing.simulators import SIMULATORS

T = TypeVar("T")
BASES = ("BTC", "ETH", "SOL")
READ_FRAMES = 500  # about what one 256 KiB socket read holds of such frames


def frames_for(
    name: str, adapter: Adapter, symbols: list[str], count: int
) -> list[tuple[str, bytes]]:
    """``count`` data frames as the simulator of ``name`` renders them, of the kinds this
    adapter turns into feeds (a simulator renders every channel and wire version it serves),
    each with its channel."""
    sim = SIMULATORS[name](symbols=EXCHANGES[name].symbol_map(symbols).natives())
    frames: list[tuple[str, bytes]] = []
    received_at = utc_now()
    for market in cycle(sim.markets.values()):
        for channel, frame in sim.render(market, market.trade()):
            try:
                feeds = adapter.parse(frame, received_at).feeds
            except InvalidFrame:
                continue
            if feeds:
                frames.append((channel, frame))
        if len(frames) >= count:
            return frames[:count]
        if not frames and market.trade_id > 10_000:
            raise SystemExit(f"bench failed: {name}: no rendered frame makes a feed")
    return frames


def best_of(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    """The shortest of ``repeat`` timed runs, and the last run's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = perf_counter()
        result = run()
        best = min(best, perf_counter() - start)
    assert result is not None
    return best, result


def full_path(adapter: Adapter, frames: list[bytes], received_at: datetime) -> int:
    """``parse``, then each feed checked and its store text formatted; the feeds made."""
    rules, feeds = FeedRules(), 0
    for frame in frames:
        for feed in adapter.parse(frame, received_at).feeds:
            rules.check(feed)
            feed_text(feed)
            feeds += 1
    return feeds


def fast_path(adapter: FastPath, reads: list[list[bytes]], received: Received) -> tuple[int, int]:
    """``parse_fast`` read by read: the feeds made, and the reads it gave up on."""
    rules, feeds, gave_up = TextRules(FeedRules()), 0, 0
    for read in reads:
        parsed = adapter.parse_fast(read, received, rules)
        if parsed is None:
            gave_up += 1
        else:
            feeds += len(parsed)
    return feeds, gave_up


def reads_of(rendered: list[tuple[str, bytes]]) -> list[list[bytes]]:
    """Reads of up to ``READ_FRAMES`` frames of one channel each: one connection carries one
    channel's wire shape (a simulator renders, say, Binance's combined and raw streams both)."""
    by_channel: dict[str, list[bytes]] = {}
    for channel, frame in rendered:
        by_channel.setdefault(channel, []).append(frame)
    return [
        frames[i : i + READ_FRAMES]
        for frames in by_channel.values()
        for i in range(0, len(frames), READ_FRAMES)
    ]


def measure(name: str, exchange: Exchange, count: int, repeat: int) -> dict[str, Any]:
    symbols = SIMULATORS[name].sample_symbols(BASES)
    adapter = exchange.adapter(exchange.symbol_map(symbols), "bench")
    rendered = frames_for(name, adapter, symbols, count)
    frames = [frame for _, frame in rendered]
    received_at = utc_now()
    best, feeds = best_of(
        repeat, lambda: sum(len(adapter.parse(frame, received_at).feeds) for frame in frames)
    )
    if feeds == 0:
        raise SystemExit(f"bench failed: {name} parsed {len(frames)} frames into no feeds")
    label = f"{name}/{exchange.version}" if exchange.version else name
    full_s, full_feeds = best_of(repeat, lambda: full_path(adapter, frames, received_at))
    result: dict[str, Any] = {
        "adapter": label,
        "frames": len(frames),
        "feeds": feeds,
        "frames_per_s": len(frames) / best,
        "us_per_frame": best / len(frames) * 1e6,
        "full_us_per_feed": full_s / full_feeds * 1e6,
        "fast_us_per_feed": None,
        "fast_reads_given_up": None,
    }
    if isinstance(adapter, FastPath):
        reads = reads_of(rendered)
        received = Received.of(received_at)
        fast_s, (fast_feeds, gave_up) = best_of(repeat, lambda: fast_path(adapter, reads, received))
        if gave_up < len(reads):
            result["fast_us_per_feed"] = fast_s / fast_feeds * 1e6
        result["fast_reads_given_up"] = gave_up
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for name, entry in EXCHANGES.items():
        for exchange in {id(e): e for e in (entry, *entry.protocols.values())}.values():
            results.append(measure(name, exchange, args.frames, args.repeat))
            print(f"measured {results[-1]['adapter']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"adapter parse rate, {args.frames:,} frames each, best of {args.repeat}, one core")
    print(f"{'':<22} {'parse':>17} {'':>15}  all in, us/feed: full path, fast path")
    for r in results:
        fast = r["fast_us_per_feed"]
        given_up = r["fast_reads_given_up"]
        shown = (
            f"{fast:8.2f} = {fast / r['full_us_per_feed']:.2f}"
            if fast is not None
            else ("  (no fast path)" if given_up is None else "  (gives up on every read)")
        )
        given_up = None if fast is None else given_up
        print(
            f"{r['adapter']:<22} {r['frames_per_s']:>10,.0f} frames/s"
            f"  {r['us_per_frame']:6.2f} us/frame  {r['full_us_per_feed']:8.2f} {shown}"
            + (f"  ({given_up} reads given up)" if given_up else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
