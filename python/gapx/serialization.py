"""The model-file schema and the one registry of term, kernel and baseline types.

Every serialisable object has ``to_dict()`` returning ``{"type": <type_name>, **settings}`` (JSON
values, or nested descriptions of the same family) and a ``from_dict`` classmethod inverting it.
:func:`from_dict` finds the class by family and type in :data:`REGISTRY` (a fixed table: a file
can never name code to run) and rebuilds nested descriptions first. Model files and the
``gapx fit`` config use the same registry.

The header of a model file (see :mod:`gapx.io` for the container) holds the model's settings
(``hyperparameters``, ``terms``, ``baseline``), what the fit determined (``e0``, ``sparse_sets``
with the arrays ``alpha``, ``R``, ``sparse_<n>_points`` and ``sparse_<n>_factor``) and a
``training`` summary, and the ``calibration`` of its stds (None, or a
:class:`gapx.uncertainty.Calibration` ``to_dict()``; format 3). Format 1 files (terms and
baselines nested their settings in ``params``) are upgraded on read; files before format 3 are
uncalibrated.
"""

from __future__ import annotations

import math

import numpy as np
from ase.data import atomic_numbers

from ._core import __version__
from .descriptors.soap import SOAP
from .descriptors.three_body import ThreeBody
from .descriptors.two_body import TwoBody
from .ewald import Ewald
from .fitting import FittedState
from .gp.sparse_set import SparseSet
from .kernels import CutoffWeighted, DotProduct, SquaredExponential
from .uncertainty import Calibration

REGISTRY: dict[str, dict[str, type]] = {
    "term": {cls.type_name: cls for cls in (SOAP, TwoBody, ThreeBody)},
    "kernel": {cls.type_name: cls for cls in (DotProduct, SquaredExponential, CutoffWeighted)},
    "baseline": {cls.type_name: cls for cls in (Ewald,)},
    "calibration": {cls.type_name: cls for cls in (Calibration,)},
}

#: Other spellings of a type accepted in fit configs.
ALIASES = {
    "twobody": "two_body",
    "2b": "two_body",
    "threebody": "three_body",
    "3b": "three_body",
    "angle_3b": "three_body",
}


def registered_class(family: str, type_name) -> type:
    """The class registered as ``type_name`` (or an alias, any case) in ``family``."""
    table = REGISTRY[family]
    name = str(type_name).lower()
    name = ALIASES.get(name, name)
    if name not in table:
        raise ValueError(f"unknown {family} type {type_name!r} (known: {', '.join(table)})")
    return table[name]


def type_names(family: str) -> list[str]:
    """Every name accepted for ``family`` types: registered names, then aliases."""
    names = list(REGISTRY[family])
    return names + [alias for alias, name in ALIASES.items() if name in names]


def from_dict(data, family: str):
    """Rebuild an object of ``family`` ("term", "kernel", "baseline") from its ``to_dict()``."""
    if not isinstance(data, dict):
        raise ValueError(f"a {family} description must be a dict with a 'type', got {data!r}")
    cls = registered_class(family, data.get("type"))
    settings = {
        key: from_dict(value, family) if isinstance(value, dict) and "type" in value else value
        for key, value in data.items()
    }
    settings["type"] = cls.type_name
    return cls.from_dict(settings)


def _upgrade_v1(description: dict | None) -> dict | None:
    """A format-1 ``{"type": t, "params": {...}}`` description as ``{"type": t, ...}``."""
    if description is None or "params" not in description:
        return description
    return {**description["params"], "type": description["type"]}


def model_header(model) -> dict:
    """The header describing a fitted ``gapx.GAP`` (the arrays are :func:`model_arrays`)."""
    return {
        "gapx_version": __version__,
        "hyperparameters": {
            "sigma_energy": model.sigma_energy,
            "sigma_force": model.sigma_force,
            "sigma_virial": model.sigma_virial,
            "config_type_sigma": {k: list(v) for k, v in model.config_type_sigma.items()},
            "e0_method": model.e0_method,
            "sparse_jitter": model.sparse_jitter,
            "seed": model.seed,
            "optimize": model.optimize,
            **model.keys,
        },
        "species": model.species,
        "e0": model.e0,
        "terms": [t.to_dict() for t in model.terms],
        "baseline": None if model.baseline is None else model.baseline.to_dict(),
        "sparse_sets": [
            {
                "term": s.term,
                "kind": s.kind,
                "offset": s.offset,
                "size": s.size,
                "delta": s.delta,
                "jitter": s.jitter,
            }
            for s in model.sparse_sets
        ],
        "training": _jsonable(model.summary),
        "calibration": None if model.calibration is None else model.calibration.to_dict(),
    }


def model_arrays(model) -> dict[str, np.ndarray]:
    """The numeric arrays of a fitted model, by their names in the file."""
    arrays = {"alpha": model.alpha, "R": model.R}
    for n, s in enumerate(model.sparse_sets):
        arrays[f"sparse_{n}_points"] = s.points
        arrays[f"sparse_{n}_factor"] = s.factor
    return arrays


