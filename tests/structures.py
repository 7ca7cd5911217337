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


def emt_labelled(atoms, stress: bool = True) -> Atoms:
    """``atoms`` with EMT's energy, forces (and stress) frozen in a SinglePointCalculator."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def strained_fcc_cells(rng, n_frames: int, repeat=(2, 2, 1), strain=0.03, rattle=0.12):
    """Rattled fcc Cu cells under random symmetric strains, EMT-labelled (energy, forces,
    stress)."""
    from ase.build import bulk

    base = bulk("Cu", "fcc", a=3.61, cubic=True) * repeat
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        eps = strain * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rattle * rng.standard_normal(atoms.positions.shape)
        frames.append(emt_labelled(atoms))
    return frames


def random_cu_al_cells(rng, n_frames: int) -> list:
    """Random 5-atom Cu/Al triclinic cells, atoms at least 2 Å apart, EMT-labelled."""
    return [
        emt_labelled(
            random_structure(
                rng, ["Cu", "Al"], 5, cell=random_triclinic_cell(rng, 5.0), min_distance=2.0
            )
        )
        for _ in range(n_frames)
    ]
