"""gapx: Gaussian Approximation Potentials with a fast C++ SOAP core."""

from __future__ import annotations

import os

# How idle OpenMP threads of the C++ core wait for the next parallel region. Spinning long
# (libgomp's default, 300 000 spins: milliseconds) starves the BLAS that the GP runs next
# (measured: small GEMMs 6x slower); sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs tens of
# microseconds to wake them for every region, 20 % of a 21-atom molecule's prediction. A short
# spin (about 0.1 ms) keeps them awake between the regions of one call only. Must be set before
# the runtime starts; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"

from ._core import __version__
from .calculator import GAPCalculator
from .descriptors import SOAP, ThreeBody, TwoBody
from .ewald import Ewald
from .learning import OnTheFly, select
from .model import GAP, load
from .neighbors import neighbor_list
from .quip import from_quip

__all__ = [
    "from_quip",
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
