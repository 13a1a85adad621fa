"""The consensus price of one symbol from several sources (``engine``), its exact statistics
(``stats``) and the recent-deviation guard (``guard``): pure computation, no I/O."""

from __future__ import annotations

from chrono.consensus.engine import (
    DEFAULT_STABLECOINS,
    Consensus,
    Conversion,
    Input,
    InputRow,
    Method,
    Params,
    Rate,
    Reason,
    Status,
    compute,
    inputs_digest,
    to_json,
)
from chrono.consensus.guard import Guard

__all__ = [
    "DEFAULT_STABLECOINS",
    "Consensus",
    "Conversion",
    "Guard",
    "Input",
    "InputRow",
    "Method",
    "Params",
    "Rate",
    "Reason",
    "Status",
    "compute",
    "inputs_digest",
    "to_json",
]
