"""Evidence optimisation of the cheap hyperparameters: delta per term and the noise sigmas.

:func:`optimize_hyperparameters` runs pass 1 of the fit (descriptors, sparse points), then one
streamed pass that folds each noise group's unscaled (delta = 1) design rows into its own
(M+1)^2 R factor (:class:`gapx.gp.evidence.GroupStatistics`), and maximises the DTC evidence
(:mod:`gapx.gp.evidence`) over log delta and log sigma with L-BFGS-B: every evaluation is
O(G M^3), independent of the number of rows. ``GAP(..., optimize="evidence")`` calls it inside
``fit`` and fits with the values found.

Noise groups: sigma_energy, sigma_force and sigma_virial, and, when frames carry config types,
one of each per config type (``<config_type>.sigma_force``, ...). Observations whose frame sets
its own sigma (``energy_sigma`` & co. in ``info``) keep it: they form one fixed group.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from . import blocks, fitting
from .gp import design, solver
from .gp.evidence import Evidence, GroupStatistics, fold_triangle
from .gp.solver import StreamingQR
from .gp.sparse_set import SparseSet, kmm_cholesky

QUANTITIES = ("energy", "force", "virial")
FIXED = "fixed"
#: Bounds of the search, in units of the starting value (log space: nothing can go negative).
BOUND_FACTOR = 1e4


@dataclass
class EvidenceResult:
    """What :func:`optimize_hyperparameters` found (all sigmas as the GAP takes them)."""

    deltas: list[float]
    sigmas: dict[str, float]
    start_deltas: list[float]
    start_sigmas: dict[str, float]
    log_evidence_before: float
    log_evidence_after: float
    n_evaluations: int
    seconds: dict[str, float] = field(default_factory=dict)
    converged: bool = True
    #: (log delta per term, log sigma per noise group) at the optimum, as :class:`Evidence` takes.
    log_point: tuple = ()

    def report(self) -> dict:
        return {
            "deltas": {"before": self.start_deltas, "after": self.deltas},
            "sigmas": {"before": self.start_sigmas, "after": self.sigmas},
            "log_evidence": {"before": self.log_evidence_before, "after": self.log_evidence_after},
            "n_evaluations": self.n_evaluations,
            "converged": self.converged,
            "seconds": dict(self.seconds),
        }


def _group_name(config_type, quantity: str) -> str:
    return f"sigma_{quantity}" if config_type is None else f"{config_type}.sigma_{quantity}"


def _start_sigma(model, config_type, quantity: str) -> float:
    index = QUANTITIES.index(quantity)
    if config_type is not None and config_type in model.config_type_sigma:
        return model.config_type_sigma[config_type][index]
    return (model.sigma_energy, model.sigma_force, model.sigma_virial)[index]


def _frame_groups(model, frames, labels, targets, names: list[str]):
    """Per frame ``(energy, forces, virial, (r_e, r_f, r_v))`` with the row divisors r, and the
    group index of each quantity (-1 when unlabelled); ``names`` grows as groups appear."""
    out_targets, groups = [], []
    for atoms, lab, (energy, forces, virial, sigmas) in zip(frames, labels, targets, strict=True):
        root = math.sqrt(len(atoms))
        overrides = (lab.energy_sigma, lab.force_sigma, lab.virial_sigma)
        scales, index = [], []
        for q, (quantity, value) in enumerate(
            zip(QUANTITIES, (energy, forces, virial), strict=True)
        ):
            fixed = overrides[q] is not None
            name = FIXED if fixed else _group_name(lab.config_type, quantity)
            if value is None:
                index.append(-1)
            else:
                if name not in names:
                    names.append(name)
                index.append(names.index(name))
            scales.append(sigmas[q] if fixed else (1.0 if quantity == "force" else root))
        out_targets.append((energy, forces, virial, tuple(scales)))
        groups.append(tuple(index))
    return out_targets, groups


def group_statistics(model_parts, frames, targets, groups, n_groups):
    """One block's :class:`GroupStatistics` parts: per group ``(rows or their R factor, whether
    it is R, number of rows, sum of log r)``."""
    terms, sparse_sets, n_columns = model_parts
    rows = blocks.scaled_rows(model_parts, frames, targets)
    n_atoms = [len(a) for a in frames]
    layout = design.block_layout(n_atoms, *[[t[q] is not None for t in targets] for q in range(3)])
    row_group = np.full(layout.n_obs, -1, dtype=np.int64)
    log_scale = np.zeros(layout.n_obs)
    for f, (index, target) in enumerate(zip(groups, targets, strict=True)):
        starts = (layout.energy_row[f], layout.force_row[f], layout.virial_row[f])
        sizes = (1, 3 * n_atoms[f], 6)
        for q in range(3):
            if index[q] >= 0:
                row_group[starts[q] : starts[q] + sizes[q]] = index[q]
                log_scale[starts[q] : starts[q] + sizes[q]] = math.log(target[3][q])
    out = []
    for g in range(n_groups):
        mask = row_group == g
        part = rows[mask]
        # As blocks.block_factor: reduced to R only when taller than wide, so that folding it
        # costs no more than folding the rows would.
        triangle = part.shape[0] > n_columns + 1
        if triangle:
            qr = StreamingQR(n_columns)
            qr.add_rows(part)
            part = np.triu(qr.R)
        out.append((part, triangle, int(mask.sum()), float(log_scale[mask].sum())))
    return out


def unit_sparse_sets(model, fit_frames, gradient_bytes, client=None) -> list[SparseSet]:
    """The sparse sets ``fit`` selects (pass 1), with delta = 1 and their K_MM factors."""
    selected = fitting.select_sparse_sets(model, fit_frames, gradient_bytes, client)
    unit = []
    for s in selected:
        L, jitter = kmm_cholesky(model.terms[s.term].kernel, s.points, 1.0, model.sparse_jitter)
        unit.append(SparseSet(s.term, s.kind, s.points, s.offset, 1.0, jitter, L))
    return unit


@dataclass
class Statistics:
    """The statistics pass: the evidence and its noise groups, and what the fit with any
    hyperparameters needs besides (:func:`fitted_state`)."""

    evidence: Evidence
    names: list[str]
    unit: list[SparseSet]
    fit_frames: list
    targets: list
    e0: dict[str, float]


def evidence_statistics(model, frames, client=None) -> Statistics:
    """Pass 1 (descriptors, sparse points) and the statistics pass over ``frames``."""
    fit_frames, targets, e0, fit_labels = fitting.prepare(model, frames)
    gradient_bytes = blocks.gradient_bytes(fit_frames, model.terms)
    unit = unit_sparse_sets(model, fit_frames, gradient_bytes, client)
    n_columns = sum(s.size for s in unit)
    L = np.zeros((n_columns, n_columns))
    column_term = np.zeros(n_columns, dtype=np.int64)
    for s in unit:
        L[s.columns, s.columns] = s.factor
        column_term[s.columns] = s.term
    names: list[str] = []
    scaled_targets, groups = _frame_groups(model, fit_frames, fit_labels, targets, names)
    plan = blocks.frame_blocks(
        gradient_bytes + blocks.design_row_bytes([len(a) for a in fit_frames], n_columns),
        model.block_memory,
    )
    parts = [[StreamingQR(n_columns), 0, 0.0] for _ in names]
    for block in blocks.map_blocks(
        client,
        group_statistics,
        (model.terms, unit, n_columns),
        [
            (
                [fit_frames[k] for k in b],
                [scaled_targets[k] for k in b],
                [groups[k] for k in b],
                len(names),
            )
            for b in plan
        ],
        [len(b) for b in plan],
        desc="evidence statistics",
        verbose=model.verbose,
    ):
        for part, (rows, triangle, n, log_scale) in zip(parts, block, strict=True):
            if triangle:
                part[0].R = fold_triangle(part[0].R, rows)
            else:
                part[0].add_rows(rows)
            part[1], part[2] = part[1] + n, part[2] + log_scale
    stats = [GroupStatistics(np.triu(qr.R), n, s) for qr, n, s in parts]
    evidence = Evidence(L, column_term, stats)
    return Statistics(evidence, names, unit, fit_frames, targets, e0)


def maximize_evidence(model, evidence: Evidence, names: list[str]) -> EvidenceResult:
    """L-BFGS-B on ``evidence`` over log delta per term and log sigma per free noise group,
    from ``model``'s values, within :data:`BOUND_FACTOR` of them."""
    start = time.perf_counter()
    free = [k for k, name in enumerate(names) if name != FIXED]
    log_sigma0 = np.zeros(len(names))
    for k in free:
        config_type, _, quantity = names[k].rpartition(".")
        log_sigma0[k] = math.log(
            _start_sigma(model, config_type or None, quantity.removeprefix("sigma_"))
        )
    log_delta0 = np.log([term.delta for term in model.terms])
    n_terms = len(model.terms)
    x0 = np.concatenate([log_delta0, log_sigma0[free]])
    scale = 1.0 / max(evidence.n_rows, 1)
    evaluations = 0

    def objective(x):
        nonlocal evaluations
        evaluations += 1
        log_sigma = log_sigma0.copy()
        log_sigma[free] = x[n_terms:]
        value, g_delta, g_sigma = evidence.value_and_gradient(x[:n_terms], log_sigma)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(x)
        return -value * scale, -np.concatenate([g_delta, g_sigma[free]]) * scale

    before = -objective(x0)[0] / scale
    span = math.log(BOUND_FACTOR)
    result = scipy.optimize.minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(v - span, v + span) for v in x0],
        options={"maxiter": 100, "ftol": 1e-10, "gtol": 1e-6},
    )
    x = result.x if result.fun <= objective(x0)[0] else x0
    log_sigma = log_sigma0.copy()
    log_sigma[free] = x[n_terms:]
    sigmas = dict(zip([names[k] for k in free], np.exp(x[n_terms:]).tolist(), strict=True))
    starts = dict(zip([names[k] for k in free], np.exp(log_sigma0[free]).tolist(), strict=True))
    return EvidenceResult(
        deltas=np.exp(x[:n_terms]).tolist(),
        sigmas=sigmas,
        start_deltas=np.exp(log_delta0).tolist(),
        start_sigmas=starts,
        log_evidence_before=float(before),
        log_evidence_after=float(-objective(x)[0] / scale),
        n_evaluations=evaluations,
        seconds={"optimisation": time.perf_counter() - start},
        converged=bool(result.success),
        log_point=(x[:n_terms].copy(), log_sigma),
    )


