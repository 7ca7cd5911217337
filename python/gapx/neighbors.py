"""Neighbour lists from the C++ cell-list builder, with ASE's conventions."""

from __future__ import annotations

import numpy as np

from . import _core
from ._arrays import as_cutoff, atoms_arrays


def neighbor_list(
    atoms, cutoff: float, *, n_threads: int | None = None, max_bytes: int | None = None
):
    """Full neighbour list of ``atoms``: all pairs with distance < ``cutoff``.

    Same meaning as ``ase.neighborlist.neighbor_list("ijSdD", atoms, cutoff)``: both i→j and j→i
    are listed, periodic images (including an atom's own, when the cutoff exceeds the cell) appear
    as separate pairs, and ``D = r[j] - r[i] + S @ cell``.

    Parameters
    ----------
    atoms : ase.Atoms
        Any periodicity, any (triclinic) cell; atoms need not lie inside the cell.
    cutoff : float
        Cutoff radius in Å.
    n_threads : int, optional
        OpenMP threads; default OpenMP's.
    max_bytes : int, optional
        Memory budget of the result (60 bytes per pair); default half of the physical memory.
        A larger neighbour list raises ValueError before anything is allocated.

    Returns
    -------
    i, j : (n_pairs,) int64
        Centre and neighbour indices, grouped by increasing ``i``.
    S : (n_pairs, 3) int32
        Lattice shift of the neighbour image.
    d : (n_pairs,) float64
        Distances in Å.
    D : (n_pairs, 3) float64
        Distance vectors in Å.
    """
    positions, cell, pbc, _ = atoms_arrays(atoms)
    cutoff = as_cutoff(cutoff)
    threads = 0 if n_threads is None else int(n_threads)
    if threads < 0:
        raise ValueError(f"n_threads must be positive, got {n_threads}")
    i, j, shifts, distances, vectors = _core.neighbor_list(
        positions, cell, pbc, cutoff, n_threads=threads, max_bytes=int(max_bytes or 0)
    )
    return i, j, np.asarray(shifts), distances, np.asarray(vectors)


# Atoms closer than this are refused as overlapping: no physical structure has them, and a
# model's prediction there would be a silently meaningless number.
OVERLAP_DISTANCE = 0.1  # Å


def check_no_overlap(atoms, min_distance: float = OVERLAP_DISTANCE) -> None:
    """Raise ValueError naming the first pair of atoms closer than ``min_distance`` (Å)."""
    if len(atoms) < 2 and not any(atoms.pbc):
        return
    i, j, _, d, _ = neighbor_list(atoms, min_distance)
    if len(i):
        k = int(np.argmin(d))
        raise ValueError(
            f"atoms {int(i[k])} and {int(j[k])} overlap: {d[k]:.3g} Å apart "
            f"(below {min_distance} Å)"
        )
