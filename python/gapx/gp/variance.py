"""Posterior variances of linear functionals of local energies, and their prior terms.

Every prediction (a local energy, the total energy, a force or virial component) is a linear
functional ``L`` of the local-energy GP. Its projected-process (DTC) posterior variance is
``L L' k - k_L K_MM^-1 k_L^T + k_L Sigma k_L^T`` (:func:`functional_variance`), with
``k_L = L k(., x_m)`` the functional's row of sparse-point covariances and ``L L' k`` its prior
variance. The priors of local energies and forces are local (pairs of rows owned by one atom,
pairs of gradient entries of one atom) and computed exactly. The prior of a total energy or a
virial couples every pair of rows of a structure: its Nyström part is exact, and the remainder
(the residual covariance, small where the sparse points describe the environments well) is
summed through a low-rank factorisation of it (:func:`summed_residual`: exact up to ``MAX_RANK``
rows per kind, linear in rows beyond).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .design import CHUNK_ELEMENTS
from .sparse_set import SparseSet


def functional_variance_parts(
    prior: np.ndarray,
    k: np.ndarray,
    sparse_sets: list[SparseSet],
    R: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of the DTC posterior variance of linear functionals of local energies.

    ``prior`` (n,) is the prior variance of each functional, ``k`` (n, M) its covariance with the
    sparse points' local energies (delta^2 included). Returns ``(residual, weights)``:
    ``prior - k K_MM^-1 k^T``, what the sparse points cannot represent, and ``k Sigma k^T``, the
    uncertainty of the weights (Sigma = R^-1 R^-T), each the diagonal (n,).
    """
    residual = np.array(prior, dtype=np.float64, copy=True)
    for s in sparse_sets:
        v = scipy.linalg.solve_triangular(
            s.factor, k[:, s.columns].T, lower=True, check_finite=False
        )
        residual -= np.sum(v * v, axis=0)
    w = scipy.linalg.solve_triangular(R, k.T, trans="T", lower=False, check_finite=False)
    return residual, np.sum(w * w, axis=0)


def functional_variance(prior, k, sparse_sets, R) -> np.ndarray:
    """DTC posterior variance ``prior - k K_MM^-1 k^T + k Sigma k^T`` of linear functionals
    (see :func:`functional_variance_parts`), clipped at zero against round-off."""
    residual, weights = functional_variance_parts(prior, k, sparse_sets, R)
    return np.maximum(residual + weights, 0.0)


#: Rank of the residual factorisation per kind for total energies and virials.
MAX_RANK = 64
# Pivots whose residual covariance columns are computed together.
PIVOT_BLOCK = 8
# The factorisation stops once the remainder's off-diagonal sum is bounded below this fraction.
RESIDUAL_RTOL = 1e-8


def padded_groups(group: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, width) indices of the items of each group (``group[item]``), -1 padded."""
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    width = int(counts.max()) if counts.size else 0
    index = np.full((n_groups, width), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(order.size) - np.repeat(starts, counts)
    index[group[order], slot] = order
    return index


def _chunks(n_groups: int, per_group: int):
    step = max(1, CHUNK_ELEMENTS // max(per_group, 1))
    for start in range(0, n_groups, step):
        yield slice(start, min(start + step, n_groups))


def _gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]`` with zeros where ``index`` is -1."""
    out = array[np.maximum(index, 0)]
    out[index < 0] = 0.0
    return out


