"""The daemon's collector settings: startup's objects frozen, young collections far apart."""

from __future__ import annotations

import json
import subprocess
import sys

from chrono import gcpolicy

PROBE = """
import gc, json
from chrono import gcpolicy
before = gc.get_freeze_count()
gcpolicy.tune()
garbage = []
garbage.append(garbage)  # a cycle made after startup is still collected
del garbage
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "threshold": gc.get_threshold(), "collected": gc.collect()}))
"""


def test_tune_freezes_startup_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == 0
    assert seen["frozen"] > 1000
    assert seen["threshold"] == [gcpolicy.YOUNG, gcpolicy.MIDDLE, gcpolicy.OLD]
    assert seen["collected"] >= 1
