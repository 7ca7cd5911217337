"""Design-matrix rows of a block of frames: every observation as a functional of local energies.

Notation (ARCHITECTURE.md, "The sparse GP in one place"): sparse points ``x_m`` per term and per
kind, local energy ``eps(x) = sum_m alpha_m delta^2 k(x, x_m)``. Every observation (a total
energy, a force component, a virial component) is a linear functional of local energies, so a row
of ``K_NM`` is that functional applied to ``delta^2 k(., x_m)``:

* energy of a frame: sum over its descriptor rows of ``delta^2 k(x_i, x_m)``;
* force ``F_{j,a}``: ``-sum_i sum_f dk(x_i, x_m)/dx_f dX_{i,f}/dr_{j,a}``, obtained as one GEMM of
  the stacked descriptor gradients with the sparse points (``kernel.directional``) and a sparse
  scatter matrix summing entries onto (atom, component) rows;
* virial ``W_ab = -dE/deps_ab`` (Voigt order, symmetrised): the same with strain gradients.

The columns are the concatenation of all (term, kind) sparse sets; different sets never share a
kernel, so ``K_MM`` is block diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ..terms import DescriptorGradients, TermRows
from .sparse_set import SparseSet

# Elements of the largest temporary (gradient entries x sparse points) while assembling.
CHUNK_ELEMENTS = 1 << 22

# Voigt order xx, yy, zz, yz, xz, xy used for virial rows and stress.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass
class BlockLayout:
    """Where each frame of a block puts its observations (rows of the block's design matrix)."""

    n_obs: int
    energy_row: np.ndarray  # (n_frames,) row or -1
    force_row: np.ndarray  # (n_frames,) first row of 3*n_atoms force rows, or -1
    virial_row: np.ndarray  # (n_frames,) first of 6 virial rows, or -1
    atom_frame: np.ndarray  # (n_atoms_block,) frame of each atom
    atom_local: np.ndarray  # (n_atoms_block,) index of the atom inside its frame


def block_layout(n_atoms: list[int], has_energy, has_forces, has_virial) -> BlockLayout:
    """Row layout: per frame its energy, then 3 n_atoms forces, then 6 virials (if labelled)."""
    n_frames = len(n_atoms)
    energy_row = np.full(n_frames, -1, dtype=np.int64)
    force_row = np.full(n_frames, -1, dtype=np.int64)
    virial_row = np.full(n_frames, -1, dtype=np.int64)
    row = 0
    for f in range(n_frames):
        if has_energy[f]:
            energy_row[f] = row
            row += 1
        if has_forces[f]:
            force_row[f] = row
            row += 3 * n_atoms[f]
        if has_virial[f]:
            virial_row[f] = row
            row += 6
    counts = np.asarray(n_atoms, dtype=np.int64)
    atom_frame = np.repeat(np.arange(n_frames, dtype=np.int64), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    atom_local = np.arange(int(counts.sum()), dtype=np.int64) - starts[atom_frame]
    return BlockLayout(row, energy_row, force_row, virial_row, atom_frame, atom_local)


def stack_rows(rows: list[TermRows], n_atoms: list[int]) -> tuple[TermRows, np.ndarray]:
    """Concatenate per-frame rows of one term, renumbering rows and atoms; also row -> frame."""
    atom_offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64)
    row_counts = np.array([r.n_rows for r in rows], dtype=np.int64)
    row_offsets = np.concatenate([[0], np.cumsum(row_counts)[:-1]]).astype(np.int64)
    frame_of_row = np.repeat(np.arange(len(rows), dtype=np.int64), row_counts)
    with_grad = all(r.gradients is not None for r in rows)
    grads = None
    if with_grad:
        values = np.concatenate([r.gradients.values for r in rows])
        pairs = np.concatenate(
            [
                r.gradients.pairs + np.array([ro, ao])
                for r, ro, ao in zip(rows, row_offsets, atom_offsets, strict=True)
            ]
        ).astype(np.int64)
        grads = DescriptorGradients(
            pairs=pairs,
            values=values,
            strain=np.concatenate([r.gradients.strain for r in rows]),
        )
    stacked = TermRows(
        X=np.concatenate([r.X for r in rows]),
        kinds=np.concatenate([r.kinds for r in rows]),
        owner_rows=np.concatenate(
            [r.owner_rows + ro for r, ro in zip(rows, row_offsets, strict=True)]
        ),
        owner_atoms=np.concatenate(
            [r.owner_atoms + ao for r, ao in zip(rows, atom_offsets, strict=True)]
        ),
        owner_weights=np.concatenate([r.owner_weights for r in rows]),
        gradients=grads,
    )
    return stacked, frame_of_row


def _scatter(rows: np.ndarray, n_rows: int, n_cols: int, sign: float = 1.0):
    """Sparse (n_rows, n_cols) matrix with ``sign`` at (rows[c], c) for rows[c] >= 0."""
    cols = np.nonzero(rows >= 0)[0]
    data = np.full(cols.size, sign)
    return scipy.sparse.csr_matrix((data, (rows[cols], cols)), shape=(n_rows, n_cols))


def assemble_block(
    term_rows: list[TermRows],
    frames_of_rows: list[np.ndarray],
    kernels: list,
    sparse_sets: list[SparseSet],
    layout: BlockLayout,
    n_columns: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Unscaled design-matrix rows (layout.n_obs, n_columns) of one block of frames.

    ``term_rows[t]`` are the stacked rows (with gradients) of term ``t`` over the block and
    ``frames_of_rows[t]`` their frame. Rows of kinds without sparse points contribute nothing.
    ``out`` (zeroed, any memory order) receives the rows when given.
    """
    if out is None:
        out = np.zeros((layout.n_obs, n_columns))
    elif out.shape != (layout.n_obs, n_columns):
        raise ValueError(f"out has shape {out.shape}, expected {(layout.n_obs, n_columns)}")
    K = out
    for s in sparse_sets:
        rows, frame_of_row, kernel = term_rows[s.term], frames_of_rows[s.term], kernels[s.term]
        selected = np.nonzero(rows.kinds == s.kind)[0]
        if selected.size == 0:
            continue
        local = np.full(rows.n_rows, -1, dtype=np.int64)
        local[selected] = np.arange(selected.size)
        X = rows.X[selected]
        Z = s.points
        d2 = s.delta**2
        cols = s.columns
        frames = frame_of_row[selected]

        energy_rows = layout.energy_row[frames]
        if np.any(energy_rows >= 0):
            k = kernel(X, Z)
            K[:, cols] += _scatter(energy_rows, layout.n_obs, selected.size, d2) @ k

        grads = rows.gradients
        entry = np.nonzero(local[grads.pairs[:, 0]] >= 0)[0]
        entry = entry[layout.force_row[layout.atom_frame[grads.pairs[entry, 1]]] >= 0]
        # Chunks of gradient entries keep the (3 entries, M) kernel derivatives bounded; each
        # chunk needs the dot products of its own centres only.
        step = max(1, CHUNK_ELEMENTS // (3 * Z.shape[0]))
        for first in range(0, entry.size, step):
            part = entry[first : first + step]
            D = grads.values[part].reshape(-1, grads.values.shape[2])
            centres, inverse = np.unique(local[grads.pairs[part, 0]], return_inverse=True)
            dk = kernel.directional(X[centres], Z, D, np.repeat(inverse, 3))
            atom = grads.pairs[part, 1]
            start = layout.force_row[layout.atom_frame[atom]]
            target = (
                start[:, None] + 3 * layout.atom_local[atom][:, None] + np.arange(3)[None, :]
            ).reshape(-1)
            # Force = -dE/dr; only the chunk's rows are touched (a full-height product per chunk
            # would make the assembly quadratic in atoms).
            touched, local_target = np.unique(target, return_inverse=True)
            K[touched, cols] += _scatter(local_target, touched.size, target.size, -d2) @ dk

        vstart = layout.virial_row[frames]
        if np.any(vstart >= 0):
            strain = grads.strain[selected]
            voigt = np.stack(
                [0.5 * (strain[:, a, b] + strain[:, b, a]) for a, b in VOIGT], axis=1
            ).reshape(-1, strain.shape[3])
            centre = np.repeat(np.arange(selected.size), 6)
            dk = kernel.directional(X, Z, voigt, centre)
            target = np.where(
                vstart[:, None] >= 0, vstart[:, None] + np.arange(6)[None, :], -1
            ).reshape(-1)
            # Virial = -dE/deps.
            K[:, cols] += _scatter(target, layout.n_obs, target.size, -d2) @ dk
    return K
