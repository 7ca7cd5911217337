"""The sparse GP's DTC evidence: against a dense computation, finite differences, and planted
noise levels recovered by its optimisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from gapx.gp.evidence import Evidence, GroupStatistics
from gapx.gp.solver import StreamingQR

FD_STEP = 1e-5
FD_RTOL = 1e-5
DENSE_RTOL = 1e-10


def _synthetic(rng, n_rows=(40, 25, 30), blocks=(5, 3)):
    """Random block-diagonal K1 = L L^T, delta = 1 design rows A, labels y and row scales r per
    group."""
    M = sum(blocks)
    L = np.zeros((M, M))
    column_term = np.repeat(np.arange(len(blocks)), blocks)
    start = 0
    for size in blocks:
        B = rng.standard_normal((size, 2 * size))
        L[start : start + size, start : start + size] = np.linalg.cholesky(
            B @ B.T / (2 * size) + 0.1 * np.eye(size)
        )
        start += size
    groups = []
    for n in n_rows:
        A = rng.standard_normal((n, M))
        y = rng.standard_normal(n)
        r = rng.uniform(0.5, 2.0, n)
        groups.append((A, y, r))
    return L, column_term, groups


def _statistics(groups, M):
    stats = []
    for A, y, r in groups:
        qr = StreamingQR(M)
        qr.add_rows(np.column_stack([A, y]) / r[:, None])
        stats.append(GroupStatistics(np.triu(qr.R), len(y), float(np.sum(np.log(r)))))
    return stats


def _dense(L, column_term, groups, log_delta, log_sigma):
    """log N(y | 0, K_NM K_MM^-1 K_MN + Lambda) with the N x N covariance itself."""
    delta2 = np.exp(2 * np.asarray(log_delta))[column_term]
    K1 = L @ L.T
    K_MM = delta2[:, None] * K1
    A = np.concatenate([g[0] for g in groups]) * delta2[None, :]
    y = np.concatenate([g[1] for g in groups])
    noise = np.concatenate(
        [(np.exp(s) * g[2]) ** 2 for g, s in zip(groups, log_sigma, strict=True)]
    )
    cov = A @ np.linalg.solve(K_MM, A.T) + np.diag(noise)
    factor = scipy.linalg.cho_factor(cov)
    logdet = 2 * np.sum(np.log(np.diag(factor[0])))
    return -0.5 * (y @ scipy.linalg.cho_solve(factor, y) + logdet + len(y) * np.log(2 * np.pi))


@pytest.fixture
def problem():
    rng = np.random.default_rng(11)
    L, column_term, groups = _synthetic(rng)
    evidence = Evidence(L, column_term, _statistics(groups, L.shape[0]))
    return evidence, L, column_term, groups


def test_evidence_matches_dense_computation(problem):
    evidence, L, column_term, groups = problem
    for log_delta, log_sigma in [
        ([0.0, 0.0], [0.0, 0.0, 0.0]),
        ([0.4, -0.7], [-1.2, 0.3, 0.8]),
        ([-1.0, 1.5], [1.1, -2.0, -0.4]),
    ]:
        dense = _dense(L, column_term, groups, log_delta, log_sigma)
        assert evidence.value(log_delta, log_sigma) == pytest.approx(dense, rel=DENSE_RTOL)


def test_evidence_gradients_match_finite_differences(problem):
    evidence, *_ = problem
    log_delta = np.array([0.3, -0.5])
    log_sigma = np.array([-0.8, 0.2, 0.6])
    _, grad_delta, grad_sigma = evidence.value_and_gradient(log_delta, log_sigma)
    analytic = np.concatenate([grad_delta, grad_sigma])
    assert np.min(np.abs(analytic)) > 1e-2  # not trivially small
    x0 = np.concatenate([log_delta, log_sigma])
    numeric = np.zeros_like(x0)
    for k in range(x0.size):
        step = np.zeros_like(x0)
        step[k] = FD_STEP
        plus, minus = x0 + step, x0 - step
        numeric[k] = (evidence.value(plus[:2], plus[2:]) - evidence.value(minus[:2], minus[2:])) / (
            2 * FD_STEP
        )
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=1e-7)


def test_evidence_weights_are_the_fit_weights(problem):
    """alpha from the evidence factor equals the regularised least-squares solution."""
    evidence, L, column_term, groups = problem
    log_delta, log_sigma = np.array([0.2, -0.3]), np.array([-0.5, 0.1, 0.4])
    delta2 = np.exp(2 * log_delta)[column_term]
    rows = (
        np.concatenate(
            [g[0] / (np.exp(s) * g[2])[:, None] for g, s in zip(groups, log_sigma, strict=True)]
        )
        * delta2[None, :]
    )
    y = np.concatenate([g[1] / (np.exp(s) * g[2]) for g, s in zip(groups, log_sigma, strict=True)])
    K_MM = delta2[:, None] * (L @ L.T)
    alpha = np.linalg.solve(rows.T @ rows + K_MM, rows.T @ y)
    np.testing.assert_allclose(evidence.weights(log_delta, log_sigma), alpha, rtol=1e-9)


PLANTED = {"a": (0.002, 0.02), "b": (0.006, 0.05)}  # (sigma_energy eV/atom, sigma_force eV/Å)
PLANTED_DELTA = 0.5
RECOVERY_RTOL = 0.15


def _planted_frames(n_frames=400, seed=5):
    """3-atom Cu clusters whose labels are a draw from the DTC prior of a TwoBody GAP
    (delta PLANTED_DELTA) plus Gaussian noise of the PLANTED sigmas of their config type."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from gapx import GAP, TwoBody, blocks
    from gapx.gp import design
    from gapx.hyperparameters import unit_sparse_sets

    rng = np.random.default_rng(seed)
    frames = []
    for n in range(n_frames):
        while True:
            positions = rng.uniform(0.0, 3.2, (3, 3))
            d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(3, 1)]
            if d.min() > 1.8:
                break
        atoms = Atoms("Cu3", positions=positions)
        atoms.info["config_type"] = "a" if n % 2 == 0 else "b"
        frames.append(atoms)
    model = GAP(
        [TwoBody(cutoff=4.5, delta=1.0, theta=0.5, n_sparse=15)],
        sigma_energy=0.01,
        sigma_force=0.1,
        e0={"Cu": 0.0},
        verbose=False,
    )
    unit = unit_sparse_sets(model, frames, blocks.gradient_bytes(frames, model.terms))
    M = sum(s.size for s in unit)
    targets = [(0.0, np.zeros((3, 3)), None, (1.0, 1.0, 1.0))] * n_frames
    rows = blocks.scaled_rows((model.terms, unit, M), frames, targets)[:, :M]
    L = unit[0].factor
    f = PLANTED_DELTA * rows @ scipy.linalg.solve_triangular(L.T, rng.standard_normal(M))
    layout = design.block_layout(
        [3] * n_frames, [True] * n_frames, [True] * n_frames, [False] * n_frames
    )
    for k, atoms in enumerate(frames):
        se, sf = PLANTED[atoms.info["config_type"]]
        energy = f[layout.energy_row[k]] + se * np.sqrt(3) * rng.standard_normal()
        r0 = layout.force_row[k]
        forces = f[r0 : r0 + 9].reshape(3, 3) + sf * rng.standard_normal((3, 3))
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return model, frames


