"""The log evidence of the sparse GP as a function of delta per term and sigma per noise group.

Form: the DTC (deterministic training conditional, projected-process) evidence

    log p(y) = log N(y | 0, Q + Lambda),   Q = K_NM K_MM^-1 K_MN,

not Titsias' variational bound (the same expression minus ``tr(K_NN - Q) / (2 sigma^2)``). Why:
DTC is the model the fit solves (its posterior mean is the fit's weights alpha and its posterior
covariance the Sigma = R^-1 R^-T every reported std uses), so the optimised hyperparameters are
those of the model that is used. Its sufficient statistics are the cross products of the design
rows and the labels; the trace term would need the prior variance of every training observation
(for a force component: second derivatives of the kernel summed over pairs of environments),
another pass as costly as a predictive-variance evaluation of the whole training set. The sparse
points are fixed before the evidence is optimised, so DTC's known pathology (inducing points
moving to overfit) does not arise; its remaining bias is towards slightly small noise where the
sparse set cannot represent the function (the trace term would penalise that).

Notation. ``A`` are the unscaled design rows with delta = 1 (columns: all sparse sets), so that
``K_NM = A D`` and ``K_MM = D K1`` with ``D = diag(delta_t^2)`` over each term's columns and
``K1 = L L^T`` (block diagonal, delta = 1, jitter included). The noise of a row of group g is
``sigma_g r`` with a fixed scale r (sqrt(n_atoms) for energies and virials). With
``Delta = D^1/2``, ``beta_g = sigma_g^-2`` and rows and labels divided by r:

    C = K1 + Delta (sum_g beta_g A_g^T A_g) Delta,    c = Delta sum_g beta_g A_g^T y_g
    log p = -1/2 [sum_g beta_g y_g^T y_g - c^T C^-1 c] - 1/2 [log|C| - log|K1|]
            + 1/2 sum_g n_g log beta_g - sum_rows log r - N/2 log 2 pi

(Woodbury and the matrix determinant lemma in M-space; the delta factors of ``log|K_MM|``
cancel). Each group keeps its statistics as the (M+1)^2 upper-triangular factor R_g with
``R_g^T R_g = [A_g y_g]^T [A_g y_g]`` (the same cross products, held as a square root, from the
same streamed QR as the fit): an evaluation folds ``[L^T 0 ; 0 0]`` and every
``sqrt(beta_g) R_g diag(Delta, 1)`` into one triangle by LAPACK's triangular-pentagonal QR, whose
top-left block is chol(C)^T, whose last column holds ``chol(C)^-T c`` and whose corner is the
residual ``rho^2 = sum_g beta_g y_g^T y_g - c^T C^-1 c``: O(G M^3) work, independent of the
number of rows, and the conditioning of a square root (as the fit's QR).

Gradients (``v = C^-1 c``, so ``alpha = Delta^-1 v``; ``S = C^-1``):

    d log p / d log sigma_g = beta_g (||y_g - A_g Delta v||^2 + tr(S Delta G_g Delta)) - n_g
    d log p / d log delta_t = ||(L^T v)_t||^2 - |J_t| + ||(L^T R_C^-1)_{J_t,:}||_F^2

with ``J_t`` the columns of term t; both are sums of squares of triangular products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg


@dataclass
class GroupStatistics:
    """Sufficient statistics of one noise group's rows (each divided by its fixed scale r).

    ``R`` (M+1, M+1) upper triangular with ``R^T R = [A y]^T [A y]`` (delta = 1 design rows and
    their labels), ``n_rows`` the number of rows and ``log_scale`` the sum of ``log r`` over them.
    """

    R: np.ndarray
    n_rows: int
    log_scale: float = 0.0


def fold_triangle(R: np.ndarray, triangle: np.ndarray) -> np.ndarray:
    """R factor of ``[R ; triangle]`` (both upper triangular (n, n)), in place of R (Fortran
    order); ``triangle`` is left as it was. Triangle-aware: a third of a dense QR's flops."""
    tpqrt = scipy.linalg.lapack.get_lapack_funcs("tpqrt", (R,))
    n = R.shape[0]
    out, _, _, info = tpqrt(
        n, max(1, min(64, n)), R, np.array(triangle, order="F"), overwrite_a=True, overwrite_b=True
    )
    if info != 0:
        raise ValueError(f"QR update failed (LAPACK info {info})")
    return out


