"""Every exchange at once: all simulators -> one ``chrono run`` (one collector each) -> SQLite.

Each simulator bursts N frames at the same moment (``send_burst``, pre-generated, ~64 KiB
socket writes); a read-only connection polls until all 8 x N rows are stored. feeds/s = rows /
(last ``ingested_at`` - burst start). Every stored row is checked against the trades sent:
each (source, symbol, price, time) once. Per exchange, the seconds from the burst's start to
its own last stored row tell which collector lagged.

Usage: ``python bench/e2e_all.py [--feeds N] [--json]`` (N per exchange, default 25,000).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from _common import ADMIN_KEY, BenchError, ReadOnlyDb, epoch_s, open_bench_chrono

from chrono.exchanges import EXCHANGES
from chrono.store.sqlite import format_time
from chrono.testing.simulators import SIMULATORS, Simulator

CONFIG_HEAD = """\
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "sqlite:///chrono.db"

[log]
level = "info"

[auth]
admin_keys = ["{admin_key}"]
"""
COLLECTOR = """
[[collectors]]
exchange = "{name}"
symbols = {symbols}
url = "{url}"
silence_timeout_s = 300  # the simulators are silent until the burst
stale_floor_s = 300
"""


def symbols_for(name: str) -> list[str]:
    return SIMULATORS[name].sample_symbols()


def expected_rows(name: str, sim: Simulator) -> list[tuple[str, str, str, str]]:
    symbols = EXCHANGES[name].symbol_map(symbols_for(name))
    rows = []
    for tick in sim.ticks:
        if tick.time is None:
            raise BenchError(f"{name}: its frames carry no time; the check needs one")
        canonical = symbols.to_canonical(tick.native)
        rows.append((EXCHANGES[name].name, str(canonical), tick.price, format_time(tick.time)))
    return rows


async def run(feeds: int, exchanges: list[str]) -> dict[str, Any]:
    sims = {
        name: SIMULATORS[name](symbols=EXCHANGES[name].symbol_map(symbols_for(name)).natives())
        for name in exchanges
    }
    async with trio.open_nursery() as nursery:
        for sim in sims.values():
            sim.set_silent(True)  # only the burst is stored
            await nursery.start(sim.serve)
        with tempfile.TemporaryDirectory(prefix="chrono-bench-") as tmp:
            config = Path(tmp) / "config.toml"
            text = CONFIG_HEAD.format(admin_key=ADMIN_KEY) + "".join(
                COLLECTOR.format(name=name, symbols=json.dumps(symbols_for(name)), url=s.endpoint)
                for name, s in sims.items()
            )
            config.write_text(text)
            async with open_bench_chrono(config) as chrono:
                with trio.fail_after(60):
                    for sim in sims.values():  # every market's data channel, not one ack
                        while not _fully_subscribed(sim):  # noqa: ASYNC110 - no event for it
                            await trio.sleep(0.05)
                db = ReadOnlyDb(Path(tmp) / "chrono.db")
                try:
                    result = await _burst(sims, db, feeds)
                finally:
                    db.close()
                result["exit_code"] = code = await chrono.stop()
                if code != 0:
                    raise BenchError(f"chrono exited {code} after SIGTERM:\n{chrono.tail()}")
        nursery.cancel_scope.cancel()
    return result


def _fully_subscribed(sim: Simulator) -> bool:
    return any(
        all((sim.data_channel, native) in client.topics for native in sim.markets)
        for client in sim.clients
    )


async def _burst(sims: dict[str, Simulator], db: ReadOnlyDb, feeds: int) -> dict[str, Any]:
    total = feeds * len(sims)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for sim in sims.values():
            nursery.start_soon(sim.send_burst, feeds)
    start_epoch = min(min(t.time for t in s.ticks if t.time) for s in sims.values()).timestamp()
    try:
        await db.wait_count(total, timeout_s=max(60.0, total / 2000))
    except BenchError as exc:
        counts = await db.query("SELECT source, count(*) FROM price_feeds GROUP BY source")
        raise BenchError(f"{exc}; by source: {dict(counts)}") from None
    wall_s = trio.current_time() - start
    stored = await db.query("SELECT source, symbol, price, timestamp FROM price_feeds")
    expected = [row for name, sim in sims.items() for row in expected_rows(name, sim)]
    once = sorted(stored) == sorted(expected)
    if not once:
        raise BenchError("the stored rows are not the bursts' trades, each once")
    [(last_commit,)] = await db.query("SELECT max(ingested_at) FROM price_feeds")
    per_source = await db.query(
        "SELECT source, count(*), max(ingested_at) FROM price_feeds GROUP BY source"
    )
    elapsed = epoch_s(last_commit) - start_epoch
    return {
        "exchanges": len(sims),
        "feeds_per_exchange": feeds,
        "rows_stored": len(stored),
        "exactly_once": once,
        "burst_to_last_commit_s": elapsed,
        "wall_s": wall_s,
        "feeds_per_s": total / elapsed,
        "per_exchange_last_row_s": {
            source: round(epoch_s(last) - start_epoch, 2) for source, _n, last in per_source
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=25_000, help="frames per exchange")
    parser.add_argument("--exchanges", default=",".join(SIMULATORS), help="comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        result = trio.run(run, args.feeds, args.exchanges.split(","))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"chrono e2e, every exchange at once ({result['exchanges']} simulators -> chrono run "
        f"-> SQLite), {args.feeds:,} frames each, machine: {os.cpu_count()} cores"
    )
    print(
        f"{result['rows_stored']:,} rows in {result['burst_to_last_commit_s']:.2f} s:"
        f" {result['feeds_per_s']:,.0f} feeds/s (exactly once: {result['exactly_once']});"
        f" SIGTERM exit {result['exit_code']}"
    )
    for source, seconds in sorted(result["per_exchange_last_row_s"].items()):
        print(f"  {source:<14} last row at {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
