"""``chrono simulate``: every exchange simulator on loopback, for demos and load or chaos tests.

Each simulator speaks its exchange's real protocol on its own port (at the exchange's own URL
path), so a Chrono pointed at them runs exactly as against the exchanges. The command prints
the ports and a ``[[collectors]]`` snippet to paste into a config, then serves until
SIGINT/SIGTERM. Chaos options apply to every simulator: drops, silences, garbage, 429s on
connect and the exchanges' "reconnect soon" notices.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from chrono.exchanges import EXCHANGES
from chrono.testing.simulators import SIMULATORS, Chaos, Simulator

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("BTC/USD", "ETH/USD")


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    exchanges: Sequence[str] = tuple(SIMULATORS)
    symbols: Sequence[str] = DEFAULT_SYMBOLS
    host: str = "127.0.0.1"
    port_base: int = 0  # 0: any free port; else exchange i listens on port_base + i
    rate: float = 20.0  # data frames per second, per simulator
    chaos: Chaos = field(default_factory=Chaos)


@dataclass(frozen=True, slots=True)
class Served:
    """One running simulator and the collector entry that points Chrono at it."""

    exchange: str
    simulator: Simulator
    symbols: list[str]

    @property
    def url(self) -> str:
        return self.simulator.endpoint

    def snippet(self) -> str:
        symbols = json.dumps(self.symbols)
        return (
            f'[[collectors]]\nexchange = "{self.exchange}"\nsymbols = {symbols}\n'
            f'url = "{self.url}"\n'
        )


def build(options: SimulateOptions) -> list[Served]:
    """One simulator per exchange, trading the natives of ``symbols`` (quote aliases applied)."""
    served = []
    for name in options.exchanges:
        natives = EXCHANGES[name].symbol_map(options.symbols).natives()
        simulator = SIMULATORS[name](symbols=natives)
        simulator.set_rate(options.rate)
        served.append(Served(name, simulator, list(options.symbols)))
    return served


def snippet(served: Sequence[Served]) -> str:
    return "\n".join(s.snippet() for s in served)


async def serve_simulators(
    options: SimulateOptions,
    *,
    task_status: trio.TaskStatus[list[Served]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every simulator (with chaos) until cancelled; reports them once listening."""
    served = build(options)
    async with trio.open_nursery() as nursery:
        for i, entry in enumerate(served):
            port = options.port_base + i if options.port_base else 0
            await nursery.start(entry.simulator.serve, options.host, port)
            nursery.start_soon(entry.simulator.run_chaos, options.chaos)
        task_status.started(served)


async def run_simulate(options: SimulateOptions, out: Callable[[str], None]) -> None:
    """What ``chrono simulate`` runs: serve, print ports and snippet, stop on a signal."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            served = await nursery.start(serve_simulators, options)
            for entry in served:
                log.info("%s simulator listening", entry.exchange, extra={"data": {
                    "url": entry.url, "port": entry.simulator.port}})  # fmt: skip
            out("# chrono simulate: paste into a config's collectors")
            out(snippet(served))
            async for signum in signals:
                log.info("%s: stopping the simulators", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
