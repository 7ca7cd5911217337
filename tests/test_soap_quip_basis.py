"""SOAP with QUIP's radial basis (``radial_basis="quip"``): equal to quippy's ``soap``
descriptor element by element, and its gradients against finite differences."""

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
from test_soap_gradients import dense_position_gradient

import gapx

QUIP_TOL = 1e-12  # per element, against quippy
FD_RTOL = 1e-6
FD_DELTA = 1e-5
CUTOFF = 4.5
SIGMA = 0.5


def mixed_silicon(species):
    """A rattled, sheared 16-atom diamond cell with every species of ``species`` in it."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (1, 1, 2)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.05, 0], [0, 1, 0.03], [0.02, 0, 1]]), True)
    atoms.rattle(0.15, seed=7)
    atoms.numbers[:] = [species[k % len(species)] for k in range(len(atoms))]
    return atoms


def quip_descriptor(atoms, species, n_max, l_max, central_weight, width):
    descriptors = pytest.importorskip("quippy.descriptors")
    string = (
        f"soap cutoff={CUTOFF} cutoff_transition_width={width} n_max={n_max} l_max={l_max} "
        f"atom_sigma={SIGMA} central_weight={central_weight} n_species={len(species)} "
        f"species_Z={{{' '.join(map(str, species))}}}"
    )
    return np.asarray(descriptors.Descriptor(string).calc(atoms)["data"])


CASES = [
    # (species, n_max, l_max): one species at the largest sizes, three in both orders
    ((14,), 12, 12),
    ((14,), 4, 2),
    ((6, 8, 14), 12, 12),
    ((14, 8, 6), 12, 12),
    ((8, 14, 6), 5, 3),
    # few grid points: radial functions spanning many orders of magnitude over [0, r_c]
    ((6, 8, 14), 1, 0),
    ((14,), 2, 1),
]


@pytest.mark.parametrize("width", [0.5, 1.0])
@pytest.mark.parametrize("central_weight", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("species", "n_max", "l_max"), CASES)
def test_equals_quippy_element_by_element(species, n_max, l_max, central_weight, width):
    atoms = mixed_silicon(species)
    quip = quip_descriptor(atoms, species, n_max, l_max, central_weight, width)
    soap = gapx.SOAP(
        species=list(species),
        cutoff=CUTOFF,
        n_max=n_max,
        l_max=l_max,
        atom_sigma=SIGMA,
        central_weight=central_weight,
        cutoff_transition_width=width,
        radial_basis="quip",
    )
    ours = soap.compute(atoms)[:, soap.quip_order]
    assert quip.shape == (len(atoms), soap.n_features + 1)
    np.testing.assert_array_equal(quip[:, -1], 0.0)
    np.testing.assert_allclose(ours, quip[:, :-1], rtol=0, atol=QUIP_TOL)


def test_species_order_matters_and_is_kept():
    """QUIP's channels follow species_Z as written: another order is another descriptor."""
    atoms = mixed_silicon((6, 8, 14))
    given = gapx.SOAP(species=["Si", "O", "C"], n_max=3, l_max=2, radial_basis="quip")
    assert given.species == ("Si", "O", "C")
    assert gapx.SOAP(species=["Si", "O", "C"], n_max=3, l_max=2).species == ("C", "O", "Si")
    other = gapx.SOAP(species=["C", "O", "Si"], n_max=3, l_max=2, radial_basis="quip")
    assert np.abs(given.compute(atoms) - other.compute(atoms)).max() > 1e-3


def test_defaults_and_errors():
    assert gapx.SOAP(species=["Si"], radial_basis="quip").cutoff_transition_width == 0.5
    assert gapx.SOAP(species=["Si"]).cutoff_transition_width == 1.0
    with pytest.raises(ValueError, match="radial_basis must be 'gto' or 'quip'"):
        gapx.SOAP(species=["Si"], radial_basis="polynomial")
    with pytest.raises(ValueError, match="duplicates"):
        gapx.SOAP(species=["Si", "C", "Si"], radial_basis="quip")
    with pytest.raises(ValueError, match="numerically singular"):
        gapx.SOAP(species=["Si"], cutoff=2.0, n_max=40, atom_sigma=1.0, radial_basis="quip")


def test_serialisation_keeps_the_basis_and_order():
    soap = gapx.SOAP(species=["O", "H"], n_max=3, l_max=2, radial_basis="quip")
    again = gapx.SOAP.from_dict(soap.to_dict())
    assert again == soap
    assert again.species == ("O", "H")
    assert again.radial_basis == "quip"


def test_radial_derivative_against_finite_differences():
    soap = gapx.SOAP(species=["Si"], cutoff=5.0, n_max=8, l_max=6, radial_basis="quip")
    d = np.linspace(0.0, 5.0 - 1e-3, 57)
    values, slopes = soap._core.radial_values(list(d))
    plus, _ = soap._core.radial_values(list(d + 1e-6))
    minus, _ = soap._core.radial_values(list(np.abs(d - 1e-6)))
    numerical = (plus - minus) / 2e-6
    numerical[0] = (plus[0] - values[0]) / 1e-6  # one-sided at d = 0
    assert_gradients_close(slopes[1:], numerical[1:], 1e-7)
    assert np.abs(slopes[0] - numerical[0]).max() < 1e-4 * np.abs(slopes).max()


@pytest.fixture
def quip_soap():
    return gapx.SOAP(
        species=["O", "H", "C"],
        cutoff=3.5,
        n_max=4,
        l_max=3,
        atom_sigma=0.45,
        cutoff_transition_width=1.2,
        central_weight=0.8,
        radial_basis="quip",
    )


@pytest.mark.parametrize("pbc", [True, False], ids=["periodic-triclinic", "cluster"])
def test_position_and_strain_gradients(quip_soap, rng, pbc):
    atoms = random_structure(rng, ["H", "C", "O"], 7, pbc=pbc)
    X, dX = quip_soap.compute(atoms, gradients=True)
    np.testing.assert_allclose(X, quip_soap.compute(atoms), rtol=0, atol=1e-15)
    numerical = numerical_position_gradient(quip_soap.compute, atoms, FD_DELTA)
    assert_gradients_close(dense_position_gradient(dX, len(atoms)), numerical, FD_RTOL)
    if pbc:
        numerical = numerical_strain_gradient(quip_soap.compute, atoms, FD_DELTA)
        assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numerical, FD_RTOL)


def test_backpropagation_contracts_the_gradients(quip_soap, rng):
    atoms = random_structure(rng, ["H", "C", "O"], 7, pbc=True)
    X, dX = quip_soap.compute(atoms, gradients=True)
    upstream = rng.normal(size=X.shape)
    dE_dr, dE_dstrain = quip_soap.backpropagate(atoms, upstream)
    expected = np.zeros((len(atoms), 3))
    for (i, j), value in zip(dX.pairs, dX.values, strict=True):
        expected[j] += value @ upstream[i]
    np.testing.assert_allclose(dE_dr, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        dE_dstrain, np.einsum("iabf,if->ab", dX.strain, upstream), atol=1e-11
    )
