"""systemd's service notification protocol: ``READY=1``, ``STATUS=``, ``WATCHDOG=1``,
``STOPPING=1``, each a datagram to the socket named by ``$NOTIFY_SOCKET``.

The protocol is a few lines (sd_notify(3)): a UNIX datagram socket, a path or, after ``@``, an
abstract name; one datagram of newline-separated ``KEY=VALUE`` lines. Written here rather than
taken from a library: every maintained one either wraps libsystemd (a C dependency) or does what
this does. Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is a
no-op. A send never blocks the event loop: the socket is non-blocking, and a datagram that does
not fit the listener's queue is dropped and counted (systemd reads its queue at once; a
``STATUS`` line is replaced by the next one anyway).

The watchdog (``WATCHDOG_USEC``, set by systemd from ``WatchdogSec=``) is pinged by
``watchdog`` at half the interval, but only while the process makes progress: the ping comes
from a task of the event loop (a stuck loop pings nothing), and ``progressing()`` must say the
pipeline moves (``Service.progressing``: nothing waits in the intake, or the fan-out took some
of it since the last look). A wedged pipeline stops the pings, and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger(__name__)


class Notifier:
    """Datagrams to ``$NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_s(env)
        self.sent = 0
        self.failed = 0
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """One datagram of ``lines``; False if there is no socket or it could not be sent."""
        if self.address is None:
            return False
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(data, self.address)
        except OSError as exc:  # the listener is gone, or its queue is full: never wait
            self.failed += 1
            if self.failed == 1:
                log.warning("systemd notify failed: %s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(
        self, status: str = "draining: collectors stopped, writing what was received"
    ) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    async def watchdog(self, progressing: Callable[[], bool]) -> None:
        """Until cancelled: ``WATCHDOG=1`` every half interval while ``progressing()``."""
        if self.watchdog_s is None or self.address is None:
            await trio.sleep_forever()
        assert self.watchdog_s is not None
        while True:
            if progressing():
                self.notify("WATCHDOG=1")
            else:
                log.error("the pipeline makes no progress: no watchdog ping")
            await trio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _address(name: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as an address: a path, or ``@name``, an abstract socket (Linux)."""
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # vsock and other forms: not for a service on one machine


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """The watchdog interval, when systemd asked this very process for pings."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a parent that exec'd us)
    return int(usec) / 1_000_000