class Evidence:
    """The DTC log evidence and its gradient in log delta (per term) and log sigma (per group).

    Parameters
    ----------
    L : (M, M) array
        Lower Cholesky factor of the block-diagonal K_MM with delta = 1 (jitter included).
    column_term : (M,) int array
        The term of each column (delta is per term).
    groups : list of GroupStatistics
        One per noise group (all with the same M).
    """

    def __init__(self, L: np.ndarray, column_term, groups: list[GroupStatistics]):
        self.L = np.asarray(L, dtype=np.float64)
        self.column_term = np.asarray(column_term, dtype=np.int64)
        self.n_columns = self.L.shape[0]
        self.n_terms = int(self.column_term.max()) + 1 if self.column_term.size else 0
        self.groups = list(groups)
        for g in self.groups:
            if g.R.shape != (self.n_columns + 1, self.n_columns + 1):
                raise ValueError(f"group statistics have shape {g.R.shape}, expected M + 1")
        self.n_rows = sum(g.n_rows for g in self.groups)
        self._logdet_K = 2.0 * float(np.sum(np.log(np.diag(self.L))))
        self._constant = -sum(g.log_scale for g in self.groups) - 0.5 * self.n_rows * math.log(
            2 * math.pi
        )

    def factor(self, log_delta, log_sigma):
        """``(Delta per column, beta per group, R)``: R (M + 1, M + 1) has chol(C)^T as its
        top-left block, ``chol(C)^-T c`` in its last column and the residual rho in its corner."""
        M = self.n_columns
        d = np.exp(np.asarray(log_delta, dtype=np.float64))[self.column_term]
        beta = np.exp(-2.0 * np.asarray(log_sigma, dtype=np.float64))
        R = np.zeros((M + 1, M + 1), order="F")
        R[:M, :M] = self.L.T
        scale = np.append(d, 1.0)
        for g, b in zip(self.groups, beta, strict=True):
            if g.n_rows:
                R = fold_triangle(R, math.sqrt(b) * g.R * scale[None, :])
        return d, beta, R

    def value(self, log_delta, log_sigma) -> float:
        """log p(y) at ``log_delta`` (n_terms,) and ``log_sigma`` (n_groups,)."""
        return self.value_and_gradient(log_delta, log_sigma, gradient=False)[0]

    def value_and_gradient(self, log_delta, log_sigma, gradient: bool = True):
        """``(log p, d/d log_delta (n_terms,), d/d log_sigma (n_groups,))`` (gradients None
        when ``gradient`` is False)."""
        M = self.n_columns
        d, beta, R = self.factor(log_delta, log_sigma)
        Rc = np.triu(R[:M, :M])
        diag = np.abs(np.diag(Rc))
        if diag.size and diag.min() <= 0:
            return -np.inf, None, None
        rho2 = float(R[M, M] ** 2)
        n = np.array([g.n_rows for g in self.groups], dtype=np.float64)
        logp = (
            -0.5 * rho2
            - 0.5 * (2.0 * float(np.sum(np.log(diag))) - self._logdet_K)
            + 0.5 * float(np.sum(n * np.log(beta)))
            + self._constant
        )
        if not gradient:
            return logp, None, None
        v = scipy.linalg.solve_triangular(Rc, R[:M, M], lower=False, check_finite=False)
        Rinv, info = scipy.linalg.lapack.dtrtri(Rc, lower=0)
        if info != 0:
            raise ValueError(f"triangular inverse failed (LAPACK info {info})")
        Rinv = np.triu(Rinv)
        u = np.append(d * v, -1.0)
        grad_sigma = np.zeros(len(self.groups))
        for k, (g, b) in enumerate(zip(self.groups, beta, strict=True)):
            if not g.n_rows:
                continue
            residual = float(np.sum((g.R @ u) ** 2))
            trace = float(np.sum(((g.R[:M, :M] * d[None, :]) @ Rinv) ** 2))
            grad_sigma[k] = b * (residual + trace) - g.n_rows
        w2 = (self.L.T @ v) ** 2
        y2 = np.sum((self.L.T @ Rinv) ** 2, axis=1)
        per_column = w2 - 1.0 + y2
        grad_delta = np.bincount(self.column_term, weights=per_column, minlength=self.n_terms)
        return logp, grad_delta, grad_sigma

    def weights(self, log_delta, log_sigma) -> np.ndarray:
        """The posterior mean weights alpha (M,) of the fit with these hyperparameters."""
        M = self.n_columns
        d, _, R = self.factor(log_delta, log_sigma)
        v = scipy.linalg.solve_triangular(np.triu(R[:M, :M]), R[:M, M], check_finite=False)
        return v / d
