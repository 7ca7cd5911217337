"""gapx: Gaussian Approximation Potentials with a fast C++ SOAP core."""

from __future__ import annotations

from ._core import __version__
from .calculator import GAPCalculator
from .descriptors import SOAP, TwoBody
from .ewald import Ewald
from .io import load
from .model import GAP
from .neighbors import neighbor_list

__all__ = [
    "GAP",
    "Ewald",
    "GAPCalculator",
    "SOAP",
    "TwoBody",
    "__version__",
    "load",
    "neighbor_list",
]
