"""The regularised least-squares solve by QR, whole or streamed in blocks of rows."""

from __future__ import annotations

import numpy as np
import scipy.linalg


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
    return triangular_solve(qr[: n_columns + 1, : n_columns + 1], n_columns)


def triangular_solve(R_aug: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and R (M, M) from the (M + 1)^2 factor of the augmented system ``[A | b]``;
    refuses a rank-deficient R."""
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
        return triangular_solve(self.R, self.n_columns)


def stacked_factor(n_columns: int, *parts: np.ndarray) -> np.ndarray:
    """R (M+1, M+1) of the rows ``parts`` stacked in order (each a block of rows or an R
    factor, which stands for its rows), or the stacked rows themselves while they are no taller
    than wide: the TSQR step, ``R^T R = sum of parts^T parts``."""
    if sum(p.shape[0] for p in parts) <= n_columns + 1:
        return np.asfortranarray(np.concatenate(parts))
    solver = StreamingQR(n_columns)
    for part in parts:
        solver.add_rows(part)
    return solver.R
