"""Sparse GP: sparse-point selection, the QR solve, and equality with a dense GP."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from ase.calculators.singlepoint import SinglePointCalculator
from dense_two_body import CUTOFF, DELTA, SIGMA_E, THETA, WIDTH, dense_kernel
from structures import random_structure

import gapx
from gapx.gp.selection import leverage_scores, select_sparse
from gapx.gp.solver import StreamingQR, qr_solve
from gapx.gp.sparse_set import SparseSet, kmm_cholesky
from gapx.gp.variance import functional_variance
from gapx.kernels import SquaredExponential

DENSE_TOL = 1e-8


def test_cur_is_deterministic_and_picks_high_leverage_rows(rng):
    X = rng.normal(size=(200, 6)) * np.array([5, 3, 1, 0.1, 0.01, 0.001])
    X[17] = [0, 0, 0, 0, 0, 50.0]  # the only row along a direction: leverage ~1
    a = select_sparse(X, 20, "cur", np.random.default_rng(3))
    b = select_sparse(X, 20, "cur", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 6)
    assert any(np.array_equal(row, X[17]) for row in a)
    # Every chosen point is a distinct training row.
    chosen = {tuple(row) for row in a}
    assert len(chosen) == 20
    assert chosen <= {tuple(row) for row in X}
    scores = leverage_scores(X, 6)
    np.testing.assert_allclose(scores.sum(), 6.0, rtol=1e-10)
    assert scores[17] > 0.99


def test_fps_covers_clusters(rng):
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    X = np.concatenate([c + 0.1 * rng.normal(size=(50, 2)) for c in centres])
    points = select_sparse(X, 4, "fps", np.random.default_rng(0))
    nearest = np.argmin(np.linalg.norm(points[:, None] - centres[None], axis=2), axis=1)
    assert sorted(nearest) == [0, 1, 2, 3]


def test_random_all_and_errors(rng):
    X = rng.normal(size=(30, 3))
    r = select_sparse(X, 5, "random", np.random.default_rng(1))
    assert len({tuple(row) for row in r}) == 5
    np.testing.assert_array_equal(select_sparse(X, 5, "all", np.random.default_rng(1)), X)
    np.testing.assert_array_equal(select_sparse(X, 99, "cur", np.random.default_rng(1)), X)
    with pytest.raises(ValueError, match="uniform"):
        select_sparse(X, 5, "uniform", np.random.default_rng(1))
    with pytest.raises(ValueError, match="sparse_method"):
        select_sparse(X, 5, "best", np.random.default_rng(1))
    with pytest.raises(ValueError, match="zero descriptor rows"):
        select_sparse(np.zeros((0, 3)), 5, "cur", np.random.default_rng(1))


def test_qr_solve_matches_regularised_normal_equations(rng):
    n, m = 40, 6
    K = rng.normal(size=(n, m))
    y = rng.normal(size=n)
    B = rng.normal(size=(m, m))
    Kmm = B @ B.T + m * np.eye(m)
    L = np.linalg.cholesky(Kmm)
    A = np.asfortranarray(np.block([[K, y[:, None]], [L.T, np.zeros((m, 1))]]))
    stream = StreamingQR(m)
    stream.R[:m, :m] = L.T
    for start in range(0, n, 7):  # blocks smaller and larger than M
        stream.add_rows(np.hstack([K, y[:, None]])[start : start + 7])
    alpha_s, R_s = stream.solve()
    alpha, R = qr_solve(A, m)
    expected = np.linalg.solve(K.T @ K + Kmm, K.T @ y)
    np.testing.assert_allclose(alpha, expected, rtol=1e-10)
    np.testing.assert_allclose(R.T @ R, K.T @ K + Kmm, rtol=1e-10)
    np.testing.assert_allclose(alpha_s, expected, rtol=1e-10)
    np.testing.assert_allclose(R_s.T @ R_s, K.T @ K + Kmm, rtol=1e-10)


def test_jitter_is_raised_for_duplicated_points():
    points = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    L, jitter = kmm_cholesky(SquaredExponential(1.0), points, 1.0, 0.0)
    assert jitter > 0
    np.testing.assert_allclose(
        L @ L.T, SquaredExponential(1.0)(points, points) + jitter * np.eye(3)
    )


def test_functional_variance_formula(rng):
    m = 5
    B = rng.normal(size=(m, m))
    Kmm = B @ B.T + np.eye(m)
    s = SparseSet(0, 1, np.zeros((m, 1)), 0, 1.0, 0.0, np.linalg.cholesky(Kmm))
    R = np.triu(rng.normal(size=(m, m))) + 3 * np.eye(m)
    k = rng.normal(size=(3, m))
    prior = np.full(3, 100.0)
    Sigma = np.linalg.inv(R.T @ R)
    expected = prior - np.einsum("im,mn,in->i", k, np.linalg.inv(Kmm), k)
    expected += np.einsum("im,mn,in->i", k, Sigma, k)
    np.testing.assert_allclose(functional_variance(prior, k, [s], R), expected, rtol=1e-10)


# ------------------------------------------------------------------------------------------
# Sparse set = every training environment, zero jitter: the sparse GP is the dense GP.
# ------------------------------------------------------------------------------------------


def _frames(rng, n, label):
    frames = []
    for _ in range(n):
        # Small clusters keep K_MM over all pair rows well conditioned (no jitter is added).
        cell = np.eye(3) * 2.4
        atoms = random_structure(rng, ["Ar"], 3, cell=cell, pbc=False, min_distance=1.0)
        if label:
            energy = float(rng.normal())
            atoms.calc = SinglePointCalculator(atoms, energy=energy)
        frames.append(atoms)
    return frames


def test_sparse_equals_dense_gp_with_all_points(rng):
    train = _frames(rng, 6, True)
    test = _frames(rng, 2, False)
    term = gapx.TwoBody(
        cutoff=CUTOFF, cutoff_transition_width=WIDTH, delta=DELTA, theta=THETA, sparse_method="all"
    )
    model = gapx.GAP([term], sigma_energy=SIGMA_E, e0={"Ar": 0.0}, sparse_jitter=0.0, verbose=False)
    model.fit(train)
    assert sum(s.jitter for s in model.sparse_sets) == 0.0

    # Dense GP over local energies: observation n is the sum of the local energies of frame n.
    rows = [term.rows(a) for a in train]
    X = np.concatenate([r.X for r in rows])
    P = np.zeros((len(train), X.shape[0]))
    start = 0
    for n, r in enumerate(rows):
        P[n, start : start + r.n_rows] = 1.0
        start += r.n_rows
    assert model.alpha.size == X.shape[0]
    y = np.array([a.get_potential_energy() for a in train])
    noise = np.diag([(SIGMA_E * np.sqrt(len(a))) ** 2 for a in train])
    C = P @ dense_kernel(X, X) @ P.T + noise
    beta = scipy.linalg.solve(C, y, assume_a="pos")

    for atoms in test:
        out = model.predict(atoms)
        r = term.rows(atoms)
        # Atom a's local energy: half of each pair row it belongs to.
        W = np.zeros((len(atoms), r.n_rows))
        np.add.at(W, (r.owner_atoms, r.owner_rows), r.owner_weights)
        k_star = W @ dense_kernel(r.X, X) @ P.T  # (n_atoms, n_obs)
        mean = k_star @ beta
        prior = W @ dense_kernel(r.X, r.X) @ W.T
        cov = prior - k_star @ scipy.linalg.solve(C, k_star.T, assume_a="pos")
        total = np.ones(len(atoms))
        np.testing.assert_allclose(out["energies"], mean, rtol=0, atol=DENSE_TOL)
        np.testing.assert_allclose(out["energy"], mean.sum(), rtol=0, atol=DENSE_TOL)
        np.testing.assert_allclose(out["energies_std"] ** 2, np.diag(cov), rtol=0, atol=DENSE_TOL)
        np.testing.assert_allclose(
            out["energy_std"] ** 2, total @ cov @ total, rtol=0, atol=DENSE_TOL
        )
        # The comparison is not vacuous: the posterior differs from the prior.
        assert np.all(np.diag(cov) < 0.9 * np.diag(prior))
        assert np.max(np.abs(mean)) > 1e-3
