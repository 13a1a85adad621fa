"""``chrono demo``: every simulator and Chrono in one process on loopback; it prints the
dashboard's URL with a key made for the run, every collector streams, the API answers with a
consensus, and Ctrl-C drains it, exits 0 and removes its store folder."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import trio

from chrono.testing.simulators import SIMULATORS


async def test_chrono_demo_runs_the_product_on_loopback_and_stops_cleanly_on_ctrl_c() -> None:
    demo = await trio.lowlevel.open_process(
        [sys.executable, "-m", "chrono", "demo", "--port", "0", "--rate", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        printed = b""
        with trio.fail_after(30):
            while b"Ctrl-C stops it." not in printed:
                chunk = await demo.stdout.receive_some(65536)
                assert chunk, printed.decode()
                printed += chunk
        text = printed.decode()
        base, key = re.search(r"dashboard:\s+(http://127\.0\.0\.1:\d+)/\?key=(\S+)", text).groups()
        folder = trio.Path(re.search(r"store in (\S+)", text).group(1))
        assert await folder.is_dir()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            with trio.fail_after(30):
                while True:
                    state = (await http.get("/dashboard/state")).json()
                    if all(c["state"] == "streaming" for c in state["collectors"]):
                        break
                    await trio.sleep(0.2)
                assert sorted(c["exchange"] for c in state["collectors"]) == sorted(SIMULATORS)
                while True:
                    answer = await http.get("/aggregates/consensus", params={"symbols": "BTC/USD"})
                    [row] = answer.json()["data"]
                    if row["status"] == "ok":
                        break
                    await trio.sleep(0.2)
            assert row["num_sources"] >= 2
            assert (await http.get("/")).headers["content-type"].startswith("text/html")
        demo.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await demo.wait() == 0
        assert not await folder.exists()
    finally:
        if demo.returncode is None:
            demo.kill()
