"""Sparse GP machinery: sparse-point selection, design-matrix rows, the QR solve, variances.

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

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse

from .descriptors.base import TermRows

logger = logging.getLogger("gapx")

SPARSE_METHODS = ("cur", "fps", "random", "all", "uniform")

# Voigt order xx, yy, zz, yz, xz, xy used for virial rows and stress.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def select_sparse(
    X: np.ndarray, n_sparse: int, method: str, rng: np.random.Generator, uniform=None
) -> np.ndarray:
    """Choose sparse points among the rows of ``X`` (n_rows, F); returns (n_chosen, F).

    Methods: "cur" (rows sampled without replacement with probability proportional to their
    leverage scores in the top-``n_sparse`` right singular subspace; deterministic for a given
    generator), "fps" (farthest-point sampling in feature space from a random start), "random",
    "all" (every row), "uniform" (``uniform(X, n)`` builds the points, e.g. a grid of distances).
    When ``n_sparse`` is at least the number of rows, every row is used (except for "uniform").
    """
    X = np.asarray(X, dtype=np.float64)
    n_rows = X.shape[0]
    if method not in SPARSE_METHODS:
        raise ValueError(f"sparse_method must be one of {SPARSE_METHODS}, got {method!r}")
    if n_rows == 0:
        raise ValueError("cannot select sparse points from zero descriptor rows")
    if method == "uniform":
        if uniform is None:
            raise ValueError("sparse_method='uniform' is only available for the two-body term")
        return np.asarray(uniform(X, n_sparse), dtype=np.float64)
    if method == "all" or n_sparse >= n_rows:
        return X.copy()
    if method == "random":
        chosen = rng.choice(n_rows, size=n_sparse, replace=False)
    elif method == "cur":
        chosen = _cur_rows(X, n_sparse, rng)
    else:
        chosen = _farthest_points(X, n_sparse, rng)
    return X[np.sort(chosen)]


def leverage_scores(X: np.ndarray, rank: int) -> np.ndarray:
    """Row leverage scores of ``X`` in its top-``rank`` left singular subspace (sum = rank).

    Computed from the eigenvectors of the smaller Gram matrix (X X^T or X^T X) rather than a
    full SVD: the scores only need the leading singular subspace, and this is several times
    cheaper for the tall or wide matrices of training environments.
    """
    n_rows, n_features = X.shape
    if n_rows <= n_features:
        s2, U = scipy.linalg.eigh(X @ X.T, check_finite=False)
    else:
        s2, V = scipy.linalg.eigh(X.T @ X, check_finite=False)
        U = None
    order = np.argsort(s2)[::-1]
    s2 = s2[order]
    keep = order[: min(rank, int(np.sum(s2 > max(s2[0], 0.0) * 1e-12)))]
    if U is not None:
        return np.sum(U[:, keep] ** 2, axis=1)
    # Left singular vectors u_k = X v_k / s_k.
    projected = X @ V[:, keep]
    return np.sum(projected**2 / s2[: keep.size][None, :], axis=1)


def _cur_rows(X: np.ndarray, n_sparse: int, rng: np.random.Generator) -> np.ndarray:
    scores = leverage_scores(X, n_sparse)
    # Weighted sampling without replacement (Efraimidis-Spirakis): smallest Exp(1)/p keys.
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=X.shape[0]) / scores
    return np.argsort(keys, kind="stable")[:n_sparse]


def _farthest_points(X: np.ndarray, n_sparse: int, rng: np.random.Generator) -> np.ndarray:
    chosen = np.empty(n_sparse, dtype=np.int64)
    chosen[0] = rng.integers(X.shape[0])
    sq_norms = np.einsum("if,if->i", X, X)
    min_sq = np.full(X.shape[0], np.inf)
    for k in range(1, n_sparse):
        last = X[chosen[k - 1]]
        dist = sq_norms - 2.0 * (X @ last) + last @ last
        np.minimum(min_sq, dist, out=min_sq)
        min_sq[chosen[:k]] = -np.inf
        chosen[k] = int(np.argmax(min_sq))
    return chosen


@dataclass
class SparseSet:
    """Sparse points of one (term, kind): columns ``offset : offset + size`` of K_NM."""

    term: int
    kind: int
    points: np.ndarray
    offset: int
    delta: float
    jitter: float = 0.0
    factor: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.points.shape[0]

    @property
    def columns(self) -> slice:
        return slice(self.offset, self.offset + self.size)


def kmm_cholesky(kernel, points: np.ndarray, delta: float, jitter: float):
    """Lower Cholesky factor L of ``delta^2 K(points, points) + jitter I`` and the jitter used.

    When the factorisation fails (numerically singular K_MM, e.g. duplicated sparse points), the
    jitter is raised tenfold, starting from 1e-12 of the largest diagonal element, until it
    succeeds; a warning says so. The same factor is used for the solve and for the variance.
    """
    K = delta**2 * kernel(points, points)
    scale = float(np.max(np.diag(K))) if K.size else 1.0
    trial = float(jitter)
    while True:
        try:
            L = scipy.linalg.cholesky(
                K + trial * np.eye(K.shape[0]), lower=True, check_finite=False
            )
            if trial != jitter:
                logger.warning("K_MM not positive definite: sparse_jitter raised to %.3g", trial)
            return L, trial
        except np.linalg.LinAlgError:
            if trial >= 1e-2 * scale:
                raise ValueError(
                    "K_MM is not positive definite even with jitter "
                    f"{trial:.3g}: sparse points are degenerate"
                ) from None
            trial = max(trial * 10.0, 1e-12 * scale)


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
        from .descriptors.base import DescriptorGradients

        # Entries are grouped by the kind of their row, so that assemble_block reads each
        # kind's gradients as one contiguous slice: the values are copied once, here.
        entry_kinds = [r.kinds[r.gradients.pairs[:, 0]] for r in rows]
        n_entries = sum(k.size for k in entry_kinds)
        first = rows[0].gradients.values
        values = np.empty((n_entries, 3, first.shape[2]), dtype=first.dtype)
        pairs = np.empty((n_entries, 2), dtype=np.int64)
        position = 0
        for kind in np.unique(np.concatenate(entry_kinds)):
            for r, kinds, ro, ao in zip(rows, entry_kinds, row_offsets, atom_offsets, strict=True):
                mask = kinds == kind
                count = int(np.count_nonzero(mask))
                if count == 0:
                    continue
                block = slice(position, position + count)
                np.compress(mask, r.gradients.values, axis=0, out=values[block])
                pairs[block] = r.gradients.pairs[mask] + np.array([ro, ao])
                position += count
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
        atom = grads.pairs[entry, 1]
        start = layout.force_row[layout.atom_frame[atom]]
        if entry.size and np.any(start >= 0):
            if entry[-1] - entry[0] + 1 == entry.size:  # contiguous (stack_rows groups kinds)
                D = grads.values[entry[0] : entry[-1] + 1]
            else:
                D = grads.values[entry]
            D = D.reshape(-1, grads.values.shape[2])
            centre = np.repeat(local[grads.pairs[entry, 0]], 3)
            dk = kernel.directional(X, Z, D, centre)
            target = np.where(
                start[:, None] >= 0,
                start[:, None] + 3 * layout.atom_local[atom][:, None] + np.arange(3)[None, :],
                -1,
            ).reshape(-1)
            # Force = -dE/dr.
            K[:, cols] += _scatter(target, layout.n_obs, target.size, -d2) @ dk

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


def qr_solve(A: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and R from the stacked system ``A = [Lambda^-1/2 K_NM, Lambda^-1/2 y ; L^T, 0]``.

    ``A`` (n_obs + M, M + 1), Fortran order, is overwritten by LAPACK's Householder QR
    (``dgeqrf``); Q is never formed: the QR of the augmented matrix ``[A_K | b]`` has ``Q^T b`` in
    the top of its last column, so ``alpha = R^-1 (Q^T b)``. Returns ``alpha`` (M,) and the upper
    triangular ``R`` (M, M) with ``Sigma = (A_K^T A_K)^-1 = R^-1 R^-T``. :class:`StreamingQR`
    gives the same result without holding ``A``.
    """
    if A.shape[0] < A.shape[1]:
        raise ValueError(f"the stacked system has fewer rows ({A.shape[0]}) than columns")
    geqrf = scipy.linalg.lapack.get_lapack_funcs("geqrf", (A,))
    work = geqrf(A, lwork=-1)[2]
    qr, _, _, info = geqrf(A, lwork=int(work[0].real), overwrite_a=True)
    if info != 0:
        raise ValueError(f"QR factorisation failed (LAPACK info {info})")
    return _triangular_solve(qr[: n_columns + 1, : n_columns + 1], n_columns)