def test_optimised_sigmas_recover_planted_noise_per_config_type():
    from gapx.hyperparameters import optimize_hyperparameters

    model, frames = _planted_frames()
    result, _ = optimize_hyperparameters(model, frames)
    assert result.log_evidence_after > result.log_evidence_before
    for config_type, (se, sf) in PLANTED.items():
        assert result.sigmas[f"{config_type}.sigma_energy"] == pytest.approx(se, rel=RECOVERY_RTOL)
        assert result.sigmas[f"{config_type}.sigma_force"] == pytest.approx(sf, rel=RECOVERY_RTOL)
    assert model.sigma_energy == 0.01  # the model is not modified


DATA = __import__("os").path.join(__import__("os").path.dirname(__file__), "data")


def _ethanol(n_frames):
    import os

    import ase.io

    import gapx

    frames = ase.io.read(os.path.join(DATA, "ethanol_train_50.extxyz"), f":{n_frames}")
    soap = gapx.SOAP(species=["C", "H", "O"], cutoff=4.0, n_max=3, l_max=2, n_sparse=10, zeta=2)
    return frames, soap


def test_streamed_statistics_match_dense_evidence_of_the_design_rows():
    """The statistics pass (groups, sqrt(n_atoms) scales, e0) against the dense evidence of the
    fit's own design rows."""
    from gapx import GAP, blocks, fitting
    from gapx.hyperparameters import evidence_statistics, unit_sparse_sets
    from gapx.labels import extract_labels

    frames, soap = _ethanol(12)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "x" if k < 5 else "y"
    model = GAP([soap], sigma_energy=0.002, sigma_force=0.05, verbose=False, block_memory=2e5)
    statistics = evidence_statistics(model, frames)
    evidence, names = statistics.evidence, statistics.names
    assert names == ["x.sigma_energy", "x.sigma_force", "y.sigma_energy", "y.sigma_force"]
    labels = [extract_labels(a, n) for n, a in enumerate(frames)]
    e0 = fitting.compute_e0(model, frames, labels, range(len(frames)))
    targets = fitting.frame_targets(model, frames, labels, e0)
    unit = unit_sparse_sets(model, frames, blocks.gradient_bytes(frames, model.terms))
    M = sum(s.size for s in unit)
    ones = [(t[0], t[1], None, (1.0, 1.0, 1.0)) for t in targets]
    rows = blocks.scaled_rows((model.terms, unit, M), frames, ones)
    L = scipy.linalg.block_diag(*[s.factor for s in unit])
    n = len(frames[0])
    groups = []
    for lo, hi in ((0, 5), (5, 12)):
        block = rows[lo * (1 + 3 * n) : hi * (1 + 3 * n)].reshape(hi - lo, 1 + 3 * n, M + 1)
        energy, force = block[:, 0], block[:, 1:].reshape(-1, M + 1)
        groups.append((energy[:, :M], energy[:, M], np.full(hi - lo, np.sqrt(n))))
        groups.append((force[:, :M], force[:, M], np.ones(len(force))))
    log_delta, log_sigma = [0.3], np.log([0.002, 0.05, 0.004, 0.03])
    dense = _dense(L, np.zeros(M, dtype=int), groups, log_delta, log_sigma)
    assert evidence.value(log_delta, log_sigma) == pytest.approx(dense, rel=1e-8)


