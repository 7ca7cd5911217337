"""Calibration of predicted standard deviations against held-out errors, and its metrics.

A GP's predictive std is only as good as its hyperparameters: a mis-set ``delta`` scales every
posterior variance, and the std of the latent function omits the noise of the reference labels.
:func:`fit_calibration` corrects both on held-out labelled frames; :func:`calibration_metrics`
says how well stds and errors agree; :func:`apply` rescales the stds of a prediction
(``GAP.predict`` calls it with the model's stored :class:`Calibration`).

Errors and stds are dicts by quantity: ``"energy"`` holds energies per atom (the error of the
total energy and its std, both divided by the number of atoms, eV/atom) and ``"forces"`` the
force components (eV/Å), each a flat array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
from tqdm.auto import tqdm

from .labels import extract_labels
from .validation import as_frames, described_settings

#: The calibrated quantities and the units of their errors and stds.
UNITS = {"energy": "eV/atom", "forces": "eV/Angstrom"}
QUANTITIES = tuple(UNITS)

#: The central-interval confidence levels whose coverage :func:`calibration_metrics` reports.
COVERAGE_LEVELS = (0.68, 0.95)

#: Relative size of a likelihood slope at a boundary (floor 0 or scale 0) below which the
#: boundary counts as the maximum (round-off, not a real gain).
_SLOPE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Calibration:
    """Scale and noise floor of predicted stds, for energies and forces separately.

    A calibrated std is ``sqrt((scale * std)**2 + floor**2)``: errors ``e`` given predicted
    stds ``s`` are modelled as ``e ~ N(0, (a s)^2 + b^2)`` with ``a, b >= 0`` the maximum-
    likelihood scale and floor (:func:`fit_calibration`). The scale corrects a posterior that
    is uniformly too wide or too narrow (e.g. a mis-set ``delta`` scales every variance); the
    floor is the part of an error the posterior cannot know about: the noise of the reference
    labels and model inadequacy. So a calibrated std is that of the error against a reference
    label, not of the latent function. Calibrating makes the mean squared z-score exactly 1 on
    the calibration data (a stationarity condition of the likelihood).

    Energies and forces each get their own scale and floor: the floors have different units
    (eV/atom, eV/Å); the stds are different functionals of the posterior (a sum of local
    energies, derivatives) computed with different approximations, so their miscalibration need
    not agree; and a shared scale would be fixed almost entirely by the forces (3N components
    per frame against one energy), leaving the energies' miscalibration uncorrected. Data sets
    of either size support two parameters per quantity; where the likelihood has its maximum at
    no floor (or no scale) the fit returns exactly 0.

    How each std of a prediction is rescaled (:func:`apply`): ``energy_std`` (eV) with the
    energy scale and ``n_atoms * energy_floor`` (the floor is per atom); ``energies_std`` (local
    energies) with the energy scale and floor (consistent with the total when the floors of the
    atoms are fully correlated); ``forces_std`` with the force scale and floor; ``stress_std``
    (a derivative of the energy, like forces) with the force scale only, since no floor is
    fitted in its units.

    Parameters
    ----------
    energy_scale, forces_scale : float
        ``a >= 0`` multiplying the predicted std (1: as predicted).
    energy_floor : float
        ``b >= 0`` (eV/atom) added in quadrature to energy-per-atom stds.
    forces_floor : float
        ``b >= 0`` (eV/Å) added in quadrature to force-component stds.
    """

    energy_scale: float = 1.0
    energy_floor: float = 0.0
    forces_scale: float = 1.0
    forces_floor: float = 0.0

    type_name = "scale_floor"

    def __post_init__(self):
        for item in fields(self):
            try:
                value = float(getattr(self, item.name))
            except (TypeError, ValueError):
                value = getattr(self, item.name)
                raise ValueError(f"{item.name} must be a number, got {value!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{item.name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, item.name, value)
        for quantity in QUANTITIES:
            if self.scale(quantity) == 0 and self.floor(quantity) == 0:
                raise ValueError(f"{quantity} scale and floor are both 0: every std would be 0")

    def scale(self, quantity: str) -> float:
        """The scale of ``"energy"`` or ``"forces"`` stds."""
        return getattr(self, f"{quantity}_scale")

    def floor(self, quantity: str) -> float:
        """The floor of ``"energy"`` (eV/atom) or ``"forces"`` (eV/Å) stds."""
        return getattr(self, f"{quantity}_floor")

    def calibrated(self, quantity: str, stds) -> np.ndarray:
        """Calibrated stds of ``quantity`` from predicted ones (energies per atom, eV/atom)."""
        return np.hypot(
            self.scale(quantity) * np.asarray(stds, dtype=np.float64), self.floor(quantity)
        )

    def to_dict(self) -> dict:
        """JSON-safe settings; ``Calibration.from_dict(c.to_dict()) == c``."""
        return {"type": self.type_name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        settings = described_settings(data, (cls.type_name,), "Calibration")
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown Calibration settings: {sorted(unknown)}")
        return cls(**settings)


def _pair(errors: dict, stds: dict, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(errors.get(quantity, ()), dtype=np.float64).ravel()
    s = np.asarray(stds.get(quantity, ()), dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"{quantity}: {e.size} errors but {s.size} stds")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(s))):
        raise ValueError(f"{quantity}: errors and stds must be finite")
    if np.any(s < 0):
        raise ValueError(f"{quantity}: stds must be >= 0")
    return e, s


def _nll(A: float, B: float, e2: np.ndarray, s2: np.ndarray) -> tuple[float, float, float]:
    """Mean negative log-likelihood (constants dropped) of ``e ~ N(0, A s^2 + B)`` and its
    derivatives with respect to A and B."""
    v = A * s2 + B
    if np.any(v <= 0):
        return math.inf, -math.inf, -math.inf
    r = (1.0 - e2 / v) / v
    return (
        0.5 * float(np.mean(np.log(v) + e2 / v)),
        0.5 * float(np.mean(s2 * r)),
        0.5 * float(np.mean(r)),
    )


def _fit_scale_floor(e: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``e ~ N(0, (a s)^2 + b^2)``, ``a, b >= 0``.

    The two boundaries have closed forms (no floor: ``a^2 = mean(e^2/s^2)``; no scale:
    ``b^2 = mean(e^2)``). Where the likelihood still rises from a boundary into the interior
    (a negative slope of the NLL along the missing parameter), the interior maximum is found
    in log space (BFGS, analytic gradient). The best of these candidates is returned.
    """
    e2, s2 = e**2, s**2
    if not np.any(e2 > 0):
        raise ValueError("every error is zero: there is nothing to calibrate against")
    positive = s2 > 0
    A0 = float(np.mean(e2[positive] / s2[positive])) if np.any(positive) else 0.0
    B0 = float(np.mean(e2))
    # Scale-only first: it wins ties (equal stds make the two boundaries the same model).
    candidates = [(A0, 0.0)] if np.all(positive) else []
    candidates.append((0.0, B0))
    interior = False
    for A, B in candidates:
        _, dA, dB = _nll(A, B, e2, s2)
        v_mean = float(np.mean(A * s2 + B))
        if A == 0:  # does a scale help? (slope per relative change of the variance)
            interior |= dA * v_mean / float(np.mean(s2)) < -_SLOPE_TOLERANCE
        else:  # does a floor help?
            interior |= dB * v_mean < -_SLOPE_TOLERANCE
    if interior and A0 > 0:

        def objective(x):
            A, B = math.exp(x[0]), math.exp(x[1])
            value, dA, dB = _nll(A, B, e2, s2)
            return value, np.array([A * dA, B * dB])

        start = np.log([0.5 * A0, 0.5 * B0])
        found = scipy.optimize.minimize(
            objective, start, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 500}
        )
        candidates.append((math.exp(found.x[0]), math.exp(found.x[1])))
    A, B = min(candidates, key=lambda c: _nll(c[0], c[1], e2, s2)[0])
    return math.sqrt(A), math.sqrt(B)


