"""gapx: Gaussian Approximation Potentials with a fast C++ SOAP core."""

from __future__ import annotations

from ._core import __version__
from .calculator import GAPCalculator
from .descriptors import SOAP
from .ewald import Ewald
from .neighbors import neighbor_list

__all__ = ["Ewald", "GAPCalculator", "SOAP", "__version__", "neighbor_list"]
