"""Two-body term: pairs against brute force, smooth cutoff, exact position and strain gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from finite_differences import (
    assert_gradients_close,
    numerical_position_gradient,
    numerical_strain_gradient,
)
from structures import random_structure, random_triclinic_cell

from gapx import TwoBody
from gapx.descriptors.two_body import PAIR_KIND_BASE, cosine_cutoff


def _brute_force_distances(atoms, cutoff):
    """Distances of unordered pairs (i < j, or i with its own image once), by image search."""
    cell = atoms.cell.array
    reach = 3
    out = []
    for i, j in itertools.product(range(len(atoms)), repeat=2):
        for shift in itertools.product(range(-reach, reach + 1), repeat=3):
            if i == j and shift == (0, 0, 0):
                continue
            d = np.linalg.norm(atoms.positions[j] - atoms.positions[i] + np.array(shift) @ cell)
            if d < cutoff and (i < j or (i == j and shift > (0, 0, 0))):
                out.append(d)
    return np.sort(out)


def test_pairs_match_brute_force(rng):
    for _ in range(3):
        atoms = random_structure(rng, ["Si", "C"], 5, cell=random_triclinic_cell(rng, 4.0))
        term = TwoBody(cutoff=4.5, cutoff_transition_width=1.0)
        X = term.compute(atoms)
        np.testing.assert_allclose(np.sort(X[:, 0]), _brute_force_distances(atoms, 4.5), 1e-12)
        fc, _ = cosine_cutoff(X[:, 0], 4.5, 1.0)
        np.testing.assert_allclose(X[:, 1], fc)


def test_kinds_and_owners(rng):
    atoms = random_structure(rng, ["H", "O", "O"], 6, cell=random_triclinic_cell(rng, 5.0))
    rows = TwoBody(cutoff=3.0).rows(atoms)
    assert set(np.unique(rows.kinds)) <= {
        1 * PAIR_KIND_BASE + 1,
        1 * PAIR_KIND_BASE + 8,
        8 * PAIR_KIND_BASE + 8,
    }
    weight_per_row = np.bincount(rows.owner_rows, rows.owner_weights, minlength=rows.n_rows)
    np.testing.assert_allclose(weight_per_row, 1.0)


def test_cutoff_function_is_smooth():
    cutoff, width = 5.0, 1.0
    eps = 1e-7
    for r0 in (cutoff - width, cutoff):
        f, df = cosine_cutoff(np.array([r0 - eps, r0 + eps]), cutoff, width)
        assert abs(f[0] - f[1]) < 1e-6
        assert abs(df[0] - df[1]) < 1e-5
    f, df = cosine_cutoff(np.array([cutoff, cutoff + 0.1, 1.0]), cutoff, width)
    np.testing.assert_allclose(f, [0.0, 0.0, 1.0], atol=1e-15)
    r = np.linspace(cutoff - width + 0.01, cutoff - 0.01, 7)
    numeric = cosine_cutoff(r + 1e-6, cutoff, width)[0] - cosine_cutoff(r - 1e-6, cutoff, width)[0]
    np.testing.assert_allclose(cosine_cutoff(r, cutoff, width)[1], numeric / 2e-6, rtol=1e-6)


def _dense_position_gradient(term, atoms):
    X, dX = term.compute(atoms, gradients=True)
    dense = np.zeros((len(atoms), 3, *X.shape))
    for (row, atom), value in zip(dX.pairs, dX.values, strict=True):
        dense[atom, :, row] += value
    return dense


def test_position_and_strain_gradients(rng):
    term = TwoBody(cutoff=4.0, cutoff_transition_width=1.5)
    atoms = random_structure(rng, ["Cu", "Al"], 4, cell=random_triclinic_cell(rng, 4.5))
    # The pair order is stable under tiny displacements, so rows can be compared by index.
    numeric = numerical_position_gradient(term.compute, atoms, 1e-6)
    assert_gradients_close(_dense_position_gradient(term, atoms), numeric, rtol=1e-6)
    _, dX = term.compute(atoms, gradients=True)
    numeric = numerical_strain_gradient(term.compute, atoms, 1e-6)
    assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numeric, rtol=1e-6)


def test_molecule_and_species_filter():
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    X = TwoBody(cutoff=3.0, species=["H", "O"]).compute(atoms)
    assert X.shape == (3, 2)
    with pytest.raises(ValueError, match="not in this TwoBody"):
        TwoBody(cutoff=3.0, species=["H"]).compute(atoms)


def test_round_trip_and_bad_parameters():
    term = TwoBody(cutoff=4.0, species=["Si"], theta=0.3, n_sparse=7, sparse_method="cur")
    assert TwoBody.from_dict(term.to_dict()) == term
    with pytest.raises(ValueError, match="cutoff"):
        TwoBody(cutoff=-1.0)
    with pytest.raises(ValueError, match="cutoff_transition_width"):
        TwoBody(cutoff=2.0, cutoff_transition_width=3.0)
    with pytest.raises(ValueError, match="theta"):
        TwoBody(theta=0.0)
    with pytest.raises(ValueError, match="n_sparse"):
        TwoBody(n_sparse=0)
    with pytest.raises(ValueError, match="sparse_method"):
        TwoBody(sparse_method="magic")
    with pytest.raises(ValueError, match="species"):
        TwoBody(species=["Xx"])
