"""Neighbour lists from the C++ cell-list builder, and the per-structure context sharing them."""

from __future__ import annotations

import numpy as np

from . import _core
from .validation import as_cutoff, atoms_arrays

# Atoms closer than this are refused as overlapping: no physical structure has them, and a
# model's prediction there would be a silently meaningless number.
OVERLAP_DISTANCE = 0.1  # Å


def _threads(n_threads: int | None) -> int:
    threads = 0 if n_threads is None else int(n_threads)
    if threads < 0:
        raise ValueError(f"n_threads must be positive, got {n_threads}")
    return threads


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
    context = StructureContext(atoms, n_threads=n_threads, max_bytes=max_bytes)
    return context.neighbors(cutoff).arrays()


class StructureContext:
    """One structure's validated arrays and its neighbour lists, each built once per cutoff.

    A prediction or a fit step asks the context for the neighbour list of each cutoff it needs
    (every term, the baseline); terms with the same cutoff share one list, and the overlap check
    reads the largest list already built, so a model whose terms share a cutoff builds one list
    per structure. (A smaller cutoff is not cut from a larger list: pair order, and so the last
    bits of every sum, would then differ from a list built for it.) ``n_built`` counts the
    cell-list builds.

    The context holds a snapshot of the positions: make a new one when the structure changes.
    ``max_bytes`` bounds each list's memory (default: half of the physical memory).
    """

    def __init__(self, atoms, n_threads: int | None = None, max_bytes: int | None = None):
        self.positions, self.cell, self.pbc, self.numbers = atoms_arrays(atoms)
        self.n_threads = _threads(n_threads)
        # 0: the C++ default budget (half of the physical memory).
        self.max_bytes = int(max_bytes or 0)
        self.n_built = 0
        self._lists: dict[float, _core.NeighborList] = {}

    def neighbors(self, cutoff: float) -> _core.NeighborList:
        """The full neighbour list for ``cutoff`` Å (opaque; ``.arrays()`` gives i, j, S, d, D)."""
        cutoff = as_cutoff(cutoff)
        if cutoff not in self._lists:
            self._lists[cutoff] = _core.build_neighbor_list(
                self.positions,
                self.cell,
                self.pbc,
                cutoff,
                n_threads=self.n_threads,
                max_bytes=self.max_bytes,
            )
            self.n_built += 1
        return self._lists[cutoff]

    def check_no_overlap(self, min_distance: float = OVERLAP_DISTANCE) -> None:
        """Raise ValueError naming the closest pair of atoms if closer than ``min_distance``.

        Reads the largest list already built (every pair closer than ``min_distance`` is in it),
        so the check costs no cell-list pass of its own once a term has asked for its list.
        """
        if len(self.positions) < 2 and not any(self.pbc):
            return
        cutoff = max(self._lists, default=min_distance)
        i, j, _, d, _ = self.neighbors(max(cutoff, min_distance)).arrays()
        if d.size == 0:
            return
        k = int(np.argmin(d))
        if d[k] < min_distance:
            raise ValueError(
                f"atoms {int(i[k])} and {int(j[k])} overlap: {d[k]:.3g} Å apart "
                f"(below {min_distance} Å)"
            )
