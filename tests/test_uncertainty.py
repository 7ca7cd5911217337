"""Calibration of predicted stds: the maximum-likelihood fit, the metrics, GAP.calibrate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from structures import strained_fcc_cells

import gapx
from gapx import serialization
from gapx.evaluation import evaluate
from gapx.plotting import calibration_plot
from gapx.uncertainty import (
    Calibration,
    apply,
    calibrate,
    calibration_metrics,
    confidence_levels,
    fit_calibration,
    miscalibration_area,
)

#: Standard errors within which a maximum-likelihood estimate must land (about 1 in 15 000
#: chance of failing for a correct estimator; the data are seeded, so a pass is reproducible).
N_STANDARD_ERRORS = 4.0
#: Round-off tolerance of quantities with closed forms (stationarity of the likelihood, hypot).
EXACT = 1e-9
PNG = b"\x89PNG\r\n\x1a\n"


def _fisher_standard_errors(A: float, B: float, s: np.ndarray) -> np.ndarray:
    """Asymptotic standard errors of (A, B) = (a^2, b^2) for e ~ N(0, A s^2 + B)."""
    v = A * s**2 + B
    grads = np.stack([s**2, np.ones_like(s)])  # dv/dA, dv/dB
    information = 0.5 * (grads / v) @ (grads / v).T
    return np.sqrt(np.diag(np.linalg.inv(information)))


def _planted(rng, a: float, b: float, n: int = 20_000):
    s = rng.lognormal(mean=-3.0, sigma=1.0, size=n)  # stds spanning about two decades
    return rng.normal(0.0, np.hypot(a * s, b)), s


@pytest.mark.parametrize(
    ("a", "b"),
    [(2.5, 0.0), (0.4, 0.0), (0.5, 0.03), (1.0, 0.1)],
)
def test_fit_recovers_a_planted_scale_and_floor(rng, a, b):
    e, s = _planted(rng, a, b)
    se = _fisher_standard_errors(a**2, b**2, s)
    # Energies and forces are fitted independently: give them different planted values.
    fitted = fit_calibration({"energy": e, "forces": 2 * e}, {"energy": s, "forces": s})
    for quantity, factor in (("energy", 1.0), ("forces", 2.0)):
        A, B = fitted.scale(quantity) ** 2, fitted.floor(quantity) ** 2
        assert abs(A / factor**2 - a**2) < N_STANDARD_ERRORS * se[0], (quantity, A, a**2, se)
        assert abs(B / factor**2 - b**2) < N_STANDARD_ERRORS * se[1], (quantity, B, b**2, se)
    if b > 0:  # the floor is found, not only allowed (it is many standard errors from 0)
        assert fitted.energy_floor > 0.5 * b
    # Stationarity of the likelihood: calibrated stds have mean z^2 = 1 on the fitted data.
    metrics = calibration_metrics({"energy": e}, {"energy": fitted.calibrated("energy", s)})
    assert abs(metrics["energy"]["mean_z2"] - 1.0) < EXACT


def test_fit_closed_forms_at_the_boundaries():
    s = np.geomspace(0.01, 1.0, 50)
    signs = np.where(np.arange(50) % 2 == 0, 1.0, -1.0)
    # |e| = 3 s exactly: the likelihood is flat in the floor at b = 0, so scale 3, floor 0.
    fitted = fit_calibration({"energy": 3.0 * s * signs}, {"energy": s})
    assert fitted.energy_scale == pytest.approx(3.0, rel=1e-15)
    assert fitted.energy_floor == 0.0
    # |e| = 0.2 whatever the std: the stds carry no information; scale 0, floor 0.2.
    fitted = fit_calibration({"forces": 0.2 * signs}, {"forces": s})
    assert fitted.forces_scale == 0.0
    assert fitted.forces_floor == pytest.approx(0.2, rel=1e-15)
    # A quantity without data keeps its stds as predicted.
    assert (fitted.energy_scale, fitted.energy_floor) == (1.0, 0.0)
    # Equal stds cannot tell a scale from a floor: the simpler model (no floor) is chosen.
    fitted = fit_calibration({"energy": [0.1, -0.3, 0.2]}, {"energy": [0.05, 0.05, 0.05]})
    assert fitted.energy_scale == pytest.approx(math.sqrt((4 + 36 + 16) / 3), rel=1e-14)
    assert fitted.energy_floor == 0.0


@pytest.mark.parametrize(
    ("errors", "stds", "message"),
    [
        ({}, {}, "no errors with predicted stds"),
        ({"energy": []}, {"energy": []}, "no errors with predicted stds"),
        ({"energy": [0.1, 0.2]}, {"energy": [0.1]}, "2 errors but 1 stds"),
        ({"forces": [0.1, np.nan]}, {"forces": [0.1, 0.1]}, "must be finite"),
        ({"forces": [0.1, 0.2]}, {"forces": [0.1, -0.1]}, "must be >= 0"),
        ({"energy": [0.0, 0.0]}, {"energy": [0.1, 0.2]}, "every error is zero"),
    ],
)
def test_fit_refuses_bad_input(errors, stds, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(errors, stds)


def test_metrics_of_a_hand_computed_case():
    e = np.array([0.5, -1.0, 3.0])
    m = calibration_metrics({"energy": e}, {"energy": np.ones(3)})["energy"]
    assert m["n"] == 3
    assert m["mean_z2"] == pytest.approx((0.25 + 1.0 + 9.0) / 3, rel=1e-15)
    assert m["coverage_68"] == pytest.approx(1 / 3)  # only |z| = 0.5 is within ±0.994
    assert m["coverage_95"] == pytest.approx(2 / 3)  # 0.5 and 1 are within ±1.960
    assert m["spearman"] is None  # a constant std has no rank correlation
    m = calibration_metrics({"forces": [1.0, -2.0, 3.0]}, {"forces": [0.1, 0.2, 0.3]})["forces"]
    assert m["spearman"] == pytest.approx(1.0)
    m = calibration_metrics({"forces": [1.0, -2.0, 3.0]}, {"forces": [0.3, 0.2, 0.1]})["forces"]
    assert m["spearman"] == pytest.approx(-1.0)
    assert calibration_metrics({"forces": [1.0]}, {"forces": [1.0]})["energy"] == {
        "n": 0,
        "spearman": None,
        "spearman_calibrated": None,
        "mean_z2": None,
        "coverage_68": None,
        "coverage_95": None,
        "miscalibration_area": None,
    }


def test_miscalibration_area_exact_values():
    # One error at the 50 % level: the observed curve is 0 below 0.5 and 1 above; area 1/4.
    assert miscalibration_area([norm.ppf(0.75)], [1.0]) == pytest.approx(0.25, abs=1e-12)
    # Stds far too small (every error outside every interval) or far too large: area -> 1/2.
    assert miscalibration_area([1.0, -2.0], [1e-9, 1e-9]) == pytest.approx(0.5, abs=1e-9)
    assert miscalibration_area([1.0, -2.0], [1e12, 1e12]) == pytest.approx(0.5, abs=1e-9)
    levels = confidence_levels([0.0, 1.0, 2.0], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(levels, [0.0, 1.0, 0.9544997361036416], rtol=1e-12)


def test_metrics_of_perfect_and_too_small_stds(rng):
    """Errors at the exact quantiles of N(0, s^2): coverage equals the level to 1/n."""
    n = 10_000
    z = norm.ppf((np.arange(n) + 0.5) / n)
    s = rng.lognormal(-3.0, 1.0, n)
    e = rng.permutation(z) * s
    perfect = calibration_metrics({"forces": e}, {"forces": s})["forces"]
    assert perfect["coverage_68"] == pytest.approx(0.68, abs=1.0 / n)
    assert perfect["coverage_95"] == pytest.approx(0.95, abs=1.0 / n)
    assert perfect["mean_z2"] == pytest.approx(1.0, abs=2e-3)  # the tails beyond ±3.9 are cut
    assert perfect["miscalibration_area"] < 1e-3
    small = calibration_metrics({"forces": e}, {"forces": s / 2})["forces"]
    assert small["mean_z2"] == pytest.approx(4 * perfect["mean_z2"], rel=1e-12)
    assert small["coverage_68"] == pytest.approx(2 * norm.cdf(norm.ppf(0.84) / 2) - 1, abs=1 / n)
    assert small["coverage_95"] == pytest.approx(2 * norm.cdf(norm.ppf(0.975) / 2) - 1, abs=1 / n)
    assert small["miscalibration_area"] > 0.1
    # Calibration rescales monotonically: the rank correlation is unchanged.
    calibrated = Calibration(forces_scale=2.0, forces_floor=0.01).calibrated("forces", s)
    after = calibration_metrics({"forces": e}, {"forces": calibrated})["forces"]
    assert after["spearman"] == pytest.approx(perfect["spearman"], abs=1e-12)
    assert after["mean_z2"] != perfect["mean_z2"]


def test_apply_rescales_every_std():
    calibration = Calibration(
        energy_scale=2.0, energy_floor=0.01, forces_scale=3.0, forces_floor=0.05
    )
    prediction = {
        "energy": -10.0,
        "forces": np.zeros((4, 3)),
        "energy_std": 0.04,
        "energies_std": np.array([0.01, 0.02, 0.03, 0.04]),
        "forces_std": np.full((4, 3), 0.1),
        "stress_std": np.full(6, 0.002),
    }
    out = apply(calibration, prediction)
    assert out is prediction
    assert out["energy_std"] == pytest.approx(math.hypot(0.08, 4 * 0.01), rel=1e-15)
    assert isinstance(out["energy_std"], float)
    np.testing.assert_allclose(out["energies_std"], np.hypot([0.02, 0.04, 0.06, 0.08], 0.01))
    np.testing.assert_allclose(out["forces_std"], np.full((4, 3), math.hypot(0.3, 0.05)))
    np.testing.assert_allclose(out["stress_std"], np.full(6, 0.006), rtol=1e-15)
    assert out["energy"] == -10.0
    untouched = {"forces": np.zeros((1, 3)), "energy_std": 0.5}
    assert apply(None, untouched) == {"forces": untouched["forces"], "energy_std": 0.5}
    with pytest.raises(ValueError, match="no calibration rule for \\['virial_std'\\]"):
        apply(calibration, {"forces": np.zeros((1, 3)), "virial_std": 1.0})


def test_calibration_validates_and_serialises():
    calibration = Calibration(energy_scale=1.5, energy_floor=1e-4, forces_scale=0.7)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert serialization.from_dict(calibration.to_dict(), "calibration") == calibration
    assert calibration.to_dict()["type"] == "scale_floor"
    with pytest.raises(ValueError, match="energy_scale must be finite and >= 0"):
        Calibration(energy_scale=-1.0)
    with pytest.raises(ValueError, match="forces_floor must be finite"):
        Calibration(forces_floor=math.inf)
    with pytest.raises(ValueError, match="energy_floor must be a number"):
        Calibration(energy_floor="x")
    with pytest.raises(ValueError, match="every std would be 0"):
        Calibration(forces_scale=0.0)
    with pytest.raises(ValueError, match="unknown Calibration settings: \\['scale'\\]"):
        Calibration.from_dict({"type": "scale_floor", "scale": 2.0})


def test_calibration_plot_with_both_panels(tmp_path, rng):
    e, s = _planted(rng, 2.0, 0.01, n=2000)
    path = tmp_path / "calibration.png"
    errors, stds = {"energy": e[:50], "forces": e}, {"energy": s[:50], "forces": s}
    calibration_plot(errors, stds, fit_calibration(errors, stds), str(path))
    assert path.read_bytes()[:8] == PNG
    calibration_plot({"energy": e[:50]}, {"energy": s[:50]}, None, str(tmp_path / "e.png"))
    assert (tmp_path / "e.png").read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def cu_model():
    """A small TwoBody + SOAP model of EMT Cu, with held-out frames that it has not seen."""
    rng = np.random.default_rng(7)
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8),
            gapx.SOAP(species=["Cu"], cutoff=4.0, n_max=3, l_max=2, n_sparse=20),
        ],
        verbose=False,
    )
    model.fit(strained_fcc_cells(rng, 6))
    return model, strained_fcc_cells(rng, 10)


def _raw_predictions(model, frames):
    stored, model.calibration = model.calibration, None
    try:
        return [model.predict(atoms, std=True) for atoms in frames]
    finally:
        model.calibration = stored


def test_gap_calibrate_stores_and_applies_the_scale(cu_model):
    model, held_out = cu_model
    model.calibration = None
    raw = _raw_predictions(model, held_out)
    report = model.calibrate(held_out)
    calibration = model.calibration
    assert isinstance(calibration, Calibration)
    assert report["calibration"] == calibration.to_dict()
    # The metrics before calibration are those of the raw predictions, recomputed here.
    n_atoms = len(held_out[0])
    z = np.array(
        [
            (p["energy"] - a.get_potential_energy()) / p["energy_std"]
            for p, a in zip(raw, held_out, strict=True)
        ]
    )
    assert report["before"]["energy"]["n"] == len(held_out)
    assert report["before"]["energy"]["mean_z2"] == pytest.approx(np.mean(z**2), rel=1e-12)
    assert report["before"]["energy"]["coverage_95"] == pytest.approx(
        np.mean(np.abs(z) <= norm.ppf(0.975))
    )
    assert report["after"]["energy"]["mean_z2"] == pytest.approx(1.0, abs=EXACT)
    assert abs(math.log(calibration.energy_scale)) > 0.05  # the raw stds were off
    for before, atoms in zip(raw, held_out, strict=True):
        after = model.predict(atoms, std=True)
        a, b = calibration.energy_scale, calibration.energy_floor
        assert after["energy_std"] == pytest.approx(
            math.hypot(a * before["energy_std"], n_atoms * b), rel=1e-14
        )
        np.testing.assert_allclose(after["energies_std"], np.hypot(a * before["energies_std"], b))
        np.testing.assert_array_equal(after["forces"], before["forces"])
        assert after["energy"] == before["energy"]
    # Evaluating on the calibration frames reproduces the calibrated metric.
    result, _ = evaluate(model, held_out, progress=False)
    assert result["uncertainty"]["energy"]["mean_z2"] == pytest.approx(1.0, abs=EXACT)
    # Calibrating again fits the raw stds afresh: the same calibration, not a compounded one.
    again = model.calibrate(held_out)
    assert model.calibration == calibration
    assert again["before"] == report["before"]


def test_gap_calibrate_forces(cu_model):
    model, held_out = cu_model
    if "forces_std" not in model.predict(held_out[0], std=True):
        pytest.skip("forces_std not available yet")
    model.calibration = None
    raw = _raw_predictions(model, held_out)
    report = model.calibrate(held_out)
    assert report["before"]["forces"]["n"] == 3 * sum(len(a) for a in held_out)
    assert report["after"]["forces"]["mean_z2"] == pytest.approx(1.0, abs=EXACT)
    a, b = model.calibration.forces_scale, model.calibration.forces_floor
    assert (a, b) != (1.0, 0.0)
    after = model.predict(held_out[0], std=True)
    np.testing.assert_allclose(after["forces_std"], np.hypot(a * raw[0]["forces_std"], b))


def test_calibration_survives_save_and_load(cu_model, tmp_path):
    model, held_out = cu_model
    model.calibrate(held_out)
    model.save(tmp_path / "cal.gapx")
    loaded = gapx.load(tmp_path / "cal.gapx")
    assert loaded.calibration == model.calibration
    a, b = model.predict(held_out[0], std=True), loaded.predict(held_out[0], std=True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_failed_calibration_changes_nothing_and_refit_resets(cu_model):
    model, held_out = cu_model
    model.calibrate(held_out)
    calibration = model.calibration
    unlabelled = held_out[0].copy()
    unlabelled.calc = None
    with pytest.raises(ValueError, match="frame 1: no labels"):
        model.calibrate([held_out[1], unlabelled])
    assert model.calibration is calibration
    with pytest.raises(ValueError, match="no frames"):
        model.calibrate([])
    assert model.calibration is calibration
    refit = gapx.GAP(model.terms, verbose=False)
    refit.fit(held_out[:3])
    refit.calibrate(held_out[3:])
    assert refit.calibration is not None
    refit.fit(held_out[:4])
    assert refit.calibration is None  # a refit changes the stds: the calibration is dropped


class _ShiftedModel:
    """Predicts each frame's EMT labels shifted by known errors, with known stds."""

    keys = {f"{name}_key": name for name in ("energy", "forces", "virial", "stress", "config_type")}

    def __init__(self, calibration=None):
        self.calibration = calibration
        self.seen_calibration = []

    def predict(self, atoms, std=True):
        self.seen_calibration.append(self.calibration)
        from ase.calculators.emt import EMT

        reference = atoms.copy()
        reference.calc = EMT()
        n = len(atoms)
        return {
            "energy": reference.get_potential_energy() + 0.01 * n,  # +0.01 eV/atom
            "forces": reference.get_forces() + 0.1,
            "energy_std": 0.02,  # 0.02 / n eV/atom
            "forces_std": np.full((n, 3), 0.05),
        }


