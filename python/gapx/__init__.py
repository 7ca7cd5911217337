"""gapx: Gaussian Approximation Potentials with a fast C++ SOAP core."""

from __future__ import annotations

import os

# Idle OpenMP threads of the C++ core otherwise spin after every call and starve the BLAS that
# the GP runs next (measured: small GEMMs 6x slower). Must be set before the runtime starts;
# an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._core import __version__
from .calculator import GAPCalculator
from .descriptors import SOAP, ThreeBody, TwoBody
from .ewald import Ewald
from .learning import OnTheFly, select
from .model import GAP, load
from .neighbors import neighbor_list

__all__ = [
    "GAP",
    "Ewald",
    "GAPCalculator",
    "OnTheFly",
    "SOAP",
    "ThreeBody",
    "TwoBody",
    "__version__",
    "load",
    "neighbor_list",
    "select",
]
