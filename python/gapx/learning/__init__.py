"""Learning from a model's uncertainty: choosing new training data, and learning while running.

``selection`` chooses the frames of a pool that would teach the model most; ``incremental``
grows a fit by frames and sparse points without refitting from scratch; ``onthefly`` runs MD on
a model, labels uncertain structures with an oracle (any ASE calculator) and updates the model as
it goes; ``oracle`` imports and calls the oracle; ``run_files`` owns what a learning run keeps in
its folder; ``errors`` says why a run stopped.
"""

from __future__ import annotations

from .errors import LearningError, OracleError
from .incremental import IncrementalFit
from .onthefly import OnTheFly
from .selection import Selection, select, select_frames

__all__ = [
    "IncrementalFit",
    "LearningError",
    "OnTheFly",
    "OracleError",
    "Selection",
    "select",
    "select_frames",
]