def test_gap_optimize_evidence_fits_with_the_values_found():
    import gapx

    frames, soap = _ethanol(25)
    model = gapx.GAP([soap], sigma_energy=0.01, sigma_force=0.1, optimize="evidence", verbose=False)
    summary = model.fit(frames)
    report = summary["evidence"]
    assert report["log_evidence"]["after"] > report["log_evidence"]["before"]
    found = report["sigmas"]["after"]
    sigmas = model.config_type_sigma["rmd17_ethanol"]  # the file's one config type
    assert sigmas[:2] == (found["rmd17_ethanol.sigma_energy"], found["rmd17_ethanol.sigma_force"])
    assert model.terms[0].delta == report["deltas"]["after"][0]
    assert sigmas[1] != 0.1  # moved from the start
    plain = gapx.GAP(model.terms, config_type_sigma=model.config_type_sigma, verbose=False)
    plain.fit(frames)
    # The evidence fit is derived from the statistics pass (no second pass): the same system,
    # reduced in another order, so equal to round-off, weights and posterior alike.
    np.testing.assert_allclose(plain.alpha, model.alpha, rtol=1e-9)
    ours, theirs = model.predict(frames[0], std=True), plain.predict(frames[0], std=True)
    for key in ("energy", "forces", "energy_std", "forces_std"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="optimize"):
        gapx.GAP([soap], optimize="cv")


def test_optimize_setting_survives_save_and_load(tmp_path):
    """A loaded model refits (gapx learn, a user's refit) as it was fitted: by the evidence."""
    import gapx

    frames, soap = _ethanol(6)
    model = gapx.GAP([soap], optimize="evidence", verbose=False)
    model.fit(frames)
    model.save(tmp_path / "m.gapx")
    loaded = gapx.load(tmp_path / "m.gapx")
    assert loaded.optimize == "evidence"
    np.testing.assert_array_equal(loaded.alpha, model.alpha)
