"""Posterior variances of linear functionals of local energies."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from .sparse_set import SparseSet


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


def prior_variances(kernel, X, owners, d2: float, block: int = 2048) -> tuple[np.ndarray, float]:
    """Prior variances of per-atom local energies and of their sum, for one sparse kind.

    ``X`` (n_rows, F) are the kind's rows, ``owners`` (n_atoms, n_rows) sparse maps row local
    energies to atoms, ``d2`` is delta^2. Cross-covariances between rows are included, computed
    in blocks of rows so memory stays O(block * n_rows).
    """
    n_rows = X.shape[0]
    owners = scipy.sparse.csr_matrix(owners)
    identity = (
        owners.shape[0] >= n_rows
        and owners.nnz == n_rows
        and np.all(owners.data == 1.0)
        and np.all(np.diff(owners.indptr) <= 1)
    )
    total = 0.0
    per_atom = np.zeros(owners.shape[0])
    ownersT = owners.T.tocsr()
    if identity:
        per_atom = owners @ (d2 * kernel.diag(X))
    for b0 in range(0, n_rows, block):
        Kb = d2 * kernel(X[b0 : b0 + block], X)
        weight = np.asarray(ownersT[b0 : b0 + block].sum(axis=1)).reshape(-1)
        total += float(weight @ Kb @ np.asarray(ownersT.sum(axis=1)).reshape(-1))
        if not identity:
            KW = (owners @ Kb.T).T  # (block, n_atoms)
            per_atom += np.asarray(ownersT[b0 : b0 + block].multiply(KW).sum(axis=0)).reshape(-1)
    return per_atom, total
