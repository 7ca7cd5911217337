"""Choosing new training data from a model's uncertainty."""

from __future__ import annotations

from .selection import Selection, select, select_frames

__all__ = ["Selection", "select", "select_frames"]
