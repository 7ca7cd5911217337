"""gapx: Gaussian Approximation Potentials with a fast C++ SOAP core."""

from __future__ import annotations

from ._core import __version__
from .neighbors import neighbor_list

__all__ = ["__version__", "neighbor_list"]
