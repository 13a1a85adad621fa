"""``chrono``: run | status [--watch] | check-config | migrate | simulate | demo.

Exit codes: 0 ok, 1 runtime failure (daemon unreachable, a supervisor gave up, an aborted
drain, a store schema newer than the code, a store ``migrate`` cannot reach), 2 bad usage or
bad config (the message names the key).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import trio

from chrono import __version__, gcpolicy
from chrono.client import base_url, fetch_status
from chrono.config import Config
from chrono.configure import load_config, masked
from chrono.errors import ChronoError, ConfigError, DaemonUnreachable, SchemaTooNew, StoreError
from chrono.logs import configure_logging
from chrono.model import is_canonical_symbol
from chrono.status import StatusReport
from chrono.watch import watch

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
    status.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C (a live view on a terminal)"
    )
    status.add_argument("--interval", type=float, default=2.0, help="--watch: seconds (2)")
    status.set_defaults(handler=_status)
    check = sub.add_parser("check-config", help="validate a config and print it, keys masked")
    check.add_argument("config")
    check.set_defaults(handler=_check_config)
    migrate = sub.add_parser("migrate", help="bring the store's schema up to date, then exit")
    migrate.add_argument("config")
    migrate.set_defaults(handler=_migrate)
    _simulate_parser(sub)
    demo = sub.add_parser(
        "demo", help="every simulator and Chrono on loopback: the product without internet"
    )
    demo.add_argument("--port", type=int, default=8080, help="Chrono's port (0: any free one)")
    demo.add_argument("--dir", help="keep the store here (default: a folder removed at the end)")
    demo.add_argument("--rate", type=float, default=5.0, help="frames/s per exchange")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chrono.demo import run_demo
    from chrono.simulate import SimulateOptions

    if not 0 <= args.port <= 65535 or args.rate <= 0:
        print("chrono demo: --port must be 0..65535 and --rate above 0", file=sys.stderr)
        return 2
    folder = Path(args.dir) if args.dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    configure_logging(level="info", fmt="text", secrets=[])
    gcpolicy.tune()
    try:
        trio.run(run_demo, SimulateOptions(rate=args.rate), args.port, folder,
                 lambda text: print(text, flush=True))  # fmt: skip
    except ChronoError as exc:
        log.error("chrono demo stopped: %s", exc)
        return 1
    return 0


def _simulate_parser(sub: Any) -> None:
    simulate = sub.add_parser(
        "simulate",
        help="serve every exchange simulator on loopback (demo, load and chaos tests)",
        description="Serve exchange simulators that speak the real protocols on loopback, "
        "print their ports and a [[collectors]] snippet, and run until Ctrl-C.",
    )
    simulate.add_argument("--exchanges", help="comma-separated (default: all)")
    simulate.add_argument("--symbols", default="BTC/USD,ETH/USD", help="canonical")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port-base", type=int, default=0, help="exchange i gets BASE+i")
    simulate.add_argument("--rate", type=float, default=20.0, help="frames/s per exchange")
    chaos = simulate.add_argument_group("chaos (0 = off)")
    chaos.add_argument(
        "--drop-every",
        type=float,
        default=0.0,
        metavar="S",
        help="close every connection abruptly (1006) every S seconds",
    )
    chaos.add_argument(
        "--silent-every",
        type=float,
        default=0.0,
        metavar="S",
        help="go silent (no data, heartbeats kept) every S seconds ...",
    )
    chaos.add_argument("--silent-for", type=float, default=0.0, metavar="S", help="... for S")
    chaos.add_argument(
        "--garbage-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="send a malformed frame after this share of data frames",
    )
    chaos.add_argument(
        "--reject-every",
        type=float,
        default=0.0,
        metavar="S",
        help="refuse the next connection with 429 + Retry-After every S seconds",
    )
    chaos.add_argument(
        "--notice-every",
        type=float,
        default=0.0,
        metavar="S",
        help="send the exchange's reconnect notice every S seconds",
    )
    simulate.set_defaults(handler=_simulate)  # fmt: skip


def _simulate(args: argparse.Namespace) -> int:
    from chrono.simulate import SimulateOptions, run_simulate
    from chrono.testing.simulators import SIMULATORS, Chaos

    exchanges = args.exchanges.split(",") if args.exchanges else list(SIMULATORS)
    unknown = [name for name in exchanges if name not in SIMULATORS]
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    bad = [s for s in symbols if not is_canonical_symbol(s)]
    if unknown or bad or not symbols or args.rate <= 0 or not 0 <= args.garbage_ratio <= 1:
        problem = (
            f"unknown exchange(s) {', '.join(unknown)} ({', '.join(SIMULATORS)})" if unknown
            else f"not BASE/QUOTE: {', '.join(bad) or '(none given)'}" if bad or not symbols
            else "--rate must be > 0 and --garbage-ratio within 0..1"
        )  # fmt: skip
        print(f"chrono simulate: {problem}", file=sys.stderr)
        return 2
    configure_logging(level="info", fmt="text", secrets=[])
    chaos = Chaos(
        drop_every_s=args.drop_every,
        silent_every_s=args.silent_every,
        silent_for_s=args.silent_for,
        garbage_ratio=args.garbage_ratio,
        reject_every_s=args.reject_every,
        notice_every_s=args.notice_every,
    )
    options = SimulateOptions(
        exchanges=exchanges, symbols=symbols, host=args.host, port_base=args.port_base,
        rate=args.rate, chaos=chaos,
    )  # fmt: skip
    trio.run(run_simulate, options, lambda text: print(text, flush=True))
    return 0


def _run(args: argparse.Namespace) -> int:
    from chrono.service import run_service
    from chrono.store.urls import url_password

    config = load_config(args.config)
    secrets = config.auth.secrets()  # every usable key, named entries too
    if config.forward is not None:
        secrets.append(config.forward.key)
    if password := url_password(config.storage.url):
        secrets.append(password)
    configure_logging(level=config.log.level, fmt=config.log.format, secrets=secrets)
    log.info(
        "chrono %s starting",
        __version__,
        extra={"data": {"collectors": [c.worker_id for c in config.collectors]}},
    )
    gcpolicy.tune()
    _raise_open_files_limit()
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


def _raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one: each ``/stream`` client is a socket,
    and ``[limits] stream_total`` (10,000) is past the usual soft limit of 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else hard  # macOS refuses "infinity"
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays %d: %s", soft, exc)
        else:
            log.info("open files limit raised", extra={"data": {"from": soft, "to": want}})


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
    if args.watch:
        if args.interval <= 0:
            print("chrono status: --interval must be above 0", file=sys.stderr)
            return 2
        return watch(lambda: fetch_status(url, key), render_status, interval_s=args.interval,
                     as_json=args.json)  # fmt: skip
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


def _migrate(args: argparse.Namespace) -> int:
    """What ``chrono run`` does to the schema at start, alone: for deploy scripts."""
    from chrono.store import open_store
    from chrono.store.urls import masked_url

    config = load_config(args.config)
    configure_logging(level="warn", fmt="text", secrets=[])
    store = open_store(config.storage)

    async def migrate() -> int:
        try:
            await store.open()
            return await store.schema_version()
        finally:
            await store.aclose()

    where = masked_url(config.storage.url)
    try:
        version = trio.run(migrate)
    except (StoreError, SchemaTooNew) as exc:
        print(f"chrono migrate: {exc}", file=sys.stderr)
        return 1
    print(f"{where}: schema at version {version}")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render_status(status: StatusReport) -> str:
    """The table a person reads at a glance."""
    head = ("COLLECTOR", "STATE", "SYMBOLS", "UPTIME", "RECONNECTS", "FEEDS", "LAST DATA", "STALE")
    rows = [head]
    for c in status.collectors:
        last = c.last_data_age_s
        rows.append(
            (
                c.worker_id,
                c.state,
                ",".join(c.symbols),
                _age(c.uptime_s),
                str(c.reconnects),
                str(c.feeds_collected),
                "-" if last is None else f"{_age(last)} ago",
                ",".join(c.stale_symbols) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for c in status.collectors:
        if c.state != "streaming" and c.last_error:
            lines.append(f"{c.worker_id}: last error: {c.last_error}")
        for sample in c.invalid_samples[-1:]:
            lines.append(f"{c.worker_id}: last invalid frame: {sample}")
    service, store, writer = status.service, status.store, status.pipeline.writer
    lines.insert(0, f"chrono {service.version}  {service.state}  up {_age(service.uptime_s)}")
    where = store.path or store.url or ""
    spooled = writer.spool.batches
    state = {"up": "healthy", "replaying": f"replaying {spooled} spooled batches"}.get(
        writer.store, f"FAILING: {writer.last_error} ({spooled} batches spooled)"
    )
    lines.append(f"store: {store.kind} {where}  rows written {store.rows_written}  {state}")
    for alert in status.alerts.active:
        subject = "" if alert.subject == "*" else f" ({alert.subject})"
        since = alert.since.strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(f"ALERT {alert.rule}{subject}: {alert.detail}, since {since}")
    return "\n".join(lines)
