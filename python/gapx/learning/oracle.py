"""The oracle of on-the-fly learning: an ASE calculator named ``module:callable``, and labelling.

The oracle is whatever gives reference energies and forces: a DFT code's ASE calculator in real
use, ``ase.calculators.emt:EMT`` in tests. :func:`load_oracle` imports it by name,
:func:`make_calculator` makes the calculator once, :func:`label` labels one structure.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .errors import OracleError

logger = logging.getLogger("gapx")


def load_oracle(spec: str):
    """The callable named by ``"module:callable"`` (``callable`` may be dotted), imported with
    importlib; ValueError when it cannot be imported or is not callable."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(
            f"the oracle must be given as MODULE:CALLABLE (e.g. ase.calculators.emt:EMT), "
            f"got {spec!r}"
        )
    module_name, name = spec.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import the oracle module {module_name!r}: {error}") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"the oracle module {module_name!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(
            f"the oracle {spec!r} is a {type(obj).__name__}, not callable: give an ASE "
            "calculator class or a function returning a calculator"
        )
    return obj


def _is_calculator(obj) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "get_potential_energy", None))


def make_calculator(oracle):
    """An ASE calculator from ``oracle``: a calculator (used as it is), a calculator class or
    factory (called once, without arguments), or a ``"module:callable"`` string naming one."""
    if isinstance(oracle, str):
        oracle = load_oracle(oracle)
    if _is_calculator(oracle):
        return oracle
    if not callable(oracle):
        raise TypeError(
            f"the oracle must be an ASE calculator, a class or factory making one, or "
            f"'module:callable', got {type(oracle).__name__}"
        )
    try:
        calc = oracle()
    except Exception as error:
        raise OracleError(
            f"making the oracle calculator failed: {type(error).__name__}: {error}"
        ) from None
    if not _is_calculator(calc):
        raise TypeError(
            f"the oracle returned a {type(calc).__name__}, not an ASE calculator "
            "(nothing with get_potential_energy)"
        )
    return calc


def _reference(calc, atoms) -> dict:
    clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    clean.calc = calc
    results = {"energy": clean.get_potential_energy(), "forces": clean.get_forces()}
    periodic = clean.cell.rank == 3 and all(clean.pbc)
    if periodic and "stress" in getattr(calc, "implemented_properties", ()):
        results["stress"] = clean.get_stress()
    for key, value in results.items():
        value = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"the oracle returned a non-finite {key}")
        results[key] = float(value) if key == "energy" else value
    return results


def label(calc, atoms, retries: int = 0) -> Atoms:
    """A copy of ``atoms`` (numbers, positions, cell, pbc only) with ``calc``'s energy, forces
    and, for a periodic cell when the calculator has it, stress frozen in a
    SinglePointCalculator.

    A calculator that raises or returns non-finite values is asked again up to ``retries``
    times; then :class:`OracleError` says what went wrong.
    """
    for attempt in range(retries + 1):
        try:
            results = _reference(calc, atoms)
            break
        except Exception as error:  # any failure of a foreign calculator
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            if attempt < retries:
                logger.warning("oracle failed (%s); retrying (%d left)", reason, retries - attempt)
    else:
        tries = "" if retries == 0 else f" (after {retries + 1} tries)"
        raise OracleError(f"the oracle failed{tries}: {reason}")
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.calc = SinglePointCalculator(frame, **results)
    return frame