def optimize_hyperparameters(model, frames, client=None):
    """Maximise the DTC evidence of ``model`` on ``frames`` over delta per term and the noise
    sigmas (per config type when frames have one); ``model`` is not modified.

    The sparse points are those ``fit`` selects (they depend on descriptors only). Returns
    ``(result, statistics)``: the :class:`EvidenceResult` (:func:`apply` sets its values on a
    model) and the :class:`Statistics` of the pass, from which :func:`fitted_state` gives the
    fit with the values found without another pass over the data.
    """
    start = time.perf_counter()
    statistics = evidence_statistics(model, frames, client)
    statistics_seconds = time.perf_counter() - start
    result = maximize_evidence(model, statistics.evidence, statistics.names)
    result.seconds["statistics"] = statistics_seconds
    return result, statistics


def fitted_state(model, statistics: Statistics, result: EvidenceResult) -> fitting.FittedState:
    """The :class:`~gapx.fitting.FittedState` of fitting ``model`` (with ``result``'s values
    applied, see :func:`apply`) to the statistics' frames, from the statistics alone.

    The fit's stacked system is the evidence's ``C`` with its columns scaled by delta
    (``A^T A = Delta C Delta``), so its R factor is the evidence's times Delta and its weights
    are the evidence's; equal to :func:`gapx.fitting.fit` with the same values up to round-off.
    """
    start = time.perf_counter()
    d, _, R_aug = statistics.evidence.factor(*result.log_point)
    M = statistics.evidence.n_columns
    alpha, R = solver.triangular_solve(R_aug * np.append(d, 1.0)[None, :], M)
    points = {(s.term, s.kind): s.points for s in statistics.unit}
    sparse_sets = fitting.make_sparse_sets(model, points)
    for s in sparse_sets:
        s.factor = np.ascontiguousarray(s.factor)
    summary = fitting.fit_summary(
        model, statistics.fit_frames, statistics.targets, sparse_sets, statistics.e0
    )
    summary["fit_seconds"] = time.perf_counter() - start + sum(result.seconds.values())
    summary["evidence"] = result.report()
    return fitting.FittedState(
        e0=dict(statistics.e0),
        sparse_sets=sparse_sets,
        alpha=alpha,
        R=np.ascontiguousarray(R),
        summary=summary,
    )


def apply(model, result: EvidenceResult) -> None:
    """Set ``result``'s deltas (on copies of the terms) and sigmas on ``model``."""
    model.terms = [
        type(term).from_dict({**term.to_dict(), "delta": delta})
        for term, delta in zip(model.terms, result.deltas, strict=True)
    ]
    defaults = [model.sigma_energy, model.sigma_force, model.sigma_virial]
    per_type: dict[str, list[float]] = {}
    for name, value in result.sigmas.items():
        config_type, _, key = name.rpartition(".")
        q = QUANTITIES.index(key.removeprefix("sigma_"))
        if config_type:
            if config_type not in per_type:
                per_type[config_type] = [_start_sigma(model, config_type, x) for x in QUANTITIES]
            per_type[config_type][q] = value
        else:
            defaults[q] = value
    model.sigma_energy, model.sigma_force, model.sigma_virial = defaults
    model.config_type_sigma = {
        **model.config_type_sigma,
        **{k: tuple(v) for k, v in per_type.items()},
    }