def test_residuals_per_atom_energies_and_force_components():
    frames = strained_fcc_cells(np.random.default_rng(3), 3)
    n_atoms = len(frames[0])
    stored = Calibration(energy_scale=3.0)
    model = _ShiftedModel(stored)
    calibration, report, (errors, stds) = calibrate(model, frames)
    assert model.seen_calibration == [None, None, None]  # predicted without the calibration
    assert model.calibration is stored  # and given back
    np.testing.assert_allclose(errors["energy"], 0.01, rtol=1e-9)
    np.testing.assert_allclose(stds["energy"], 0.02 / n_atoms, rtol=1e-15)
    assert errors["forces"].shape == stds["forces"].shape == (3 * 3 * n_atoms,)
    np.testing.assert_allclose(errors["forces"], 0.1, rtol=1e-9)
    assert calibration.energy_scale == pytest.approx(n_atoms / 2, rel=1e-9)
    assert calibration.forces_scale == pytest.approx(2.0, rel=1e-9)
    assert calibration.energy_floor == calibration.forces_floor == 0.0
    assert report["before"]["forces"]["mean_z2"] == pytest.approx(4.0, rel=1e-9)
    assert report["after"]["forces"]["coverage_68"] == 0.0  # every |z| is 1 > 0.994
    assert report["after"]["forces"]["coverage_95"] == 1.0


