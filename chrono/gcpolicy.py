"""The cyclic garbage collector's settings for the daemon.

At full rate the pipeline allocates a few hundred thousand container objects a second (a
feed's metadata dict, each read's lists), nearly all gone once their batch is written. With
CPython's default thresholds (700, 10, 10) the young generation is collected about once per
300 feeds, each time traversing every survivor of the batches in flight, and each full
collection walks the whole application (the web framework's objects too). Measured on a
300k-feed burst (``bench/e2e_coinbase.py``): 0.47 s of collection with the defaults, 0.11 s
with these. Objects alive once startup is done are frozen: a full collection skips them.
Cycles are still collected, within ``YOUNG`` allocations for new ones.
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG: Final = 50_000  # allocations between young collections (CPython: 700)
MIDDLE: Final = 20  # young collections per middle one (10)
OLD: Final = 10  # middle collections per full one (10)


def tune() -> None:
    """Freeze what startup built, then collect less often: call once, before the event loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
