"""``chrono status --watch``: the status table, refreshed, for a person at a terminal.

On a terminal the screen is redrawn in place each time, states are coloured (streaming green;
connecting, subscribing and backoff yellow; anything else, alerts and a failing store red) and
every line is cut to the terminal's width, so the table never wraps. Into a pipe or a file each
refresh is printed plain, one after the other, so that ``--watch | tee`` keeps a readable log;
with ``--json``, one ``/status`` document per line. A daemon that stops answering is shown as
such and polled on: the view outlives a restart.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

import msgspec

from chrono.errors import DaemonUnreachable
from chrono.status import StatusReport

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
RESET = "\x1b[0m"
GREEN, YELLOW, RED = "\x1b[32m", "\x1b[33m", "\x1b[31m"
WAITING = ("connecting", "subscribing", "subscribed", "backoff", "starting")


def watch(
    fetch: Callable[[], StatusReport],
    render: Callable[[StatusReport], str],
    *,
    interval_s: float,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    refreshes: int | None = None,
) -> int:
    """Refresh until Ctrl-C (0), or ``refreshes`` times."""
    tty = out.isatty()
    shown = 0
    try:
        while refreshes is None or shown < refreshes:
            try:
                status = fetch()
                text = msgspec.json.encode(status).decode() if as_json else render(status)
            except DaemonUnreachable as exc:
                text = f"chrono status: {exc} (retrying every {interval_s:g} s)"
            stamp = time.strftime("%H:%M:%S")
            if as_json:
                print(text, file=out, flush=True)
            elif tty:
                width = shutil.get_terminal_size().columns
                lines = [f"{stamp}  every {interval_s:g} s, Ctrl-C to stop", *text.splitlines()]
                print(CLEAR + "\n".join(paint(fit(line, width)) for line in lines), file=out,
                      flush=True)  # fmt: skip
            else:
                print(f"--- {stamp}\n{text}", file=out, flush=True)
            shown += 1
            if refreshes is None or shown < refreshes:
                time.sleep(interval_s)
    except KeyboardInterrupt:
        pass
    return 0


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns (an ellipsis marks the cut)."""
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


def paint(line: str) -> str:
    """``line`` with its state words coloured."""
    if line.startswith(("ALERT", "chrono status:")) or "FAILING" in line:
        return f"{RED}{line}{RESET}"
    words = line.split("  ")
    for i, word in enumerate(words):
        state = word.strip()
        colour = (
            GREEN if state in ("streaming", "healthy", "running")
            else YELLOW if state in WAITING
            else RED if state in ("gave_up", "stopped", "failed")
            else None
        )  # fmt: skip
        if colour is not None:
            words[i] = word.replace(state, f"{colour}{state}{RESET}", 1)
    return "  ".join(words)