@pytest.mark.parametrize("spread", [0.2, 1.0, 3.0])
def test_calibrated_spearman_is_what_calibrated_errors_score(rng, spread):
    """Errors drawn from N(0, s^2) score the calibrated Spearman (to Monte Carlo error); it
    grows with the spread of the stds, from near 0 towards 1."""
    from gapx.uncertainty import calibrated_spearman

    s = rng.lognormal(-3.0, spread, 20_000)
    observed = [
        calibration_metrics({"forces": rng.standard_normal(s.size) * s}, {"forces": s})["forces"]
        for _ in range(4)
    ]
    ideal = observed[0]["spearman_calibrated"]
    assert ideal == calibrated_spearman(s)  # seeded: deterministic
    assert np.mean([m["spearman"] for m in observed]) == pytest.approx(ideal, abs=0.01)
    # A std that carries no information about the error scores 0, whatever its spread.
    uninformative = rng.permutation(s)
    m = calibration_metrics({"forces": rng.standard_normal(s.size) * s}, {"forces": uninformative})
    assert abs(m["forces"]["spearman"]) < 0.03


def test_calibrated_spearman_grows_with_the_spread_of_the_stds(rng):
    from gapx.uncertainty import calibrated_spearman

    z = rng.standard_normal(20_000)
    values = [calibrated_spearman(np.exp(spread * z)) for spread in (0.1, 0.5, 1.0, 3.0)]
    assert values == sorted(values)
    assert values[0] < 0.15  # stds within ±10 %: |error| ranks almost at random
    assert values[-1] > 0.9
