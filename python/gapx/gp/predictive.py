"""Predictive variances of one structure: local and total energies, forces, virial.

Each prediction is a linear functional of local energies (:mod:`gapx.gp.variance`) with a row
of sparse-point covariances: sums of the rows' kernels for local and total energies, their
strain derivatives for the virial, and for the forces the structure's force rows of the design
matrix (:func:`gapx.gp.design.assemble_block` on a one-frame block, as the fit builds them).
Its prior comes from :mod:`gapx.gp.variance`. Costs are linear in the number of atoms; the
force rows (one product of the descriptor gradients with the sparse points) dominate.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from . import design
from .variance import (
    MAX_RANK,
    force_prior,
    functional_variance_parts,
    local_energy_prior,
    summed_residual,
)


def _kind_rows(rows, kind: int):
    selected = np.nonzero(rows.kinds == kind)[0]
    local = np.full(rows.n_rows, -1, dtype=np.int64)
    local[selected] = np.arange(selected.size)
    return selected, local


def predictive_variances(
    terms,
    sparse_sets,
    R,
    rows,
    n_atoms: int,
    periodic: bool,
    forces: bool = True,
    max_rank: int = MAX_RANK,
    weights_only: bool = False,
) -> dict:
    """Posterior variances of a structure's predictions.

    ``rows[t]`` are term t's rows of the structure (with gradients unless ``forces`` is False).
    Returns ``energies`` (n_atoms,) eV² and ``energy`` eV², and with ``forces`` also ``forces``
    (n_atoms, 3) (eV/Å)² and, when ``periodic``, ``virial`` (6,) eV² (Voigt order; the stress
    variance is this over volume²). ``weights_only`` returns only the part ``k Sigma k^T`` due
    to the weights' uncertainty (what sampling the weights from their posterior shows).
    """
    n_columns = R.shape[0]
    periodic = periodic and forces
    k_atoms = np.zeros((n_atoms, n_columns))
    k_energy = np.zeros(n_columns)
    k_virial = np.zeros((6, n_columns))
    prior_atoms = np.zeros(n_atoms)
    prior_energy = 0.0
    prior_forces = np.zeros((n_atoms, 3))
    prior_virial = np.zeros(6)
    for s in sparse_sets:
        term_rows, kernel = rows[s.term], terms[s.term].kernel
        selected, local = _kind_rows(term_rows, s.kind)
        if selected.size == 0:
            continue
        d2 = s.delta**2
        X = term_rows.X[selected]
        k = d2 * kernel(X, s.points)
        owned = local[term_rows.owner_rows] >= 0
        o_rows = local[term_rows.owner_rows[owned]]
        o_atoms = term_rows.owner_atoms[owned]
        o_weights = term_rows.owner_weights[owned]
        owners = scipy.sparse.csr_matrix(
            (o_weights, (o_atoms, o_rows)), shape=(n_atoms, selected.size)
        )
        k_atoms[:, s.columns] = owners @ k
        k_energy[s.columns] = k.sum(axis=0)
        prior_atoms += local_energy_prior(kernel, X, o_rows, o_atoms, o_weights, n_atoms, d2)
        # Total energy: exact Nyström part plus the residual double sum.
        prior_energy += _nystrom(s, k_energy) + summed_residual(
            kernel, X, k, s.factor, d2, None, max_rank
        )
        if not forces:
            continue
        grads = term_rows.gradients
        entry = np.nonzero(local[grads.pairs[:, 0]] >= 0)[0]
        pairs = np.stack([local[grads.pairs[entry, 0]], grads.pairs[entry, 1]], axis=1)
        prior_forces += force_prior(kernel, X, pairs, grads.values[entry], n_atoms, d2)
        if periodic:
            strain = grads.strain[selected]
            for c, (a, b) in enumerate(design.VOIGT):
                U = 0.5 * (strain[:, a, b] + strain[:, b, a])
                # Each row's contribution to dE/deps_c; the virial is minus their sum.
                Phi = d2 * kernel.directional(X, s.points, U, np.arange(selected.size))
                k_virial[c, s.columns] = -Phi.sum(axis=0)
                prior_virial[c] += _nystrom(s, k_virial[c]) + summed_residual(
                    kernel, X, Phi, s.factor, d2, U, max_rank
                )
    functionals = [k_atoms, k_energy[None, :]]
    priors = [prior_atoms, [prior_energy]]
    if forces:
        layout = design.block_layout([n_atoms], [False], [True], [False])
        frames = [np.zeros(r.n_rows, dtype=np.int64) for r in rows]
        kernels = [t.kernel for t in terms]
        functionals.append(
            design.assemble_block(rows, frames, kernels, sparse_sets, layout, n_columns)
        )
        priors.append(prior_forces.reshape(-1))
    if periodic:
        functionals.append(k_virial)
        priors.append(prior_virial)
    residual, weights = functional_variance_parts(
        np.concatenate(priors), np.vstack(functionals), sparse_sets, R
    )
    var = weights if weights_only else np.maximum(residual + weights, 0.0)
    out = {"energies": var[:n_atoms], "energy": float(var[n_atoms])}
    if forces:
        out["forces"] = var[n_atoms + 1 : n_atoms + 1 + 3 * n_atoms].reshape(n_atoms, 3)
    if periodic:
        out["virial"] = var[n_atoms + 1 + 3 * n_atoms :]
    return out


def _nystrom(s, k: np.ndarray) -> float:
    """``k_s K_MM^-1 k_s^T`` of a functional's columns of sparse set ``s``."""
    v = scipy.linalg.solve_triangular(s.factor, k[s.columns], lower=True, check_finite=False)
    return float(v @ v)
