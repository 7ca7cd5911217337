"""The C++ prediction engine of a fitted GAP: what ``GAP.predict`` computes the mean with.

:func:`engine_for` gives a ``gapx._core.Model`` holding the model's terms, e0, sparse points and
weights, built from the same header and arrays a model file holds (so the C++ reader of ``.gapx``
files and this path share one decoder), cached on the model for as long as its fitted state and
terms stay the same objects. The engine computes energies, forces and the virial of the GP and
e0; variances and the baseline stay in Python. A model with a term the engine does not implement
gets None, and ``GAP.predict`` uses the NumPy path of :mod:`gapx.model` for it.
"""

from __future__ import annotations

import json

import numpy as np

from . import _core, serialization

#: Header entries the engine does not read (the training summary can be large).
_UNUSED_HEADER = ("training", "calibration", "hyperparameters")


def _state(model) -> tuple:
    """The objects the engine is built from, compared by identity."""
    return (model.alpha, model.sparse_sets, model.e0, *model.terms)


def build_engine(model):
    """A new ``_core.Model`` of a fitted ``gapx.GAP``, or None if a term is not implemented."""
    header = {
        key: value
        for key, value in serialization.model_header(model).items()
        if key not in _UNUSED_HEADER
    }
    arrays = serialization.model_arrays(model)
    del arrays["R"]  # the mean does not need the posterior factor
    try:
        return _core.Model(json.dumps(header, default=_plain), arrays)
    except NotImplementedError:
        return None


def _plain(value):
    """NumPy scalars (settings of imported models) as the Python numbers JSON writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def engine_for(model):
    """The cached engine of ``model``'s current fitted state (built on first use), or None."""
    state = _state(model)
    cached = getattr(model, "_engine", None)
    if cached is not None and len(cached[0]) == len(state):
        if all(a is b for a, b in zip(cached[0], state, strict=True)):
            return cached[1]
    engine = build_engine(model)
    model._engine = (state, engine)
    return engine


def engine_threads(terms) -> int:
    """OpenMP threads for the engine: the largest ``n_threads`` a term sets, else 0 (OpenMP's
    default)."""
    return max((getattr(term, "n_threads", None) or 0 for term in terms), default=0)
