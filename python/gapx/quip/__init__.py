"""QUIP/GAP XML models: import (:func:`from_quip`) and export (:func:`to_quip`)."""

from .xml_reader import from_quip

__all__ = ["from_quip"]