def decode_model(header: dict, arrays: dict, where: str) -> tuple[dict, FittedState]:
    """``(settings, state)`` from a model file: ``gapx.GAP(**settings)`` rebuilds the unfitted
    model and ``state`` is what its fit determined. Raises ValueError naming ``where``.

    Everything a prediction uses is checked here, so that a bad file fails on load, not with a
    NaN at predict time: every array and number is finite; e0 keys are chemical symbols with
    numeric values and the header's ``species`` are theirs; each sparse set is of a kind its
    term can have for those species (:meth:`gapx.terms.Term.possible_kinds`), at most once, with
    its term's delta, points as wide as the term's features, a triangular factor with a
    positive diagonal, and columns that tile the weights.
    """
    try:
        hyper = dict(header["hyperparameters"])
        terms = [from_dict(_upgrade_v1(t), "term") for t in header["terms"]]
        baseline = header.get("baseline")
        if baseline is not None:
            baseline = from_dict(_upgrade_v1(baseline), "baseline")
        settings = {"terms": terms, "e0": hyper.pop("e0_method"), "baseline": baseline, **hyper}
        e0 = _decode_e0(header)
        alpha, R = arrays["alpha"], arrays["R"]
        n_columns = alpha.shape[0] if alpha.ndim == 1 else -1
        if n_columns < 0 or R.shape != (n_columns, n_columns):
            raise ValueError(f"alpha {alpha.shape} and R {R.shape} do not match")
        _check_finite("alpha", alpha)
        _check_finite("R", R)
        sparse_sets = [
            _decode_sparse_set(n, meta, arrays, terms, list(e0), n_columns)
            for n, meta in enumerate(header["sparse_sets"])
        ]
        seen = set()
        for s in sparse_sets:
            if (s.term, s.kind) in seen:
                raise ValueError(f"term {s.term} has two sparse sets of kind {s.kind}")
            seen.add((s.term, s.kind))
        covered = np.zeros(n_columns, dtype=np.int64)
        for s in sparse_sets:
            covered[s.columns] += 1
        if sum(s.size for s in sparse_sets) != n_columns or np.any(covered != 1):
            raise ValueError("sparse sets do not cover the weights")
        state = FittedState(
            e0=e0,
            sparse_sets=sparse_sets,
            alpha=alpha,
            R=R,
            summary=dict(header.get("training", {})),
        )
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{where}: malformed model header ({error!r})") from None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return settings, state


def _check_finite(name: str, array: np.ndarray) -> None:
    if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array))) if array.dtype.kind == "f" else None
        what = f"{bad} NaN or infinite values" if bad else f"dtype {array.dtype}"
        raise ValueError(f"array {name!r} has {what}: refusing a model that would predict NaN")


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}: refusing a model that would predict NaN")
    return float(value)


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _decode_e0(header: dict) -> dict[str, float]:
    """e0 by chemical symbol, checked against the header's ``species``."""
    raw = header["e0"]
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"e0 must map chemical symbols to energies, got {raw!r}")
    bad = [k for k in raw if k not in atomic_numbers or atomic_numbers[k] == 0]
    if bad:
        raise ValueError(f"e0 keys must be chemical symbols, got {bad}")
    e0 = {k: _finite(f"e0[{k!r}]", v) for k, v in raw.items()}
    species = sorted(e0, key=lambda s: atomic_numbers[s])
    if "species" in header and header["species"] != species:
        raise ValueError(f"species {header['species']!r} do not match the e0 keys {species}")
    return e0


def _decode_sparse_set(n: int, meta: dict, arrays, terms, species, n_columns) -> SparseSet:
    points = arrays[f"sparse_{n}_points"]
    factor = arrays[f"sparse_{n}_factor"]
    size = _integer(f"sparse set {n} size", meta["size"])
    offset = _integer(f"sparse set {n} offset", meta["offset"])
    t = _integer(f"sparse set {n} term", meta["term"])
    kind = _integer(f"sparse set {n} kind", meta["kind"])
    if not 0 <= t < len(terms):
        raise ValueError(f"sparse set {n} refers to term {t}")
    term = terms[t]
    if kind not in term.possible_kinds(species):
        raise ValueError(
            f"sparse set {n} is of kind {kind}, which term {t} ({term.type_name}) cannot have "
            f"for the species {species}"
        )
    if points.ndim != 2 or points.shape[0] != size or factor.shape != (size, size):
        raise ValueError(f"sparse set {n} arrays have inconsistent shapes")
    if points.shape[1] != term.n_features:
        raise ValueError(
            f"sparse set {n} points have {points.shape[1]} features, but term {t} "
            f"({term.type_name}) has {term.n_features}"
        )
    if offset < 0 or offset + size > n_columns:
        raise ValueError(f"sparse set {n} columns out of range")
    _check_finite(f"sparse_{n}_points", points)
    _check_finite(f"sparse_{n}_factor", factor)
    if np.any(np.diag(factor) <= 0) or np.any(np.triu(factor, 1)):
        raise ValueError(f"sparse set {n} factor is not lower triangular with a positive diagonal")
    delta = _finite(f"sparse set {n} delta", meta["delta"])
    if delta != term.delta:
        raise ValueError(f"sparse set {n} has delta {delta}, its term {t} has {term.delta}")
    jitter = _finite(f"sparse set {n} jitter", meta["jitter"])
    if jitter < 0:
        raise ValueError(f"sparse set {n} has a negative jitter {jitter}")
    return SparseSet(t, kind, points, offset, delta, jitter, factor)


def decode_calibration(header: dict, where: str):
    """The model file's :class:`gapx.uncertainty.Calibration`, or None (uncalibrated, and every
    file before format 3). Raises ValueError naming ``where``."""
    data = header.get("calibration")
    if data is None:
        return None
    try:
        return from_dict(data, "calibration")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: bad calibration ({error})") from None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
