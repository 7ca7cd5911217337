"""Sparse-point selection from blocks of rows, without gathering them: per-block candidates
merged by a second selection.

"cur" and "random" are weighted samplings without replacement (Efraimidis-Spirakis: each row
gets the key ``Exp(1) / p``, the ``n`` smallest keys win). The smallest keys of a union are the
smallest of each part's smallest, so keeping each block's ``n`` smallest and merging is exactly
the sampling over all rows — for CUR with the leverage scores of the whole data set, computed
blockwise from the Gram matrix ``X^T X`` (summed over blocks) instead of the rows. Only the
random stream differs from :func:`gapx.gp.selection.select_sparse` on the gathered rows (one
generator per block instead of one for all), so the chosen set is a different draw from the
same distribution. Repeated rows count once (the smallest of their keys), as a term that
selects among distinct rows (ThreeBody) would have it. Other methods (FPS, TwoBody's
"uniform") select among the union of the blocks' candidates with the term's own
``select_sparse``; "uniform" stays exact (each block's grid keeps its range's ends), FPS
becomes FPS over per-block FPS points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

#: Methods whose per-block candidates merge exactly by their sampling keys.
KEYED_METHODS = ("cur", "random")


@dataclass
class Candidates:
    """Candidate sparse points of one (term, kind): rows ``points`` (n, F); for keyed methods
    their ``keys`` (n,) and ``order`` (n, 2) = (block, row in block), to restore data order."""

    points: np.ndarray
    keys: np.ndarray | None = None
    order: np.ndarray | None = None


def leverage_projection(gram: np.ndarray, rank: int) -> np.ndarray:
    """``P`` (F, k) with ``||x P||^2`` the leverage score of row x in the top-``rank`` singular
    subspace of the rows whose Gram matrix ``X^T X`` is ``gram`` (as
    :func:`gapx.gp.selection.leverage_scores`, including its cut of null directions)."""
    s2, V = scipy.linalg.eigh(gram, check_finite=False)
    order = np.argsort(s2)[::-1]
    s2 = s2[order]
    keep = order[: min(rank, int(np.sum(s2 > max(s2[0], 0.0) * 1e-12)))]
    return V[:, keep] / np.sqrt(s2[: keep.size])[None, :]


def block_candidates(term, X: np.ndarray, block: int, projection, rng) -> Candidates:
    """One block's candidates among its rows ``X`` (n_rows, F) of one (term, kind).

    Keyed methods keep the ``term.n_sparse`` rows of smallest key (``projection`` from
    :func:`leverage_projection` for CUR, None for random); "all" keeps every row; other
    methods take ``term.select_sparse`` of the block.
    """
    X = np.asarray(X, dtype=np.float64)
    method = term.sparse_method
    if method in KEYED_METHODS:
        scores = np.ones(X.shape[0]) if method == "random" else np.sum((X @ projection) ** 2, 1)
        with np.errstate(divide="ignore"):
            keys = rng.exponential(size=X.shape[0]) / scores
        keep = np.sort(_smallest_distinct(X, keys, term.n_sparse))
        order = np.stack([np.full(keep.size, block), keep], axis=1)
        return Candidates(X[keep], keys[keep], order)
    if method == "all" or X.shape[0] <= term.n_sparse:
        return Candidates(X.copy())
    return Candidates(np.asarray(term.select_sparse(X, rng), dtype=np.float64))


def _smallest_distinct(points: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` smallest keys among distinct rows (a row repeated, e.g. the same
    environment in two frames, keeps its smallest key): K_MM of repeated points is singular."""
    by_key = np.argsort(keys, kind="stable")
    _, first = np.unique(points[by_key], axis=0, return_index=True)
    return by_key[np.sort(first)][:n]


def merge_candidates(term, running: Candidates | None, new: Candidates, rng) -> Candidates:
    """The candidates of two sets of rows from their candidates (``running`` first)."""
    if running is None:
        return new
    points = np.concatenate([running.points, new.points])
    if term.sparse_method in KEYED_METHODS:
        keys = np.concatenate([running.keys, new.keys])
        order = np.concatenate([running.order, new.order])
        keep = _smallest_distinct(points, keys, term.n_sparse)
        # Data order (block, row), as the gathered selection returns its rows.
        keep = keep[np.lexsort((order[keep, 1], order[keep, 0]))]
        return Candidates(points[keep], keys[keep], order[keep])
    if term.sparse_method == "all" or points.shape[0] <= term.n_sparse:
        return Candidates(points)
    return Candidates(np.asarray(term.select_sparse(points, rng), dtype=np.float64))


def final_points(term, merged: Candidates, rng) -> np.ndarray:
    """The sparse points of one (term, kind) from its merged candidates: keyed and "all" sets
    are the result; others are selected once more over the whole union, so a set smaller than
    ``n_sparse`` is never returned when more rows exist (and "uniform" gets its grid)."""
    if term.sparse_method in KEYED_METHODS or term.sparse_method == "all":
        return merged.points
    return np.asarray(term.select_sparse(merged.points, rng), dtype=np.float64)
