"""Atomic-environment descriptors, each a GP term (:class:`gapx.terms.Term`)."""

from __future__ import annotations

from .soap import SOAP
from .two_body import TwoBody

__all__ = ["SOAP", "TwoBody"]
