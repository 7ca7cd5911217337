"""Random structures for tests (importable from any test module)."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def random_triclinic_cell(rng, scale: float = 6.0, shear: float = 0.4) -> np.ndarray:
    """A random right-handed triclinic cell: diagonal ~scale, off-diagonal shear ~shear*scale."""
    cell = np.diag(rng.uniform(0.8, 1.2, 3) * scale)
    cell += rng.uniform(-shear, shear, (3, 3)) * scale * (1 - np.eye(3))
    if np.linalg.det(cell) < 0:
        cell[[0, 1]] = cell[[1, 0]]
    return cell


def random_structure(rng, symbols, n_atoms, cell=None, pbc=True, min_distance=0.9) -> Atoms:
    """Random atoms in ``cell`` (or a 6 Å box when non-periodic) kept ``min_distance`` apart."""
    if cell is None:
        cell = random_triclinic_cell(rng)
    positions = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, 1, 3) @ cell
        if all(np.linalg.norm(trial - p) >= min_distance for p in positions):
            positions.append(trial)
    chosen = [symbols[k % len(symbols)] for k in range(n_atoms)]
    return Atoms(chosen, positions=positions, cell=cell, pbc=pbc)
