"""``chrono simulate`` as a real process: the snippet it prints makes a config that collects."""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio
from websockets.trio.client import connect

from chrono.configure import parse_config
from chrono.exchanges import EXCHANGES
from chrono.model import utc_now


async def read_snippet(process: trio.Process, blocks: int) -> str:
    assert process.stdout is not None
    text = ""
    async for chunk in process.stdout:
        text += chunk.decode()
        if text.count("[[collectors]]") == blocks and text.rstrip().endswith('"'):
            return text
    raise AssertionError(f"chrono simulate ended early:\n{text}")


async def test_simulate_prints_collectors_that_deliver() -> None:
    exchanges = ["coinbase", "kraken", "okx"]
    command = [sys.executable, "-m", "chrono", "simulate", "--exchanges", ",".join(exchanges)]
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*command, "--rate", "50"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            snippet = await read_snippet(process, len(exchanges))
            config = parse_config(tomllib.loads(snippet), base_dir=Path.cwd())
            assert [c.exchange for c in config.collectors] == exchanges
            for collector in config.collectors:
                exchange = EXCHANGES[collector.exchange]
                adapter = exchange.adapter(exchange.symbol_map(collector.symbols), "t")
                assert collector.url is not None
                async with connect(collector.url, compression=None) as ws:
                    for message in adapter.subscribe_messages(collector.symbols):
                        await ws.send(message)
                    while not adapter.parse(await ws.recv(), utc_now()).feeds:
                        pass
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--exchanges", "mtgox"], "unknown exchange(s) mtgox"),
        (["--symbols", "BTCUSD"], "not BASE/QUOTE: BTCUSD"),
        (["--rate", "0"], "--rate must be > 0"),
    ],
)
def test_simulate_rejects_bad_options(option: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chrono", "simulate", *option],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