def fit_calibration(errors: dict, stds: dict) -> Calibration:
    """Maximum-likelihood :class:`Calibration` of predicted stds against observed errors.

    Parameters
    ----------
    errors, stds : dict
        ``{"energy": (n_frames,) eV/atom, "forces": (n_components,) eV/Å}`` errors (predicted -
        reference) and predicted stds, same shapes; either quantity may be absent or empty.

    Returns
    -------
    Calibration
        Scale and floor per quantity maximising the Gaussian likelihood of the errors, each
        error treated as independent (for the force components of one frame, which are
        correlated, this is a composite likelihood: the estimate stays consistent). A quantity
        without data keeps its stds as predicted (scale 1, floor 0): the calibration claims
        nothing it has not measured.

    Raises
    ------
    ValueError
        No errors at all, mismatched shapes, non-finite values, negative stds, or all errors 0.
    """
    fitted = {}
    for quantity in QUANTITIES:
        e, s = _pair(errors, stds, quantity)
        if e.size:
            try:
                fitted[quantity] = _fit_scale_floor(e, s)
            except ValueError as error:
                raise ValueError(f"{quantity}: {error}") from None
    if not fitted:
        raise ValueError(
            "no errors with predicted stds to calibrate on: energies need energy labels and "
            "energy_std, forces need force labels and forces_std"
        )
    settings = {}
    for quantity in QUANTITIES:
        a, b = fitted.get(quantity, (1.0, 0.0))
        settings[f"{quantity}_scale"], settings[f"{quantity}_floor"] = a, b
    return Calibration(**settings)


