"""``chrono demo``: the whole product on loopback, without internet, in one process.

Every exchange simulator (``chrono.simulate``) and a Chrono pointed at them, with a SQLite
store in a fresh folder (removed at the end unless ``--dir`` names one to keep) and a public and
an admin key made for this run only; once serving, the dashboard's URL with the public key is
printed. Ctrl-C (or SIGTERM) drains Chrono as ``chrono run`` does, then stops the simulators.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio

from chrono.config import Config
from chrono.configure import parse_config
from chrono.service import run_service
from chrono.simulate import Served, SimulateOptions, serve_simulators


def demo_config(served: list[Served], folder: Path, port: int, keys: tuple[str, str]) -> Config:
    """Chrono on ``port`` (loopback), collecting from every simulator, storing in ``folder``."""
    public, admin = keys
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"url": "sqlite:///chrono.db", "spool_dir": "spool"},
        "log": {"level": "info", "format": "text"},
        "auth": {"public_keys": [public], "admin_keys": [admin]},
        "consensus": {"snapshot_interval_s": 0},
        "collectors": [
            {"exchange": s.exchange, "symbols": s.symbols, "url": s.url} for s in served
        ],
    }
    return parse_config(raw, base_dir=folder)


async def run_demo(
    options: SimulateOptions, port: int, folder: Path | None, out: Callable[[str], None]
) -> None:
    keys = (f"demo_public_{secrets.token_hex(8)}", f"demo_admin_{secrets.token_hex(8)}")
    with ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chrono-demo-")))
        async with trio.open_nursery() as nursery:
            served = await nursery.start(serve_simulators, options)
            config = demo_config(served, folder, port, keys)

            async def chrono(task_status: trio.TaskStatus[int]) -> None:
                await run_service(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: the simulators go too

            bound = await nursery.start(chrono)
            base = f"http://127.0.0.1:{bound}"
            out(f"chrono demo: {len(served)} exchange simulators -> Chrono, store in {folder}")
            out(f"dashboard:  {base}/?key={keys[0]}")
            out(f"status:     chrono status --url {base} --key {keys[1]} --watch")
            out(f"api:        curl -H 'Authorization: Bearer {keys[0]}' "
                f"'{base}/aggregates/consensus?symbols=BTC/USD'")  # fmt: skip
            out("Ctrl-C stops it.")
