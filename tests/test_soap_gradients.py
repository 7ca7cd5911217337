"""SOAP position and strain gradients, and backpropagation, against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from finite_differences import (
    assert_gradients_close,
    numerical_position_gradient,
    numerical_strain_gradient,
)
from structures import random_structure

import gapx

SPECIES3 = ["H", "C", "O"]
FD_RTOL = 1e-6
FD_DELTA = 1e-5


def dense_position_gradient(dX, n_atoms):
    """(n_atoms moved, 3, n_centres, F) from the sparse pairs, to compare with differences."""
    n_features = dX.values.shape[-1]
    dense = np.zeros((n_atoms, 3, n_atoms, n_features))
    for (i, j), value in zip(dX.pairs, dX.values, strict=True):
        dense[j, :, i] = value
    return dense


CASES = {
    "periodic-triclinic": {"n_atoms": 7, "pbc": True},
    "non-periodic": {"n_atoms": 7, "pbc": False},
    "mixed-pbc": {"n_atoms": 6, "pbc": [True, False, True]},
}


@pytest.fixture(params=list(CASES))
def structure(request, rng):
    case = CASES[request.param]
    return random_structure(rng, SPECIES3, case["n_atoms"], pbc=case["pbc"])


@pytest.fixture
def soap():
    return gapx.SOAP(
        species=SPECIES3,
        cutoff=3.5,
        n_max=3,
        l_max=3,
        atom_sigma=0.45,
        cutoff_transition_width=1.2,
        central_weight=0.8,
    )


def test_position_gradients(soap, structure):
    X, dX = soap.compute(structure, gradients=True)
    numerical = numerical_position_gradient(soap.compute, structure, FD_DELTA)
    assert_gradients_close(dense_position_gradient(dX, len(structure)), numerical, FD_RTOL)


def test_strain_gradients(soap, structure):
    _, dX = soap.compute(structure, gradients=True)
    numerical = numerical_strain_gradient(soap.compute, structure, FD_DELTA)
    assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numerical, FD_RTOL)


def test_gradients_with_cell_smaller_than_cutoff(rng):
    """Several images of each atom (and of the centre itself) inside the cutoff."""
    soap = gapx.SOAP(species=SPECIES3, cutoff=4.5, n_max=3, l_max=2)
    cell = np.array([[3.1, 0.2, 0.0], [0.5, 2.9, 0.1], [-0.3, 0.4, 3.3]])
    atoms = random_structure(rng, SPECIES3, 4, cell=cell, pbc=True)
    _, dX = soap.compute(atoms, gradients=True)
    numerical = numerical_position_gradient(soap.compute, atoms, FD_DELTA)
    assert_gradients_close(dense_position_gradient(dX, len(atoms)), numerical, FD_RTOL)
    numerical = numerical_strain_gradient(soap.compute, atoms, FD_DELTA)
    assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numerical, FD_RTOL)


def test_strain_single_species_large_cell():
    """One species, every neighbour a distinct atom: the strain comes from the finished
    position-gradient rows (the C++ picks that route when it is cheaper)."""
    soap = gapx.SOAP(species=["Si"], cutoff=4.0, n_max=6, l_max=4)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=4)
    atoms.set_cell(atoms.cell.array + [[0, 0.3, 0], [0.2, 0, 0], [0, 0, 0.1]], scale_atoms=True)
    _, dX = soap.compute(atoms, gradients=True)
    numerical = numerical_strain_gradient(soap.compute, atoms, FD_DELTA)
    assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numerical, FD_RTOL)


def test_gradients_larger_basis(rng):
    soap = gapx.SOAP(species=["Si", "O"], cutoff=4.0, n_max=6, l_max=6, atom_sigma=0.5)
    atoms = random_structure(rng, ["Si", "O"], 5, pbc=True)
    X, dX = soap.compute(atoms, gradients=True)
    numerical = numerical_position_gradient(soap.compute, atoms, FD_DELTA)
    assert_gradients_close(dense_position_gradient(dX, len(atoms)), numerical, FD_RTOL)


def test_backpropagate_matches_stored_gradients(soap, structure, rng):
    X, dX = soap.compute(structure, gradients=True)
    G = rng.normal(size=X.shape)
    dE_dr, dE_dstrain = soap.backpropagate(structure, G)
    expected_dr = np.zeros((len(structure), 3))
    np.add.at(expected_dr, dX.pairs[:, 1], np.einsum("gaf,gf->ga", dX.values, G[dX.pairs[:, 0]]))
    expected_strain = np.einsum("iabf,if->ab", dX.strain, G)
    assert np.abs(dE_dr).max() > 1e-3
    np.testing.assert_allclose(dE_dr, expected_dr, atol=1e-12 * np.abs(expected_dr).max())
    np.testing.assert_allclose(dE_dstrain, expected_strain, atol=1e-12 * np.abs(dE_dstrain).max())


def test_backpropagate_by_finite_differences(soap, rng):
    atoms = random_structure(rng, SPECIES3, 6, pbc=True)
    G = rng.normal(size=(len(atoms), soap.n_features))

    def energy(a):
        return np.sum(G * soap.compute(a))

    dE_dr, dE_dstrain = soap.backpropagate(atoms, G)
    assert_gradients_close(dE_dr, numerical_position_gradient(energy, atoms, FD_DELTA), FD_RTOL)
    assert_gradients_close(dE_dstrain, numerical_strain_gradient(energy, atoms, FD_DELTA), FD_RTOL)


def test_gradients_are_rotation_covariant(rng):
    """d x_i / d r_j rotates as a vector and the strain derivative as a tensor."""
    from scipy.spatial.transform import Rotation

    soap = gapx.SOAP(species=SPECIES3, cutoff=4.0, n_max=3, l_max=5)
    atoms = random_structure(rng, SPECIES3, 8, pbc=True)
    _, dX = soap.compute(atoms, gradients=True)
    rotation = Rotation.random(random_state=3).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    _, dY = soap.compute(moved, gradients=True)
    np.testing.assert_array_equal(dX.pairs, dY.pairs)
    np.testing.assert_allclose(dY.values, np.einsum("ab,gbf->gaf", rotation, dX.values), atol=1e-10)
    np.testing.assert_allclose(
        dY.strain,
        np.einsum("ac,bd,icdf->iabf", rotation, rotation, dX.strain),
        atol=1e-10,
    )
