"""What a hostile or unlucky operator tries on `chrono run` (the probe behind these rules): each
broken config exits 2 with a message naming its key, before anything starts; a config without
collectors starts, says so, and serves. (The HTTP and /stream probes are test_http_protocol.py
and test_stream_probe.py; flaky exchange links are test_reconnect.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
import trio

from chrono.testing.process import open_chrono
from tests.daemon import free_port

COLLECTOR = '[[collectors]]\nexchange = "coinbase"\nsymbols = ["BTC/USD"]\n'

BROKEN = {
    "backoff_initial_s above backoff_max_s": (
        COLLECTOR + "backoff_initial_s = 120\n",
        "collectors[0].backoff_initial_s: above backoff_max_s",
    ),
    "an empty API key": ('[auth]\npublic_keys = [""]\n' + COLLECTOR, "auth.public_keys[0]"),
    "a non-finite number": (
        "[server]\ngraceful_timeout_s = inf\n" + COLLECTOR,
        "server.graceful_timeout_s: inf is not a finite number",
    ),
    "nan": (COLLECTOR + "open_timeout_s = nan\n", "collectors[0].open_timeout_s: nan"),
    "a symbol twice in one collector": (
        COLLECTOR.replace('["BTC/USD"]', '["BTC/USD", "BTC/USD"]'),
        "collectors[0].symbols[1]: 'BTC/USD' is listed twice",
    ),
    "an infinite bound": (
        COLLECTOR + '[validation.bounds."BTC/USD"]\nmin = "-Infinity"\n',
        "validation.bounds.BTC/USD.min",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_broken_config_exits_2_naming_its_key(tmp_path: Path, case: str) -> None:
    text, message = BROKEN[case]
    config = tmp_path / "config.toml"
    config.write_text(text)
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "chrono", "run", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr.decode()
    assert not (tmp_path / "chrono.db").exists()  # refused before anything started


async def test_a_config_without_collectors_serves_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\nport = {await free_port()}\n")
    with trio.fail_after(30):
        async with open_chrono(config) as daemon:
            async with httpx.AsyncClient(base_url=daemon.url) as http:
                health = (await http.get("/health")).json()
            assert health["services"]["collectors"] == {}
            assert await daemon.stop() == 0
    warnings = [r["message"] for r in daemon.logs if r.get("level") == "warning"]
    assert any("no [[collectors]]" in message for message in warnings)
