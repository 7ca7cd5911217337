"""The fit pipeline: labels to targets, e0, sparse points, and the streamed QR solve.

:func:`fit` reads a model's settings and returns a new :class:`FittedState`; it never modifies
the model, so a fit that fails part-way leaves the model exactly as it was (``GAP.fit`` adopts the
state only once it is complete).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from . import blocks
from .gp.solver import StreamingQR
from .gp.sparse_set import SparseSet, kmm_cholesky
from .labels import extract_labels
from .neighbors import StructureContext
from .validation import as_atomic_numbers, as_frames

logger = logging.getLogger("gapx")

E0_METHODS = ("average", "isolated_atom")


@dataclass
class FittedState:
    """Everything a fit determines: e0 per species, sparse sets, weights and the R factor.

    ``R`` is the upper-triangular factor with ``Sigma = (A^T A)^-1 = R^-1 R^-T`` (the posterior
    covariance of the weights); ``summary`` describes the fit.
    """

    e0: dict[str, float]
    sparse_sets: list[SparseSet]
    alpha: np.ndarray
    R: np.ndarray
    summary: dict = field(default_factory=dict)


def noise_sigmas(model, labels, n_atoms: int) -> tuple[float, float, float]:
    """Noise (energy eV, force eV/Å, virial eV) of one frame's observations.

    The model's defaults, overridden per config_type and then per frame, with the energy and
    virial sigmas (given per atom) scaled by sqrt(n_atoms).
    """
    sigma = (model.sigma_energy, model.sigma_force, model.sigma_virial)
    if labels.config_type is not None and labels.config_type in model.config_type_sigma:
        sigma = model.config_type_sigma[labels.config_type]
    e, f, v = sigma
    e = labels.energy_sigma if labels.energy_sigma is not None else e
    f = labels.force_sigma if labels.force_sigma is not None else f
    v = labels.virial_sigma if labels.virial_sigma is not None else v
    root = math.sqrt(n_atoms)
    return e * root, f, v * root


def warn_unused_config_types(model, config_types) -> None:
    """Warn about ``config_type_sigma`` entries that no frame's config_type (``config_types``,
    the names the frames have) names: a typo silently fitting those frames with the default
    sigmas."""
    known = sorted(set(config_types))
    unused = sorted(set(model.config_type_sigma) - set(known))
    if unused:
        warnings.warn(
            f"config_type_sigma has entries for {unused}, but no frame has that "
            f"{model.keys['config_type_key']!r}; the frames' config types are "
            f"{known if known else 'none'}",
            UserWarning,
            stacklevel=4,
        )


def _baseline_energy(model, atoms) -> float:
    return 0.0 if model.baseline is None else float(model.baseline.calculate(atoms)["energy"])


def e0_by_method(method, species, isolated: dict, per_atom) -> dict[str, float]:
    """e0 of each of ``species`` by ``method`` (see :class:`gapx.GAP`) from what the data gives:
    ``isolated`` the energy of each isolated_atom frame's species and ``per_atom`` the energies
    per atom of the fitted frames that have one (both with the baseline removed)."""
    if isinstance(method, dict):
        missing = [s for s in species if s not in method]
        if missing:
            raise ValueError(f"e0 has no entry for species {missing}")
        return {s: method[s] for s in species}
    if method == "isolated_atom":
        missing = [s for s in species if s not in isolated]
        if missing:
            raise ValueError(f"e0='isolated_atom' but no isolated_atom frame for {missing}")
        return {s: isolated[s] for s in species}
    if not len(per_atom):
        logger.warning("e0='average' but no frame has an energy: e0 set to 0")
    return dict.fromkeys(species, float(np.mean(per_atom)) if len(per_atom) else 0.0)


def compute_e0(model, frames, labels, fit_index) -> dict[str, float]:
    """Per-species e0 by the model's ``e0_method`` (see :class:`gapx.GAP`)."""
    species = sorted({chemical_symbols[z] for a in frames for z in a.numbers})
    isolated = {}
    if model.e0_method == "isolated_atom":
        for n, (atoms, lab) in enumerate(zip(frames, labels, strict=True)):
            if lab.config_type != "isolated_atom":
                continue
            if len(atoms) != 1 or lab.energy is None:
                raise ValueError(
                    f"frame {n}: an isolated_atom frame must have one atom and an energy"
                )
            isolated[chemical_symbols[atoms.numbers[0]]] = lab.energy - _baseline_energy(
                model, atoms
            )
    per_atom = [
        (labels[n].energy - _baseline_energy(model, frames[n])) / len(frames[n])
        for n in fit_index
        if labels[n].energy is not None
    ]
    return e0_by_method(model.e0_method, species, isolated, per_atom)


