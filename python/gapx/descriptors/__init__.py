"""Atomic-environment descriptors."""

from __future__ import annotations

from .soap import SOAP, SOAPGradients
from .two_body import TwoBody

__all__ = ["SOAP", "SOAPGradients", "TwoBody"]