def confidence_levels(errors, stds) -> np.ndarray:
    """For each error, the smallest central Gaussian interval (mean ± k std) holding it, as a
    confidence level ``erf(|e| / (s sqrt 2))`` in [0, 1] (1 for a zero std and a non-zero
    error, 0 for a zero error)."""
    e = np.abs(np.asarray(errors, dtype=np.float64).ravel())
    s = np.asarray(stds, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(e == 0, 0.0, e / s)
    return scipy.special.erf(z / math.sqrt(2.0))


def coverage_curve(errors, stds, levels) -> np.ndarray:
    """Observed coverage at each expected confidence level: the fraction of errors inside the
    central interval of that level (the fraction with :func:`confidence_levels` <= level)."""
    observed = np.sort(confidence_levels(errors, stds))
    if observed.size == 0:
        return np.full(np.shape(levels), np.nan)
    return np.searchsorted(observed, np.asarray(levels), side="right") / observed.size


def miscalibration_area(errors, stds) -> float:
    """Area between the observed and the expected coverage curves over levels 0 to 1.

    ``integral_0^1 |F(p) - p| dp`` with ``F`` the observed coverage (the empirical CDF of
    :func:`confidence_levels`), computed exactly: ``F`` is a step function. 0 for perfect
    calibration, at most 0.5 (every std far too small, or far too large).
    """
    p = np.sort(confidence_levels(errors, stds))
    n = p.size
    if n == 0:
        return math.nan
    edges = np.concatenate([[0.0], p, [1.0]])
    c = np.arange(n + 1) / n  # F on [edges[k], edges[k + 1])

    def primitive(x):  # d/dx (x - c)|x - c| / 2 = |x - c|
        return 0.5 * (x - c) * np.abs(x - c)

    return float(np.sum(primitive(edges[1:]) - primitive(edges[:-1])))


#: Draws of N(0, std^2) errors averaged for ``spearman_calibrated`` (its Monte Carlo error is
#: about 1 / sqrt(n * draws), below 1e-3 for the thousands of errors a calibration set has).
SPEARMAN_DRAWS = 16


def calibrated_spearman(s: np.ndarray) -> float:
    """The Spearman correlation of |error| with ``s`` that errors drawn exactly from N(0, s^2)
    would give (mean of :data:`SPEARMAN_DRAWS` seeded draws): the value a perfectly
    calibrated model reaches with these stds. It is far below 1 unless the stds spread over
    orders of magnitude (|error| is a random draw however good the std), so an observed
    Spearman is judged against it (Pernot, J. Chem. Phys. 156, 114109 (2022))."""
    rng = np.random.default_rng(0)
    draws = [
        scipy.stats.spearmanr(np.abs(rng.standard_normal(s.size)) * s, s)[0]
        for _ in range(SPEARMAN_DRAWS)
    ]
    return float(np.mean(draws))


def _metrics(e: np.ndarray, s: np.ndarray) -> dict:
    n = int(e.size)
    out = {"n": n, "spearman": None, "spearman_calibrated": None, "mean_z2": None}
    out.update({f"coverage_{round(100 * p)}": None for p in COVERAGE_LEVELS})
    out["miscalibration_area"] = None
    if n == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(e == 0, 0.0, e / s)
    if n >= 2 and np.ptp(s) > 0 and np.ptp(np.abs(e)) > 0:
        out["spearman"] = float(scipy.stats.spearmanr(np.abs(e), s)[0])
        out["spearman_calibrated"] = calibrated_spearman(s)
    out["mean_z2"] = float(np.mean(z**2))
    levels = coverage_curve(e, s, COVERAGE_LEVELS)
    for p, observed in zip(COVERAGE_LEVELS, levels, strict=True):
        out[f"coverage_{round(100 * p)}"] = float(observed)
    out["miscalibration_area"] = miscalibration_area(e, s)
    return out


def calibration_metrics(errors: dict, stds: dict) -> dict:
    """How well predicted stds match observed errors, for energies per atom and force components.

    Parameters
    ----------
    errors, stds : dict
        As for :func:`fit_calibration`.

    Returns
    -------
    dict
        ``{"energy": m, "forces": m}``, each ``m`` with ``n`` (number of errors), ``spearman``
        (rank correlation of |error| with std; None below 2 errors or for constant values),
        ``spearman_calibrated`` (:func:`calibrated_spearman`: what a perfectly calibrated model
        with these stds would score; compare ``spearman`` with it, not with 1),
        ``mean_z2`` (mean of (error/std)^2; 1 when calibrated), ``coverage_68`` and
        ``coverage_95`` (fraction of errors inside the central 68 % and 95 % Gaussian
        intervals, mean ± 0.994 and ± 1.960 std) and ``miscalibration_area``
        (:func:`miscalibration_area`); all None when ``n`` is 0.
    """
    return {q: _metrics(*_pair(errors, stds, q)) for q in QUANTITIES}


#: How :func:`apply` rescales each std a prediction can hold: (quantity, floor multiplier).
_STD_KEYS = {
    "energy_std": ("energy", "n_atoms"),
    "energies_std": ("energy", 1),
    "forces_std": ("forces", 1),
    "stress_std": ("forces", 0),
}


def apply(calibration: Calibration | None, prediction: dict) -> dict:
    """Rescale every ``*_std`` of ``prediction`` (a ``GAP.predict`` dict) in place; returns it.

    ``calibration`` None leaves the prediction as it is. How each std is rescaled is described
    in :class:`Calibration`. A ``*_std`` key this function does not know raises ValueError
    rather than being reported uncalibrated.
    """
    if calibration is None:
        return prediction
    unknown = sorted(k for k in prediction if k.endswith("_std") and k not in _STD_KEYS)
    if unknown:
        raise ValueError(f"no calibration rule for {unknown}: add it to gapx.uncertainty")
    n_atoms = np.shape(prediction["forces"])[0]
    for key, (quantity, multiplier) in _STD_KEYS.items():
        if key not in prediction:
            continue
        floor = calibration.floor(quantity) * (n_atoms if multiplier == "n_atoms" else multiplier)
        value = np.hypot(calibration.scale(quantity) * np.asarray(prediction[key]), floor)
        prediction[key] = float(value) if np.ndim(prediction[key]) == 0 else value
    return prediction


def frame_residuals(prediction: dict, labels) -> tuple[dict, dict]:
    """Errors and predicted stds of one frame, by quantity, where both a label and a std exist.

    ``prediction`` is a ``GAP.predict`` dict, ``labels`` the frame's
    :class:`gapx.labels.FrameLabels`. Returns ``(errors, stds)``: ``"energy"`` (1,) per atom
    (eV/atom) and ``"forces"`` (3 n_atoms,) components (eV/Å), errors as predicted - reference.
    """
    n_atoms = np.shape(prediction["forces"])[0]
    errors, stds = {}, {}
    if labels.energy is not None and "energy_std" in prediction:
        errors["energy"] = np.array([(float(prediction["energy"]) - labels.energy) / n_atoms])
        stds["energy"] = np.array([float(prediction["energy_std"]) / n_atoms])
    if labels.forces is not None and "forces_std" in prediction:
        errors["forces"] = (np.asarray(prediction["forces"]) - labels.forces).ravel()
        stds["forces"] = np.asarray(prediction["forces_std"], dtype=np.float64).ravel()
    return errors, stds


def concatenate(parts) -> tuple[dict, dict]:
    """One ``(errors, stds)`` pair from :func:`frame_residuals` of many frames (every quantity
    present, empty where no frame had it)."""
    errors, stds = {}, {}
    for quantity in QUANTITIES:
        for merged, index in ((errors, 0), (stds, 1)):
            chunks = [part[index][quantity] for part in parts if quantity in part[index]]
            merged[quantity] = np.concatenate(chunks) if chunks else np.zeros(0)
    return errors, stds


def residuals(model, frames, progress: bool = False) -> tuple[dict, dict]:
    """Errors of ``model`` on labelled ``frames`` and its own stds (any stored calibration is
    not applied); labels are found with the model's label keys. Returns ``(errors, stds)``
    as :func:`concatenate`."""
    frames = as_frames(frames)
    if not frames:
        raise ValueError("no frames to calibrate on")
    labels = [extract_labels(atoms, index, **model.keys) for index, atoms in enumerate(frames)]
    parts = []
    stored, model.calibration = model.calibration, None
    try:
        bar = tqdm(frames, desc="calibrate", unit="frame", disable=not progress, leave=False)
        for atoms, frame_labels in zip(bar, labels, strict=True):
            structure = atoms.copy()
            structure.calc = None
            parts.append(frame_residuals(model.predict(structure, std=True), frame_labels))
    finally:
        model.calibration = stored
    return concatenate(parts)


def calibration_report(calibration: Calibration, errors: dict, stds: dict) -> dict:
    """``{"calibration": calibration.to_dict(), "before": ..., "after": ...}``: the
    :func:`calibration_metrics` of the predicted and of the calibrated stds."""
    calibrated = {q: calibration.calibrated(q, s) for q, s in stds.items()}
    return {
        "calibration": calibration.to_dict(),
        "before": calibration_metrics(errors, stds),
        "after": calibration_metrics(errors, calibrated),
    }


def calibrate(model, frames, progress: bool = False) -> tuple[Calibration, dict, tuple]:
    """Fit a calibration of ``model``'s stds on held-out labelled ``frames`` (the model is not
    changed). Returns ``(calibration, report, (errors, stds))``: :func:`calibration_report` and
    the :func:`residuals` it was fitted to."""
    errors, stds = residuals(model, frames, progress=progress)
    calibration = fit_calibration(errors, stds)
    return calibration, calibration_report(calibration, errors, stds), (errors, stds)


def format_calibration(calibration: Calibration) -> str:
    """One line: the scale and floor (meV units) of each quantity."""
    return (
        f"calibration: energy scale {calibration.energy_scale:.4g}, floor "
        f"{1000 * calibration.energy_floor:.4g} meV/atom; forces scale "
        f"{calibration.forces_scale:.4g}, floor {1000 * calibration.forces_floor:.4g} meV/Å"
    )


def format_metrics_table(columns: dict) -> str:
    """A fixed-width table of :func:`calibration_metrics`, one row per quantity and entry of
    ``columns`` (e.g. ``{"before": ..., "after": ...}``)."""
    header = (
        f"{'uncertainty':<14} {'stds':<11} {'n':>7} {'Spearman':>9} {'(ideal)':>8} {'mean z²':>9} "
        f"{'in 68%':>7} {'in 95%':>7} {'miscal.':>8}"
    )
    lines = [header, "-" * len(header)]
    names = {"energy": "energy/atom", "forces": "force comp."}

    def cell(value, width, digits):
        return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    for quantity in QUANTITIES:
        if all(metrics[quantity]["n"] == 0 for metrics in columns.values()):
            lines.append(f"{names[quantity]:<14} no errors with predicted stds")
            continue
        for label, metrics in columns.items():
            m = metrics[quantity]
            lines.append(
                f"{names[quantity]:<14} {label[:11]:<11} {m['n']:>7} "
                f"{cell(m['spearman'], 9, 3)} {cell(m['spearman_calibrated'], 8, 3)} "
                f"{cell(m['mean_z2'], 9, 3)} "
                f"{cell(m['coverage_68'], 7, 3)} {cell(m['coverage_95'], 7, 3)} "
                f"{cell(m['miscalibration_area'], 8, 4)}"
            )
    return "\n".join(lines)
