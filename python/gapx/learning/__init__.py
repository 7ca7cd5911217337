"""Learning while running: the incremental sparse-GP update.

``incremental`` grows a fit by frames and sparse points without refitting from scratch.
"""

from __future__ import annotations

from .incremental import IncrementalFit

__all__ = ["IncrementalFit"]
