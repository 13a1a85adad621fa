"""systemd: the notify protocol against a real datagram listener, ``chrono run`` under a notify
socket (READY, STATUS, WATCHDOG, STOPPING), a watchdog that stops pinging when the pipeline does
not move, and the unit file through ``systemd-analyze verify`` and ``security``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from chrono.systemd import Notifier
from chrono.testing.process import open_chrono
from chrono.testing.simulators.coinbase import CoinbaseSimulator
from tests.daemon import write_config

UNIT = Path(__file__).parent.parent / "systemd" / "chrono.service"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket where systemd's would be: what Chrono sends arrives here."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    yield sock, path
    sock.close()


async def datagrams(sock: socket.socket, prefix: str, seen: list[str], timeout_s: float) -> str:
    """Read datagrams into ``seen`` until a new one carries a line starting with ``prefix``."""
    sock.setblocking(False)
    with trio.fail_after(timeout_s):
        while True:
            await trio.lowlevel.wait_readable(sock)
            seen.append(sock.recv(4096).decode())
            if any(line.startswith(prefix) for line in seen[-1].split("\n")):
                return seen[-1]


async def test_a_notify_is_one_datagram_of_lines(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready("running: 0 feeds/s")
    notifier.status("two\nlines")
    assert sock.recv(4096).decode().split("\n") == [
        "READY=1", "STATUS=running: 0 feeds/s", f"MAINPID={os.getpid()}"]  # fmt: skip
    assert sock.recv(4096) == b"STATUS=two lines"  # one line each: a newline would start a key
    notifier.close()


async def test_an_abstract_socket_is_reached_too() -> None:
    name = f"chrono-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.stopping()
        assert sock.recv(4096).startswith(b"STOPPING=1\n")
        notifier.close()


async def test_without_a_socket_nothing_is_sent_and_a_gone_listener_never_blocks(
    tmp_path: Path,
) -> None:
    assert not Notifier({}).enabled
    assert Notifier({}).notify("READY=1") is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.notify("STATUS=x") is False
    assert gone.failed == 1
    gone.close()


async def test_the_watchdog_pings_only_while_the_pipeline_moves(
    listener: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
) -> None:
    sock, path = listener
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_s == 2.0
    moving = [True, True, False, False, True]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.watchdog, lambda: moving.pop(0) if moving else False)
        await trio.sleep(4.5)  # looks at 0, 1, 2, 3, 4 s
        nursery.cancel_scope.cancel()
    notifier.close()
    pings = []
    while True:
        try:
            pings.append(sock.recv(4096))
        except BlockingIOError:
            break
    assert pings == [b"WATCHDOG=1"] * 3


async def test_a_watchdog_meant_for_another_process_is_not_pinged() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_s is None


async def test_chrono_run_reports_ready_status_watchdog_and_stopping(
    tmp_path: Path, nursery: trio.Nursery, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    sim = CoinbaseSimulator()
    await nursery.start(sim.serve)
    config = await write_config(tmp_path, sim.url)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    seen: list[str] = []
    async with open_chrono(config, env=env) as daemon:
        ready = (await datagrams(sock, "READY=1", seen, 20)).split("\n")
        assert f"MAINPID={daemon.process.pid}" in ready
        assert any(line.startswith("STATUS=running: ") for line in ready)
        await datagrams(sock, "WATCHDOG=1", seen, 5)
        await datagrams(sock, "WATCHDOG=1", seen, 5)  # every half second
        line = await datagrams(sock, "STATUS=", seen, 10)  # every 5 s
        assert re.fullmatch(r"STATUS=running: [\d,]+ feeds/s, sources up 1/1, symbols fresh "
                            r"\d/2, store up", line), line  # fmt: skip
        daemon.process.send_signal(signal.SIGTERM)
        await datagrams(sock, "STOPPING=1", seen, 10)
        assert await daemon.wait_exit() == 0


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_unit_verifies_and_its_exposure_is_at_most_ok(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this checkout's chrono.
    chrono = Path(shutil.which("chrono") or Path(os.sys.executable).parent / "chrono")
    unit = tmp_path / "chrono.service"
    unit.write_text(UNIT.read_text().replace("/opt/chrono/.venv/bin/chrono", str(chrono)))
    text = unit.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "StateDirectory=chrono"):
        assert line in text.splitlines()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    match = re.search(r"Overall exposure level for chrono.service: ([\d.]+) (\w+)", security.stdout)
    assert match, security.stdout + security.stderr
    print(f"systemd-analyze security: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) < 5.0  # systemd's "OK" ends below 5.0 ("MEDIUM" from 5.0)
    assert match.group(2) in ("SAFE", "OK")


def test_the_launchd_plist_restarts_on_failure_and_waits_for_the_drain() -> None:
    import plistlib

    path = Path(__file__).parent.parent / "launchd" / "com.chrono.oracle.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["ProgramArguments"][1:] == ["run", "/usr/local/etc/chrono/config.toml"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # exit 1 restarts, exit 0 stays down
    assert plist["ExitTimeOut"] > 30 + 5  # [service] drain_timeout_s + [server] graceful_timeout_s
    assert plist["StandardErrorPath"].endswith(".log")
