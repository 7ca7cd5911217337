"""Sparse-point selection among a kind's training rows: CUR (leverage scores), FPS, random, and
the rows a given sparse set represents worst (greedy residual variance, for adding points)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

#: Selection methods every term accepts (a term may add its own, e.g. TwoBody's "uniform").
SPARSE_METHODS = ("cur", "fps", "random", "all")


def check_sparse_method(method: str, allowed=SPARSE_METHODS) -> str:
    """Return ``method`` if it is one of ``allowed``, else raise ValueError listing them."""
    if method not in allowed:
        raise ValueError(f"sparse_method must be one of {tuple(allowed)}, got {method!r}")
    return method


def select_sparse(
    X: np.ndarray, n_sparse: int, method: str, rng: np.random.Generator
) -> np.ndarray:
    """Choose sparse points among the rows of ``X`` (n_rows, F); returns (n_chosen, F).

    Methods: "cur" (rows sampled without replacement with probability proportional to their
    leverage scores in the top-``n_sparse`` right singular subspace; deterministic for a given
    generator), "fps" (farthest-point sampling in feature space from a random start), "random",
    "all" (every row). When ``n_sparse`` is at least the number of rows, every row is used.
    """
    X = np.asarray(X, dtype=np.float64)
    n_rows = X.shape[0]
    check_sparse_method(method)
    if n_rows == 0:
        raise ValueError("cannot select sparse points from zero descriptor rows")
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


def residual_variance_rows(
    kernel,
    X: np.ndarray,
    delta: float,
    n: int,
    tolerance: float,
    points: np.ndarray | None = None,
    factor: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of up to ``n`` rows of ``X`` (n_rows, F) to add to a sparse set, greedily.

    Each pick is the row whose local energy the sparse set represents worst: the largest
    residual prior variance ``delta^2 k(x, x) - k_xM K_MM^-1 k_Mx`` (the Nystroem error, what
    the projected-process posterior cannot learn about x whatever the data) given the set's
    ``points`` (M, F) with ``K_MM = factor factor^T`` and the rows already picked: a partial
    pivoted Cholesky of the candidates' kernel, conditioned on the set. Picking stops early when
    the largest residual falls to ``tolerance`` times the largest prior variance among the
    candidates, which also keeps K_MM well conditioned (a duplicate row has residual 0).
    Deterministic (ties go to the first row).
    """
    X = np.asarray(X, dtype=np.float64)
    d2 = delta**2
    prior = d2 * kernel.diag(X)
    residual = prior.copy()
    V = np.zeros((0, X.shape[0]))
    if points is not None and points.shape[0]:
        V = scipy.linalg.solve_triangular(
            factor, d2 * kernel(points, X), lower=True, check_finite=False
        )
        residual -= np.sum(V * V, axis=0)
    floor = tolerance * (float(prior.max()) if prior.size else 0.0)
    chosen: list[int] = []
    picked = np.zeros((0, X.shape[0]))
    for _ in range(min(n, X.shape[0])):
        j = int(np.argmax(residual))
        if not residual[j] > floor:
            break
        row = d2 * kernel(X[j : j + 1], X)[0] - V[:, j] @ V - picked[:, j] @ picked
        row /= np.sqrt(residual[j])
        residual -= row * row
        residual[j] = -np.inf
        picked = np.vstack([picked, row])
        chosen.append(j)
    return np.array(chosen, dtype=np.int64)