def frame_targets(model, frames, labels, e0: dict[str, float]) -> list[tuple]:
    """Per frame ``(energy, forces, virial, sigmas)`` the GP fits: reference − e0 − baseline."""
    e0_by_number = np.zeros(len(chemical_symbols))
    for symbol, value in e0.items():
        e0_by_number[atomic_numbers[symbol]] = value
    targets = []
    for atoms, lab in zip(frames, labels, strict=True):
        base = model.baseline.calculate(atoms) if model.baseline is not None else None
        energy = forces = virial = None
        if lab.energy is not None:
            energy = lab.energy - e0_by_number[atoms.numbers].sum()
            if base is not None:
                energy -= float(base["energy"])
        if lab.forces is not None:
            forces = lab.forces - (base["forces"] if base is not None else 0.0)
        if lab.virial is not None:
            virial = full_3x3_to_voigt_6_stress(lab.virial)
            if base is not None:
                virial = virial + np.asarray(base["stress"]) * atoms.get_volume()
        targets.append((energy, forces, virial, noise_sigmas(model, lab, len(atoms))))
    return targets


def memory_estimate(n_observations: int, n_columns: int, block_memory: float) -> dict:
    """Bytes of a fit with ``n_observations`` targets and ``n_columns`` sparse points.

    ``full_design_matrix_bytes`` is what holding the design matrix (plus the K_MM rows) would
    take; the fit streams it in blocks and holds only the (M+1)^2 R factor (``solver_bytes``)
    and one block (``block_memory``): ``estimated_peak_bytes``.
    """
    solver = 8 * (n_columns + 1) ** 2
    return {
        "full_design_matrix_bytes": 8 * (n_observations + n_columns) * (n_columns + 1),
        "solver_bytes": solver,
        "estimated_peak_bytes": solver + block_memory,
    }


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units (B, KiB, MiB, GiB, TiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def select_sparse_sets(
    model, fit_frames, gradient_bytes, client=None, clock=None
) -> list[SparseSet]:
    """Pass 1: descriptor values of every frame, then sparse points per (term, kind) by each
    term's method, seeded by (model.seed, term, kind). ``gradient_bytes`` per frame plan the
    blocks (:func:`gapx.blocks.gradient_bytes`)."""
    values = [dict() for _ in model.terms]
    plan = blocks.frame_blocks(gradient_bytes, model.block_memory)
    for block_values in blocks.map_blocks(
        client,
        blocks.descriptor_values,
        model.terms,
        [([fit_frames[k] for k in b],) for b in plan],
        [len(b) for b in plan],
        desc="descriptors",
        verbose=model.verbose,
    ):
        for t, by_kind in enumerate(block_values):
            for kind, X in by_kind.items():
                values[t].setdefault(kind, []).append(X)
    if clock is not None:
        clock.lap("descriptors")
    points = {}
    for t, term in enumerate(model.terms):
        for kind in sorted(values[t]):
            X = np.concatenate(values[t][kind])
            points[t, kind] = term.select_sparse(X, np.random.default_rng([model.seed, t, kind]))
    return make_sparse_sets(model, points)


def make_sparse_sets(model, points: dict) -> list[SparseSet]:
    """Sparse sets of ``points`` ``{(term, kind): (n, n_features) array}``, in (term, kind)
    order with consecutive columns, each with the Cholesky factor of its K_MM block."""
    sparse_sets = []
    offset = 0
    for t, kind in sorted(points):
        term = model.terms[t]
        chosen = np.asarray(points[t, kind], dtype=np.float64)
        L, jitter = kmm_cholesky(term.kernel, chosen, term.delta, model.sparse_jitter)
        sparse_sets.append(SparseSet(t, kind, chosen, offset, term.delta, jitter, L))
        offset += chosen.shape[0]
    return sparse_sets


def prior_solver(sparse_sets: list[SparseSet]) -> StreamingQR:
    """A :class:`StreamingQR` holding the rows L^T of K_MM = L L^T (block diagonal over the
    sparse sets), ready for the noise-scaled design rows to be folded in."""
    solver = StreamingQR(sum(s.size for s in sparse_sets))
    for s in sparse_sets:
        solver.R[s.offset : s.offset + s.size, s.columns] = s.factor.T
    return solver


def fit_summary(model, fit_frames, targets, sparse_sets, e0) -> dict:
    """What a fit used: counts of frames, targets and sparse points, memory, jitter, e0."""
    n_energy = sum(t[0] is not None for t in targets)
    n_force = sum(3 * len(a) for a, t in zip(fit_frames, targets, strict=True) if t[1] is not None)
    n_virial = sum(6 for t in targets if t[2] is not None)
    n_columns = sum(s.size for s in sparse_sets)
    names = [model.terms[s.term].describe_kind(s.kind) for s in sparse_sets]
    return {
        "n_frames": len(fit_frames),
        "n_energies": n_energy,
        "n_force_components": n_force,
        "n_virial_components": n_virial,
        "n_sparse": {name: s.size for name, s in zip(names, sparse_sets, strict=True)},
        "n_sparse_total": n_columns,
        **memory_estimate(n_energy + n_force + n_virial, n_columns, model.block_memory),
        "sparse_jitter": {name: s.jitter for name, s in zip(names, sparse_sets, strict=True)},
        "e0": dict(e0),
    }


def report_summary(summary: dict, verbose: bool) -> None:
    s = summary
    lines = [
        f"gapx fit: {s['n_frames']} frames, {s['n_energies']} energies, "
        f"{s['n_force_components']} force components, {s['n_virial_components']} virial "
        "components",
        "sparse points: "
        + ", ".join(f"{name} {n}" for name, n in s["n_sparse"].items())
        + f" (total {s['n_sparse_total']})",
        f"memory: R factor {format_bytes(s['solver_bytes'])} (the "
        f"{format_bytes(s['full_design_matrix_bytes'])} design matrix is streamed in blocks), "
        f"estimated peak {format_bytes(s['estimated_peak_bytes'])}",
    ]
    for line in lines:
        logger.info(line)
        if verbose:
            print(line)


class _PhaseClock:
    """Wall and process-CPU seconds of consecutive fit phases (CPU time says how much of the
    machine a phase got when others share it)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name] = wall - self._wall
        self.cpu[name] = cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def prepare(model, frames, e0: dict[str, float] | None = None) -> tuple[list, list, dict, list]:
    """The frames a fit uses, their targets, e0 and labels: ``(fit_frames, targets, e0,
    fit_labels)``.

    Labels are read and checked, overlapping atoms refused (naming the frame), isolated-atom
    frames dropped when they define e0, and e0 computed by the model's method unless given
    (``e0`` must then cover every species of ``frames``). ``targets`` are :func:`frame_targets`.
    """
    frames = as_frames(frames)
    if not frames:
        raise ValueError("fit needs at least one frame")
    labels = [extract_labels(a, n, **model.keys) for n, a in enumerate(frames)]
    warn_unused_config_types(
        model, {lab.config_type for lab in labels if lab.config_type is not None}
    )
    for n, atoms in enumerate(frames):
        try:
            as_atomic_numbers(atoms.numbers)  # elements only: no dummy atoms
            StructureContext(atoms).check_no_overlap()
        except ValueError as error:
            raise ValueError(f"frame {n}: {error}") from None
    fit_index = [
        n
        for n in range(len(frames))
        if not (model.e0_method == "isolated_atom" and labels[n].config_type == "isolated_atom")
    ]
    if not fit_index:
        raise ValueError("no frames left to fit after removing isolated_atom frames")
    if e0 is None:
        e0 = compute_e0(model, frames, labels, fit_index)
    else:
        missing = sorted({chemical_symbols[z] for a in frames for z in a.numbers} - set(e0))
        if missing:
            raise ValueError(f"species {missing} have no e0 (the given e0 covers {sorted(e0)})")
    fit_frames = [frames[n] for n in fit_index]
    fit_labels = [labels[n] for n in fit_index]
    return fit_frames, frame_targets(model, fit_frames, fit_labels, e0), e0, fit_labels


def fit(model, frames, client=None, *, e0=None, sparse_points=None) -> FittedState:
    """Fit ``model``'s settings (terms, noise, e0 method, seed, ...) to labelled ``frames``.

    See :meth:`gapx.GAP.fit`. Returns the new state; ``model`` is not modified. ``e0``
    (``{symbol: eV}``) replaces the model's e0 method, and ``sparse_points`` (``{(term, kind):
    (n, n_features) array}``) the sparse-point selection (no descriptor pass 1): together they
    give the from-scratch fit an incremental update (:mod:`gapx.learning.incremental`) equals.
    """
    start = time.perf_counter()
    clock = _PhaseClock()
    fit_frames, targets, e0, _ = prepare(model, frames, e0)

    gradient_bytes = blocks.gradient_bytes(fit_frames, model.terms)
    if sparse_points is None:
        sparse_sets = select_sparse_sets(model, fit_frames, gradient_bytes, client, clock)
    else:
        sparse_sets = make_sparse_sets(model, sparse_points)
    n_columns = sum(s.size for s in sparse_sets)
    clock.lap("sparse_selection")
    summary = fit_summary(model, fit_frames, targets, sparse_sets, e0)
    report_summary(summary, model.verbose)

    # Pass 2: stream frames in blocks; each block's noise-scaled rows [K_NM/sigma, y/sigma]
    # are folded into the R factor at once, so the design matrix is never held whole.
    solver = prior_solver(sparse_sets)
    plan = blocks.frame_blocks(
        gradient_bytes + blocks.design_row_bytes([len(a) for a in fit_frames], n_columns),
        model.block_memory,
    )
    for rows in blocks.map_blocks(
        client,
        blocks.block_factor,
        (model.terms, sparse_sets, n_columns),
        [([fit_frames[k] for k in b], [targets[k] for k in b]) for b in plan],
        [len(b) for b in plan],
        desc="design rows",
        verbose=model.verbose,
    ):
        solver.add_rows(rows)
    alpha, R = solver.solve()
    clock.lap("design_rows_and_qr")
    summary["fit_seconds"] = time.perf_counter() - start
    summary["phase_seconds"] = clock.wall
    summary["phase_cpu_seconds"] = clock.cpu
    # C order, as a loaded model has it: LAPACK takes another path (and rounds differently) for
    # the other order, and a saved model must predict exactly as the one that was fitted.
    for s in sparse_sets:
        s.factor = np.ascontiguousarray(s.factor)
    return FittedState(
        e0=e0, sparse_sets=sparse_sets, alpha=alpha, R=np.ascontiguousarray(R), summary=summary
    )
