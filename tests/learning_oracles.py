"""Oracles for the on-the-fly learning tests, importable as ``learning_oracles:NAME``.

EMT copper with a twist each: counting every call, failing after a set number of calls (a
"kill" at a known point), failing every other attempt, returning NaN, or slow enough for a
subprocess to be killed mid-run.
"""

from __future__ import annotations

import time

import numpy as np
from ase.calculators.emt import EMT

#: Positions of every structure CountingEMT labelled, in order.
LABELLED: list[np.ndarray] = []
#: Calls FailingEMT answers before it raises.
FAIL_AFTER = {"calls": 2, "made": 0}


class CountingEMT(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        LABELLED.append(self.atoms.positions.copy())


class FailingEMT(EMT):
    def calculate(self, *args, **kwargs):
        FAIL_AFTER["made"] += 1
        if FAIL_AFTER["made"] > FAIL_AFTER["calls"]:
            raise RuntimeError("the reference code crashed")
        super().calculate(*args, **kwargs)


class FlakyEMT(EMT):
    """Fails every first attempt: a run with one retry per call still gets every label."""

    def calculate(self, *args, **kwargs):
        FAIL_AFTER["made"] += 1
        if FAIL_AFTER["made"] % 2:
            raise OSError("the queue lost the job")
        super().calculate(*args, **kwargs)


class NaNEMT(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = np.full_like(self.results["forces"], np.nan)


class SlowEMT(EMT):
    def calculate(self, *args, **kwargs):
        time.sleep(0.3)
        super().calculate(*args, **kwargs)
