"""Atomic-environment descriptors, each a GP term (:class:`gapx.terms.Term`)."""

from __future__ import annotations

from .soap import SOAP
from .three_body import ThreeBody
from .two_body import TwoBody

__all__ = ["SOAP", "ThreeBody", "TwoBody"]
