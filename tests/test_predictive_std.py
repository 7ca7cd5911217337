"""Predictive standard deviations: energies, forces and stress against independent references.

* A dense exact GP (energy-only training, sparse set = every training environment, where the
  projected-process posterior is the exact one): the force and stress variances equal the
  variances of finite-difference derivative functionals of the dense GP's energies.
* A general model (TwoBody + SOAP, energies + forces + stresses, a subset of sparse points): the
  force and stress variances equal those of the derivative functionals of the posterior
  covariance of total energies, written out independently here.
* Monte-Carlo samples of the weights' posterior, predicted through the mean code path.
* The linear-cost estimate of the total-energy and stress variances against the exact sum.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.transform
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from dense_two_body import CUTOFF, DELTA, SIGMA_E, THETA, WIDTH, dense_kernel
from structures import random_structure, strained_fcc_cells

import gapx
from gapx.gp.predictive import predictive_variances
from gapx.gp.variance import MAX_RANK

FD_STEP = 1e-4  # Å, or strain
FD_RTOL = 1e-5  # finite differences of variances: O(h^2) plus round-off
# The general model's reference differences whole kernel blocks: a larger step keeps round-off
# small, its O(h^2) error stays below the tolerance.
GENERAL_FD_STEP = 1e-3
GENERAL_FD_RTOL = 1e-4
MC_SAMPLES = 400


def _displaced(atoms, j, a, h):
    out = atoms.copy()
    out.positions[j, a] += h
    return out


def _strained(atoms, a, b, t):
    """``atoms`` deformed by the symmetric strain with components (a, b) and (b, a) summing
    to ``t`` (the Voigt derivative direction)."""
    eps = np.zeros((3, 3))
    eps[a, b] += 0.5 * t
    eps[b, a] += 0.5 * t
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def _fd_variance(cov, plus, minus, h):
    """Variance of (E(plus) - E(minus)) / 2h from a covariance function of energies."""
    return (cov(plus, plus) + cov(minus, minus) - 2 * cov(plus, minus)) / (4 * h * h)


# ------------------------------------------------------------------------------------------
# Dense exact GP
# ------------------------------------------------------------------------------------------


def test_force_and_stress_std_equal_the_dense_gp(rng):
    train = []
    for _ in range(6):
        atoms = random_structure(rng, ["Ar"], 3, cell=np.eye(3) * 2.4, pbc=False, min_distance=1.0)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()))
        train.append(atoms)
    term = gapx.TwoBody(
        cutoff=CUTOFF, cutoff_transition_width=WIDTH, delta=DELTA, theta=THETA, sparse_method="all"
    )
    model = gapx.GAP([term], sigma_energy=SIGMA_E, e0={"Ar": 0.0}, sparse_jitter=0.0, verbose=False)
    model.fit(train)
    X = np.concatenate([term.rows(a).X for a in train])
    P = np.zeros((len(train), X.shape[0]))
    start = 0
    for n, a in enumerate(train):
        count = term.rows(a).n_rows
        P[n, start : start + count] = 1.0
        start += count
    C = P @ dense_kernel(X, X) @ P.T + np.diag([(SIGMA_E * np.sqrt(len(a))) ** 2 for a in train])

    def cov(a, b):
        """Exact posterior covariance of the total energies of structures a and b."""
        xa, xb = term.rows(a).X, term.rows(b).X
        ka = dense_kernel(xa, X) @ P.T
        kb = dense_kernel(xb, X) @ P.T
        return dense_kernel(xa, xb).sum() - ka.sum(0) @ scipy.linalg.solve(C, kb.sum(0))

    test = random_structure(rng, ["Ar"], 3, cell=np.eye(3) * 4.6, pbc=True, min_distance=1.1)
    out = model.predict(test)
    h = FD_STEP
    expected = np.array(
        [
            [
                _fd_variance(cov, _displaced(test, j, a, h), _displaced(test, j, a, -h), h)
                for a in range(3)
            ]
            for j in range(len(test))
        ]
    )
    assert np.all(expected > 1e-4)  # the forces are genuinely uncertain
    np.testing.assert_allclose(out["forces_std"] ** 2, expected, rtol=FD_RTOL)
    np.testing.assert_allclose(out["energy_std"] ** 2, cov(test, test), rtol=1e-10)
    volume = test.get_volume()
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    stress = [
        _fd_variance(cov, _strained(test, a, b, h), _strained(test, a, b, -h), h) for a, b in voigt
    ]
    np.testing.assert_allclose(out["stress_std"] ** 2, np.array(stress) / volume**2, rtol=FD_RTOL)


# ------------------------------------------------------------------------------------------
# General sparse model
# ------------------------------------------------------------------------------------------


def _fitted_cu_model(extra_terms=()):
    rng = np.random.default_rng(8)
    frames = strained_fcc_cells(rng, 6, repeat=(1, 1, 1), rattle=0.15)
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=3.6, n_sparse=6, delta=0.5),
            gapx.SOAP(species=["Cu"], cutoff=3.6, n_max=3, l_max=2, zeta=3, delta=0.3, n_sparse=12),
            *extra_terms,
        ],
        sigma_energy=0.002,
        sigma_force=0.05,
        sigma_virial=0.05,
        verbose=False,
    )
    model.fit(frames)
    probe = bulk("Cu", "fcc", a=3.65, cubic=True)
    probe.set_cell(
        probe.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 0.98, 0.02], [0.01, 0.0, 1.02]]),
        scale_atoms=True,
    )
    probe.rattle(0.12, seed=4)
    return model, probe


@pytest.fixture(scope="module")
def cu_model():
    return _fitted_cu_model()


@pytest.fixture(scope="module")
def cu_model_3b():
    """The same model with a three-body term (its own kernel, rows owned by their centre)."""
    three_body = gapx.ThreeBody(cutoff=3.0, n_sparse=10, delta=0.1, theta=(0.8, 0.3, 0.8))
    return _fitted_cu_model([three_body])


MODELS = ["cu_model", "cu_model_3b"]


def _kind_rows(model, atoms):
    """Per sparse set: its kernel, the structure's rows of that kind and their summed sparse
    covariances (the total-energy functional's columns)."""
    out = []
    for s in model.sparse_sets:
        term = model.terms[s.term]
        rows = term.rows(atoms)
        X = rows.X[rows.kinds == s.kind]
        out.append((s, term.kernel, X, (s.delta**2 * term.kernel(X, s.points)).sum(axis=0)))
    return out


def _derivative_variance(model, plus, minus, h):
    """DTC posterior variance of (E(plus) - E(minus)) / 2h, every sum written out.

    The prior double sum combines the four kernel blocks entry by entry before summing (rows
    of plus and minus correspond), so the finite difference does not cancel large numbers.
    """
    residual = 0.0
    dk = np.zeros(model.alpha.size)
    for (s, kernel, xp, kp), (_, _, xm, km) in zip(
        _kind_rows(model, plus), _kind_rows(model, minus), strict=True
    ):
        assert xp.shape == xm.shape
        block = kernel(xp, xp) - kernel(xp, xm) - kernel(xm, xp) + kernel(xm, xm)
        d = (kp - km) / (2 * h)
        v = scipy.linalg.solve_triangular(s.factor, d, lower=True)
        residual += s.delta**2 * block.sum() / (4 * h * h) - v @ v
        dk[s.columns] = d
    w = scipy.linalg.solve_triangular(model.R, dk, trans="T")
    return residual + w @ w


def _energy_variance(model, atoms):
    total = 0.0
    k = np.zeros(model.alpha.size)
    for s, kernel, X, ks in _kind_rows(model, atoms):
        v = scipy.linalg.solve_triangular(s.factor, ks, lower=True)
        total += s.delta**2 * kernel(X, X).sum() - v @ v
        k[s.columns] = ks
    w = scipy.linalg.solve_triangular(model.R, k, trans="T")
    return total + w @ w


@pytest.mark.parametrize("fixture", MODELS)
def test_force_and_stress_std_are_the_derivative_functionals(fixture, request):
    model, probe = request.getfixturevalue(fixture)
    out = model.predict(probe)
    h = GENERAL_FD_STEP
    expected = np.array(
        [
            [
                _derivative_variance(
                    model, _displaced(probe, j, a, h), _displaced(probe, j, a, -h), h
                )
                for a in range(3)
            ]
            for j in range(len(probe))
        ]
    )
    assert np.all(expected > 0)
    np.testing.assert_allclose(out["forces_std"] ** 2, expected, rtol=GENERAL_FD_RTOL)
    # Exact up to MAX_RANK rows per kind (the three-body term has more: the estimate's 1e-5).
    exact = all(X.shape[0] <= MAX_RANK for _, _, X, _ in _kind_rows(model, probe))
    energy_rtol = 1e-9 if exact else 1e-5
    np.testing.assert_allclose(
        out["energy_std"] ** 2, _energy_variance(model, probe), rtol=energy_rtol
    )
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

    def strain_variance(a, b, step):
        return _derivative_variance(
            model, _strained(probe, a, b, step), _strained(probe, a, b, -step), step
        )

    # A strain moves every atom: the O(h^2) error is larger, so extrapolate (Richardson).
    stress = [(4 * strain_variance(a, b, h / 2) - strain_variance(a, b, h)) / 3 for a, b in voigt]
    np.testing.assert_allclose(
        out["stress_std"] ** 2, np.array(stress) / probe.get_volume() ** 2, rtol=GENERAL_FD_RTOL
    )


@pytest.mark.parametrize("fixture", MODELS)
def test_weight_samples_reproduce_the_weight_variance(fixture, request):
    """Weights drawn from N(alpha, R^-1 R^-T), predicted through the mean path (C++ forces)."""
    model, probe = request.getfixturevalue(fixture)
    rows = [t.rows(probe, gradients=True) for t in model.terms]
    expected = predictive_variances(
        model.terms, model.sparse_sets, model.R, rows, len(probe), True, weights_only=True
    )
    rng = np.random.default_rng(12)
    alpha = model.alpha.copy()
    samples = {"energy": [], "forces": [], "stress": []}
    try:
        for _ in range(MC_SAMPLES):
            model.alpha = alpha + scipy.linalg.solve_triangular(
                model.R, rng.standard_normal(alpha.size)
            )
            out = model.predict(probe, std=False)
            for key in samples:
                samples[key].append(out[key])
    finally:
        model.alpha = alpha
    # Sample variances scatter by sqrt(2 / n) ~ 7 % each; averages over components by less.
    ratio_f = np.var(samples["forces"], axis=0) / expected["forces"]
    assert abs(np.mean(ratio_f) - 1) < 0.1
    assert np.all(np.abs(ratio_f - 1) < 0.35)
    assert abs(np.var(samples["energy"]) / expected["energy"] - 1) < 0.3
    ratio_s = np.var(samples["stress"], axis=0) * probe.get_volume() ** 2 / expected["virial"]
    assert abs(np.mean(ratio_s) - 1) < 0.15


def test_linear_cost_estimate_of_total_energy_and_stress(cu_model):
    """Above MAX_RANK rows per kind the residual double sums of the total energy and the virial
    go through a rank-MAX_RANK factorisation: against the literal double sum (energy) and the
    full-rank factorisation (virial), on 108 SOAP rows and ~650 pair rows."""
    model, _ = cu_model
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True) * (3, 3, 3)
    atoms.rattle(0.1, seed=9)
    rows = [t.rows(atoms, gradients=True) for t in model.terms]
    assert min(r.n_rows for r in rows) > MAX_RANK
    args = (model.terms, model.sparse_sets, model.R, rows, len(atoms), True)
    estimate = predictive_variances(*args)
    exact = predictive_variances(*args, max_rank=10**6)
    np.testing.assert_array_equal(estimate["forces"], exact["forces"])  # local: always exact
    np.testing.assert_allclose(exact["energy"], _energy_variance(model, atoms), rtol=1e-7)
    np.testing.assert_allclose(estimate["energy"], exact["energy"], rtol=1e-5)
    np.testing.assert_allclose(estimate["virial"], exact["virial"], rtol=1e-4)
    # Treating the residuals of different environments as independent would be far off.
    low = predictive_variances(*args, max_rank=1)
    assert abs(low["energy"] / exact["energy"] - 1) > 10 * abs(
        estimate["energy"] / exact["energy"] - 1
    )


def test_stds_are_invariant_and_extensive_where_they_should_be(cu_model):
    model, probe = cu_model
    out = model.predict(probe)
    rotated = probe.copy()
    R = scipy.spatial.transform.Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    rotated.set_cell(probe.cell.array @ R.T, scale_atoms=True)
    again = model.predict(rotated)
    np.testing.assert_allclose(again["energies_std"], out["energies_std"], rtol=1e-9)
    # A force variance is a quadratic form: rotating the structure rotates its covariance, so
    # the sum of the three component variances is invariant.
    np.testing.assert_allclose(
        np.sum(again["forces_std"] ** 2, axis=1), np.sum(out["forces_std"] ** 2, axis=1), rtol=1e-8
    )
