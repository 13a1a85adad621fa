"""``chrono status --watch``: refreshed in place, coloured and cut to the width on a terminal
(a real pty), plain blocks into a pipe, one JSON document per line with ``--json``; a daemon
that stops answering is shown and polled on; Ctrl-C exits 0."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from chrono.errors import DaemonUnreachable
from chrono.status import StatusReport
from chrono.watch import CLEAR, GREEN, RED, fit, paint, watch
from tests.daemon import coinbase_chrono

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def test_a_line_is_cut_to_the_width_and_its_states_coloured() -> None:
    assert fit("abcdef", 4) == "abc…"
    assert fit("abc", 4) == "abc"
    row = paint("coinbase  streaming  BTC/USD")
    assert f"{GREEN}streaming" in row
    assert ANSI.sub("", row) == "coinbase  streaming  BTC/USD"
    assert paint("ALERT no_data (coinbase): no data for 61 s").startswith(RED)


def test_into_a_pipe_each_refresh_is_a_plain_block_and_an_unreachable_daemon_is_shown() -> None:
    answers: list[object] = [DaemonUnreachable("cannot reach Chrono at http://x: ConnectError")]

    def fetch() -> StatusReport:
        answer = answers.pop(0) if answers else None
        if isinstance(answer, Exception):
            raise answer
        raise DaemonUnreachable("still down")

    out = io.StringIO()
    assert watch(fetch, str, interval_s=0.01, out=out, refreshes=2) == 0
    blocks = out.getvalue().split("--- ")[1:]
    assert len(blocks) == 2
    assert "cannot reach Chrono at http://x: ConnectError (retrying every 0.01 s)" in blocks[0]
    assert "still down" in blocks[1]
    assert "\x1b[" not in out.getvalue()  # no colours into a pipe


async def test_on_a_terminal_it_redraws_in_colour_within_the_width_and_ctrl_c_ends_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(60):
        async with coinbase_chrono(tmp_path, nursery) as (_daemon, config):
            main, child = pty.openpty()
            env = {**os.environ, "COLUMNS": "50", "LINES": "40"}
            watching = await trio.lowlevel.open_process(
                [sys.executable, "-m", "chrono", "status", str(config), "--watch",
                 "--interval", "0.2"],
                stdin=child, stdout=child, stderr=child, env=env,
            )  # fmt: skip
            os.close(child)
            seen = b""
            while (
                seen.count(CLEAR.encode()) < 3 or b"streaming" not in seen.split(CLEAR.encode())[-2]
            ):
                seen += await trio.to_thread.run_sync(os.read, main, 65536)
            watching.send_signal(signal.SIGINT)
            assert await watching.wait() == 0
            os.close(main)
    screen = seen.decode().split(CLEAR)[-2]
    assert f"{GREEN}streaming" in screen
    visible = [ANSI.sub("", line) for line in screen.replace("\r", "").splitlines()]
    assert any(line.startswith("coinbase") for line in visible)
    assert max(len(line) for line in visible) <= 50
    assert any(line.endswith("…") for line in visible)  # the wide table was cut, not wrapped


async def test_with_json_each_refresh_is_one_status_document_per_line(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(60):
        async with coinbase_chrono(tmp_path, nursery) as (_daemon, config):
            watching = await trio.lowlevel.open_process(
                [sys.executable, "-m", "chrono", "status", str(config), "--watch", "--json",
                 "--interval", "0.1"],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            assert watching.stdout is not None
            lines = b""
            while lines.count(b"\n") < 2:
                lines += await watching.stdout.receive_some(1 << 20)
            watching.send_signal(signal.SIGINT)
            assert await watching.wait() == 0
    documents = [json.loads(line) for line in lines.splitlines()[:2]]
    assert all(d["service"]["state"] == "running" for d in documents)
    assert documents[0]["collectors"][0]["worker_id"] == "coinbase"
