"""Parse rate per adapter: frames/s through ``Adapter.parse``, no network, one core.

For every registered exchange (and its other wire versions), its simulator renders N data
frames of realistic trades (``Simulator.render``, the same bytes it sends on a socket); the
adapter then parses them all, timed with ``perf_counter`` over the best of ``--repeat`` runs.
Every frame must yield a feed (or a documented skip), so a rate is never bought by an error.

Usage: ``python bench/parse_rate.py [--frames N] [--repeat R] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import cycle
from time import perf_counter
from typing import Any

from chrono.errors import InvalidFrame
from chrono.exchanges import EXCHANGES, Adapter, Exchange
from chrono.model import utc_now
from chrono.testing.simulators import SIMULATORS

BASES = ("BTC", "ETH", "SOL")


def frames_for(name: str, adapter: Adapter, symbols: list[str], count: int) -> list[bytes]:
    """``count`` data frames as the simulator of ``name`` renders them, of the kinds this
    adapter turns into feeds (a simulator renders every channel and wire version it serves)."""
    sim = SIMULATORS[name](symbols=EXCHANGES[name].symbol_map(symbols).natives())
    frames: list[bytes] = []
    received_at = utc_now()
    for market in cycle(sim.markets.values()):
        for _channel, frame in sim.render(market, market.trade()):
            try:
                feeds = adapter.parse(frame, received_at).feeds
            except InvalidFrame:
                continue
            if feeds:
                frames.append(frame)
        if len(frames) >= count:
            return frames[:count]
        if not frames and market.trade_id > 10_000:
            raise SystemExit(f"bench failed: {name}: no rendered frame makes a feed")
    return frames


def measure(name: str, exchange: Exchange, count: int, repeat: int) -> dict[str, Any]:
    symbols = SIMULATORS[name].sample_symbols(BASES)
    adapter = exchange.adapter(exchange.symbol_map(symbols), "bench")
    frames = frames_for(name, adapter, symbols, count)
    received_at = utc_now()
    best = float("inf")
    feeds = 0
    for _ in range(repeat):
        start = perf_counter()
        feeds = sum(len(adapter.parse(frame, received_at).feeds) for frame in frames)
        best = min(best, perf_counter() - start)
    if feeds == 0:
        raise SystemExit(f"bench failed: {name} parsed {len(frames)} frames into no feeds")
    label = f"{name}/{exchange.version}" if exchange.version else name
    return {
        "adapter": label,
        "frames": len(frames),
        "feeds": feeds,
        "frames_per_s": len(frames) / best,
        "us_per_frame": best / len(frames) * 1e6,
    }


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
    for r in results:
        print(
            f"{r['adapter']:<22} {r['frames_per_s']:>10,.0f} frames/s"
            f"  {r['us_per_frame']:6.2f} us/frame  ({r['feeds']:,} feeds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
