"""Reference labels of a training frame: energy, forces, virial (or stress), config_type, sigmas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

#: Where each label lives by default, by label name (``GAP(..., energy_key=...)`` renames them).
DEFAULT_KEYS = {
    "energy": "energy",
    "forces": "forces",
    "virial": "virial",
    "stress": "stress",
    "config_type": "config_type",
}


@dataclass
class FrameLabels:
    """Validated labels of one frame (``None`` when absent).

    ``virial`` is the 3x3 virial W = -dE/deps in eV (a stress label is converted to
    ``-stress * volume``); sigmas are per-frame overrides from ``info``.
    """

    energy: float | None
    forces: np.ndarray | None
    virial: np.ndarray | None
    config_type: str | None
    energy_sigma: float | None = None
    force_sigma: float | None = None
    virial_sigma: float | None = None


def _lookup(atoms, key: str, where: str):
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    if results and key in results:
        return results[key]
    if where == "arrays":
        return atoms.arrays.get(key)
    return atoms.info.get(key)


def _refuse_bool(value, what: str, frame: int) -> None:
    """A label given as a bool (``energy=True``) is a mistake, not the number 1."""
    if isinstance(value, (bool, np.bool_)) or np.asarray(value).dtype == bool:
        raise ValueError(f"frame {frame}: {what} is a bool ({value!r}), not a number")


def _finite_array(value, shape_ok, what: str, frame: int, expected: str) -> np.ndarray:
    _refuse_bool(value, what, frame)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"frame {frame}: {what} is not numeric ({value!r})") from None
    if not shape_ok(array.shape):
        raise ValueError(f"frame {frame}: {what} has shape {array.shape}, expected {expected}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"frame {frame}: {what} contains NaN or infinite values")
    return array


def _sigma_override(atoms, key: str, frame: int) -> float | None:
    if key not in atoms.info:
        return None
    _refuse_bool(atoms.info[key], key, frame)
    try:
        value = float(atoms.info[key])
    except (TypeError, ValueError):
        raise ValueError(f"frame {frame}: {key} must be a number") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"frame {frame}: {key} must be positive, got {value}")
    return value


def extract_labels(
    atoms,
    frame: int,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    virial_key: str = "virial",
    stress_key: str = "stress",
    config_type_key: str = "config_type",
) -> FrameLabels:
    """Find and validate the labels of ``atoms`` (frame number ``frame`` for messages).

    Each key is looked up first in the attached calculator's ``results`` (ASE's extxyz reader
    puts energy, forces and stress there), then in ``info`` (energy, virial, stress) or
    ``arrays`` (forces). ``virial``: 3x3 or 9 values in eV; ``stress``: 6 Voigt or 3x3 values in
    eV/Å^3, converted to ``virial = -stress * volume``. Both need a periodic 3-d cell.
    """
    n_atoms = len(atoms)
    if n_atoms == 0:
        raise ValueError(f"frame {frame}: no atoms")
    energy = _lookup(atoms, energy_key, "info")
    if energy is not None:
        _refuse_bool(energy, "energy", frame)
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"frame {frame}: energy {energy!r} is not a single number") from None
        if not np.isfinite(energy):
            raise ValueError(f"frame {frame}: energy is NaN or infinite")
    forces = _lookup(atoms, forces_key, "arrays")
    if forces is not None:
        forces = _finite_array(
            forces, lambda s: s == (n_atoms, 3), "forces", frame, f"({n_atoms}, 3)"
        )
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
    virial = _lookup(atoms, virial_key, "info")
    if virial is not None:
        virial = _finite_array(
            virial, lambda s: s in ((3, 3), (9,)), "virial", frame, "(3, 3) or (9,)"
        ).reshape(3, 3)
    stress = _lookup(atoms, stress_key, "info")
    if stress is not None:
        stress = _finite_array(
            stress, lambda s: s in ((3, 3), (6,)), "stress", frame, "(6,) or (3, 3)"
        )
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
    if (virial is not None or stress is not None) and not periodic:
        which = "virial" if virial is not None else "stress"
        raise ValueError(f"frame {frame}: {which} label on a frame without a periodic 3-d cell")
    if stress is not None:
        from_stress = -stress * atoms.get_volume()
        if virial is not None and not np.allclose(virial, from_stress, rtol=1e-6, atol=1e-8):
            raise ValueError(f"frame {frame}: virial and stress labels disagree")
        virial = from_stress
    if energy is None and forces is None and virial is None:
        raise ValueError(
            f"frame {frame}: no labels (looked for energy {energy_key!r}, forces {forces_key!r},"
            f" virial {virial_key!r}, stress {stress_key!r})"
        )
    config_type = atoms.info.get(config_type_key)
    return FrameLabels(
        energy=energy,
        forces=forces,
        virial=virial,
        config_type=None if config_type is None else str(config_type),
        energy_sigma=_sigma_override(atoms, "energy_sigma", frame),
        force_sigma=_sigma_override(atoms, "force_sigma", frame),
        virial_sigma=_sigma_override(atoms, "virial_sigma", frame),
    )
