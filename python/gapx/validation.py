"""The one place for argument checks: numbers, integers, species, arrays and structures.

Every user-facing setting is validated here before it is stored or crosses into the C++ core,
so each kind of check has one implementation and one wording of its error message.
"""

from __future__ import annotations

import math

import numpy as np


def as_positions(positions) -> np.ndarray:
    """Return positions as a C-contiguous float64 (n_atoms, 3) array, refusing NaN/inf."""
    array = np.ascontiguousarray(positions, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.unique(np.nonzero(~np.isfinite(array))[0])
        raise ValueError(f"positions contain NaN or infinite values (atoms {bad[:10].tolist()})")
    return array


def as_cell(cell) -> np.ndarray:
    """Return the cell as a C-contiguous float64 (3, 3) array, one lattice vector per row."""
    array = np.ascontiguousarray(np.asarray(cell, dtype=np.float64))
    if array.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("cell contains NaN or infinite values")
    return array


def as_pbc(pbc) -> tuple[bool, bool, bool]:
    """Return periodicity as three Python bools (a scalar applies to all directions)."""
    array = np.asarray(pbc, dtype=bool)
    if array.ndim == 0:
        array = np.repeat(array, 3)
    if array.shape != (3,):
        raise ValueError(f"pbc must be a bool or three bools, got shape {array.shape}")
    return tuple(bool(p) for p in array)


def check_periodic_cell(cell: np.ndarray, pbc: tuple[bool, bool, bool]) -> None:
    """Refuse a cell whose periodic vectors are zero or linearly dependent."""
    vectors = cell[list(pbc)]
    if len(vectors) == 0:
        return
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(norms == 0.0):
        zero = [k for k in range(3) if pbc[k] and np.linalg.norm(cell[k]) == 0.0]
        raise ValueError(f"cell vector(s) {zero} are zero but periodic: degenerate cell")
    singular = np.linalg.svd(vectors, compute_uv=False)
    if singular[-1] <= 1e-10 * singular[0]:
        raise ValueError(
            "the periodic cell vectors are linearly dependent: zero-volume or degenerate cell"
        )


def _refuse_bool(name: str, value) -> None:
    # True is 1 to Python, but a setting given as a bool is a mistake, not a number.
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}")


def positive_number(name: str, value) -> float:
    """Return ``value`` as a float, refusing non-numbers (bools too), NaN, infinities and values
    <= 0."""
    _refuse_bool(name, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number


def positive_integer(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, refusing bools, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def finite_number(name: str, value) -> float:
    """Return ``value`` as a finite float (any sign); bools are refused."""
    _refuse_bool(name, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def chemical_symbols_list(name: str, species) -> tuple[str, ...]:
    """Return ``species`` (symbols or atomic numbers) as a tuple of symbols in the given order."""
    from ase.data import atomic_numbers, chemical_symbols

    out = []
    for value in species:
        if isinstance(value, str):
            if value not in atomic_numbers:
                raise ValueError(f"unknown chemical symbol {value!r} in {name}")
            out.append(value)
        elif isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} entries must be symbols or atomic numbers, got {value!r}")
        elif not 1 <= int(value) < len(chemical_symbols):
            raise ValueError(f"invalid atomic number {value!r} in {name}")
        else:
            out.append(chemical_symbols[int(value)])
    return tuple(out)


#: The largest atomic number (oganesson).
MAX_ATOMIC_NUMBER = 118


def as_atomic_numbers(numbers, minimum: int = 1) -> np.ndarray:
    """Return atomic numbers as a C-contiguous int32 (n_atoms,) array.

    Checked before the cast, so that a number beyond int32 (2**32 + 14) cannot wrap around into
    an element: integers only, each between ``minimum`` and :data:`MAX_ATOMIC_NUMBER`.
    ``minimum=0`` admits ASE's dummy atom X (``Atoms(positions=...)`` without symbols), which
    geometry (neighbour lists) handles and no model has.
    """
    array = np.asarray(numbers)
    if array.ndim != 1:
        raise ValueError(f"atomic numbers must be a 1-d array, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"atomic numbers must be integers, got dtype {array.dtype}")
    bad = np.nonzero((array < minimum) | (array > MAX_ATOMIC_NUMBER))[0]
    if bad.size:
        raise ValueError(
            f"atomic numbers must be between {minimum} and {MAX_ATOMIC_NUMBER}, got "
            f"{array[bad[:5]].tolist()} (atoms {bad[:10].tolist()})"
        )
    return np.ascontiguousarray(array, dtype=np.int32)


def as_frames(frames, what: str = "frames") -> list:
    """``frames`` as a list of ase.Atoms: one Atoms is one frame; other entries are refused."""
    from ase import Atoms

    if isinstance(frames, Atoms):
        return [frames]
    if isinstance(frames, (str, bytes)) or not hasattr(frames, "__iter__"):
        raise TypeError(f"{what} must be an ase.Atoms or a list of them, got {type(frames)!r}")
    frames = list(frames)
    for index, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"{what}[{index}] is not an ase.Atoms: {type(atoms)!r}")
    return frames


def as_cutoff(cutoff) -> float:
    """Return the cutoff as a positive finite float."""
    return positive_number("cutoff", cutoff)


def as_cutoff_and_width(cutoff, width) -> tuple[float, float]:
    """A cutoff and the width of the smooth decay that ends at it, in (0, cutoff]."""
    cutoff = as_cutoff(cutoff)
    width = positive_number("cutoff_transition_width", width)
    if width > cutoff:
        raise ValueError(f"cutoff_transition_width must be in (0, cutoff={cutoff}], got {width!r}")
    return cutoff, width


def atoms_arrays(atoms) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool, bool], np.ndarray]:
    """Split an ase.Atoms into validated (positions, cell, pbc, numbers) arrays.

    Atomic numbers are 0 (ASE's dummy atom X) to 118 (:func:`as_atomic_numbers`); a model then
    reports an X as a species it does not have, and :func:`gapx.GAP.fit` refuses it.
    """
    pbc = as_pbc(atoms.pbc)
    cell = as_cell(atoms.cell.array)
    check_periodic_cell(cell, pbc)
    positions = as_positions(atoms.positions)
    numbers = as_atomic_numbers(atoms.numbers, minimum=0)
    return positions, cell, pbc, numbers


def described_settings(data, type_names: tuple[str, ...], what: str) -> dict:
    """The settings of a ``to_dict()`` description: ``data`` without its ``"type"`` key.

    Refuses a non-dict, or a ``"type"`` (when present) not among ``type_names``.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{what}.from_dict needs a dict, got {type(data).__name__}")
    if data.get("type", type_names[0]) not in type_names:
        raise ValueError(f"not an {what} description: type is {data.get('type')!r}")
    return {k: v for k, v in data.items() if k != "type"}
