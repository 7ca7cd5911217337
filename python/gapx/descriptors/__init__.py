"""Atomic-environment descriptors."""

from __future__ import annotations

from .soap import SOAP, SOAPGradients

__all__ = ["SOAP", "SOAPGradients"]