def _triangular_solve(R_aug: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    R = np.triu(R_aug[:n_columns, :n_columns])
    qtb = R_aug[:n_columns, n_columns].copy()
    diag = np.abs(np.diag(R))
    if diag.size and diag.min() <= diag.max() * 1e-15:
        raise ValueError(
            "the regularised design matrix is rank deficient; increase sparse_jitter or "
            "reduce the number of sparse points"
        )
    alpha = scipy.linalg.solve_triangular(R, qtb, lower=False, check_finite=False)
    return alpha, R


class StreamingQR:
    """Householder QR of a tall system fed in blocks of rows, holding only the (M+1)^2 R.

    Starts from the upper-triangular ``[L^T, 0 ; 0, 0]`` (K_MM = L L^T, block diagonal over the
    sparse sets, so its transpose is upper triangular) and folds each block of noise-scaled rows
    ``[K_NM/sigma | y/sigma]`` into R with LAPACK's triangular-pentagonal QR (``dtpqrt``): the
    same flops as one QR of the whole stacked matrix, memory O(M^2 + block), and R^T R equals
    A^T A of the full system, so the weights and Sigma are those of :func:`qr_solve`.
    """

    def __init__(self, n_columns: int):
        self.n_columns = int(n_columns)
        self.R = np.zeros((n_columns + 1, n_columns + 1), order="F")
        self._tpqrt = scipy.linalg.lapack.get_lapack_funcs("tpqrt", (self.R,))
        self.n_rows = 0

    def add_rows(self, rows: np.ndarray) -> None:
        """Fold ``rows`` (b, M + 1) into R."""
        rows = np.asfortranarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_columns + 1:
            raise ValueError(f"rows must have {self.n_columns + 1} columns, got {rows.shape}")
        if rows.shape[0] == 0:
            return
        block = max(1, min(64, self.n_columns + 1))
        R, _, _, info = self._tpqrt(0, block, self.R, rows, overwrite_a=True, overwrite_b=True)
        if info != 0:
            raise ValueError(f"QR update failed (LAPACK info {info})")
        self.R = R
        self.n_rows += rows.shape[0]

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``alpha`` (M,) and upper-triangular R (M, M)."""
        return _triangular_solve(self.R, self.n_columns)


def functional_variance(
    prior: np.ndarray,
    k: np.ndarray,
    sparse_sets: list[SparseSet],
    R: np.ndarray,
) -> np.ndarray:
    """Projected-process (DTC) posterior variance of linear functionals of local energies.

    ``prior`` (n,) is the prior variance of each functional, ``k`` (n, M) its covariance with the
    sparse points' local energies (delta^2 included). Returns
    ``prior - k K_MM^-1 k^T + k Sigma k^T`` (diagonal), clipped at zero against round-off.
    """
    var = np.array(prior, dtype=np.float64, copy=True)
    for s in sparse_sets:
        v = scipy.linalg.solve_triangular(
            s.factor, k[:, s.columns].T, lower=True, check_finite=False
        )
        var -= np.sum(v * v, axis=0)
    w = scipy.linalg.solve_triangular(R, k.T, trans="T", lower=False, check_finite=False)
    var += np.sum(w * w, axis=0)
    return np.maximum(var, 0.0)