def local_energy_prior(kernel, X, owner_rows, owner_atoms, owner_weights, n_atoms, d2):
    """Prior variance (n_atoms,) of each atom's local energy from rows ``X`` of one kind.

    Atom a's local energy is ``sum_o w_o eps(x_{r_o})`` over the rows it owns, so its prior
    variance is ``d2 sum_{o, o'} w_o w_o' k(x_r, x_r')`` over pairs of its own rows.
    """
    index = padded_groups(owner_atoms, n_atoms)
    out = np.zeros(n_atoms)
    width = index.shape[1]
    for part in _chunks(n_atoms, width * max(width, X.shape[1])):
        slots = index[part]
        weights = np.where(slots >= 0, owner_weights[np.maximum(slots, 0)], 0.0)
        rows = _gather(X, np.where(slots >= 0, owner_rows[np.maximum(slots, 0)], -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            K = kernel.batched(rows, rows)
        K = np.where((weights[:, :, None] != 0) & (weights[:, None, :] != 0), K, 0.0)
        out[part] = d2 * np.einsum("ap,apq,aq->a", weights, K, weights)
    return out


def force_prior(kernel, X, pairs, values, n_atoms, d2):
    """Prior variance (n_atoms, 3) of each force component from rows ``X`` of one kind.

    ``pairs`` (n_grad, 2) ``[row, atom]`` and ``values`` (n_grad, 3, F) are the rows' position
    gradients. ``F_ja = -sum_e g_ea . grad eps(x_e)`` over the entries e of atom j, so its prior
    variance is ``d2 sum_{e, e'} g_ea^T [d^2 k(x_e, x_e') / dx dy] g_e'a``: pairs of entries of
    one atom only, an exact and local sum.
    """
    index = padded_groups(pairs[:, 1], n_atoms)
    out = np.zeros((n_atoms, 3))
    width = index.shape[1]
    n_features = X.shape[1]
    for part in _chunks(n_atoms, width * max(width, 3 * n_features)):
        slots = index[part]
        valid = slots >= 0
        rows = _gather(X, np.where(valid, pairs[np.maximum(slots, 0), 0], -1))
        grads = _gather(values, slots)
        mask = valid[:, :, None] & valid[:, None, :]
        for a in range(3):
            with np.errstate(divide="ignore", invalid="ignore"):
                H = kernel.mixed_batched(rows, rows, grads[:, :, a], grads[:, :, a])
            out[part, a] = d2 * np.where(mask, H, 0.0).sum(axis=(1, 2))
    return out


def summed_residual(kernel, X, Phi, factor, d2, U=None, max_rank: int = MAX_RANK):
    """``sum_{i,j} c_ij`` of the residual covariances of the rows ``X`` (n, F) of one kind.

    ``c_ij = d2 k'(x_i, x_j) - Phi_i K_MM^-1 Phi_j^T``: with ``U`` None, k' is the kernel and
    ``Phi`` (n, M_s) the rows' sparse covariances (a total energy); with ``U`` (n, F) the rows'
    strain directions, k' is ``u_i^T [d^2 k / dx dy] u_j`` and ``Phi`` the rows' virial
    contributions. ``factor`` is the kind's lower Cholesky factor of K_MM.

    The residual covariance c is positive semi-definite: a pivoted Cholesky factorisation of rank
    at most ``max_rank`` (pivots: the rows with the largest remaining residual variance, i.e. the
    structure's own environments as extra inducing points) gives ``c ~ G G^T + D``, with D the
    exact diagonal of the remainder. The sum ``|G^T 1|^2 + trace D`` is exact when c has rank at
    most ``max_rank`` (always for n <= max_rank rows), never below the independent-residual
    value ``trace c``, and costs O(n max_rank (F + M_s)). It stops early once the remainder's
    off-diagonal sum is provably below ``RESIDUAL_RTOL`` of the total.
    """
    n = X.shape[0]
    if n == 0:
        return 0.0
    V = scipy.linalg.solve_triangular(factor, Phi.T, lower=True, check_finite=False)

    def columns(chosen: np.ndarray) -> np.ndarray:
        """(n, b) residual covariances of every row with the rows ``chosen``."""
        if U is None:
            prior = kernel(X, X[chosen])
        else:
            prior = kernel.mixed_batched(X, X[chosen], U, U[chosen])
        return d2 * prior - V.T @ V[:, chosen]

    remaining = d2 * (kernel.diag(X) if U is None else kernel.mixed_diag(X, U))
    remaining = remaining - np.sum(V * V, axis=0)
    tolerance = 1e-12 * float(np.max(np.abs(remaining)))
    rank = min(n, max_rank)
    G = np.zeros((n, rank), order="F")  # columns contiguous: each pivot reads them all
    k = 0
    while k < rank:
        # The remainder E is positive semi-definite, so |sum E| <= (sum_i sqrt(E_ii))^2: once
        # that bound is below RESIDUAL_RTOL of the sum, more pivots cannot change it.
        root = np.sqrt(np.maximum(remaining, 0.0))
        estimate = np.sum(G[:, :k].sum(axis=0) ** 2) + np.sum(root**2)
        if np.sum(root) ** 2 - np.sum(root**2) <= RESIDUAL_RTOL * abs(estimate):
            break
        # Pivots in blocks: the block's columns come from one batched kernel call, then each
        # pivot is eliminated in turn.
        block = np.argsort(-remaining, kind="stable")[: min(PIVOT_BLOCK, rank - k)]
        if not remaining[block[0]] > tolerance:
            break
        raw = columns(block)
        # A pivot an earlier one of its block nearly explained waits for a later block.
        floor = max(tolerance, 1e-3 * remaining[block[0]])
        for b, p in enumerate(block):
            pivot = remaining[p]
            if k == rank or not pivot > floor:
                continue
            G[:, k] = (raw[:, b] - G[:, :k] @ G[p, :k]) / np.sqrt(pivot)
            remaining = remaining - G[:, k] ** 2
            remaining[p] = 0.0  # exactly represented now (round-off would leave a tiny rest)
            k += 1
    G = G[:, :k]
    return float(np.sum(G.sum(axis=0) ** 2) + np.sum(np.maximum(remaining, 0.0)))
