"""``chrono``: run | status | check-config.

Exit codes: 0 ok, 1 runtime failure (daemon unreachable, a supervisor gave up, an aborted
drain), 2 bad usage or bad config (the message names the key).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import trio

from chrono import __version__
from chrono.client import base_url, fetch_status
from chrono.config import Config, load_config, masked
from chrono.errors import ChronoError, ConfigError, DaemonUnreachable
from chrono.logs import configure_logging

log = logging.getLogger("chrono")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"chrono: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chrono", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"chrono {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the service in the foreground")
    run.add_argument("config")
    run.set_defaults(handler=_run)
    status = sub.add_parser("status", help="show the running daemon's collectors and store")
    status.add_argument("config", nargs="?")
    status.add_argument("--url", help="the daemon's address, e.g. http://127.0.0.1:8080")
    status.add_argument("--key", help="an admin key (default: the config's first admin key)")
    status.add_argument("--json", action="store_true", help="print the raw /status JSON")
    status.set_defaults(handler=_status)
    check = sub.add_parser("check-config", help="validate a config and print it, keys masked")
    check.add_argument("config")
    check.set_defaults(handler=_check_config)
    return parser


def _run(args: argparse.Namespace) -> int:
    from chrono.service import run_service

    config = load_config(args.config)
    secrets = [*config.auth.internal_keys, *config.auth.public_keys, *config.auth.admin_keys]
    configure_logging(level=config.log.level, fmt=config.log.format, secrets=secrets)
    log.info(
        "chrono %s starting",
        __version__,
        extra={"data": {"collectors": [c.worker_id for c in config.collectors]}},
    )
    try:
        trio.run(run_service, config)
    except ChronoError as exc:
        log.error("chrono stopped: %s", exc)
        return 1
    except BaseExceptionGroup as group:
        ours, other = group.split(ChronoError)
        if ours is not None and other is None:
            for leaf in _leaves(ours):
                log.error("chrono stopped: %s", leaf)
        else:
            log.error("chrono stopped on an error", exc_info=group)
        return 1
    log.info("chrono stopped cleanly")
    return 0


def _leaves(group: BaseExceptionGroup[ChronoError]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _status(args: argparse.Namespace) -> int:
    key = args.key
    url = args.url
    if args.config:
        config = load_config(args.config)
        url = url or base_url(config.server.host, config.server.port)
        key = key or next(iter(config.auth.admin_keys), None)
    if not url:
        print("chrono status: give a CONFIG or --url", file=sys.stderr)
        return 2
    try:
        status = fetch_status(url, key)
    except DaemonUnreachable as exc:
        print(f"chrono status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(status)).decode())
    else:
        print(render_status(status))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config: Config = load_config(args.config)
    print(msgspec.json.format(msgspec.json.encode(masked(config))).decode())
    print(f"{args.config}: ok", file=sys.stderr)
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render_status(status: dict[str, Any]) -> str:
    """The table a person reads at a glance."""
    head = ("COLLECTOR", "STATE", "SYMBOLS", "UPTIME", "RECONNECTS", "FEEDS", "LAST DATA")
    rows = [head]
    for c in status["collectors"]:
        last = c["last_data_age_s"]
        rows.append(
            (
                c["worker_id"],
                c["state"],
                ",".join(c["symbols"]),
                _age(c["uptime_s"]),
                str(c["reconnects"]),
                str(c["feeds_collected"]),
                "-" if last is None else f"{_age(last)} ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for c in status["collectors"]:
        if c["state"] != "streaming" and c["last_error"]:
            lines.append(f"{c['worker_id']}: last error: {c['last_error']}")
    service, store, writer = status["service"], status["store"], status["pipeline"]["writer"]
    lines.insert(
        0, f"chrono {service['version']}  {service['state']}  up {_age(service['uptime_s'])}"
    )
    lines.append(
        f"store: {store['kind']} {store.get('path', '')}  rows written {store['rows_written']}"
        f"  {'healthy' if writer['healthy'] else 'FAILING: ' + str(writer['last_error'])}"
    )
    return "\n".join(lines)
