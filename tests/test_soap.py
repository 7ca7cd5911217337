"""SOAP power spectrum: building blocks against scipy, values against a quadrature of the
density, invariances, cutoff smoothness, API and bad input."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.integrate import quad
from scipy.spatial.transform import Rotation
from scipy.special import roots_legendre, sph_harm_y, spherical_in
from structures import random_structure

import gapx
from gapx import _core

INVARIANCE_TOL = 1e-10
QUADRATURE_TOL = 1e-12  # radial integral against scipy.integrate.quad (absolute, O(1) values)
SPLINE_TOL = 1e-10  # spline against the exact integral, relative to the largest value
EXPANSION_TOL = 1e-8  # power spectrum from a 3-D quadrature of the density
SPECIES3 = ["H", "C", "O"]


def real_harmonics_scipy(l_max, vectors):
    """Real Y_lm (gapx's convention: no Condon-Shortley phase) from scipy's complex ones."""
    r = np.linalg.norm(vectors, axis=1)
    theta = np.arccos(vectors[:, 2] / r)
    phi = np.arctan2(vectors[:, 1], vectors[:, 0])
    out = np.zeros((len(vectors), (l_max + 1) ** 2))
    for ell in range(l_max + 1):
        out[:, ell * ell + ell] = sph_harm_y(ell, 0, theta, phi).real
        for m in range(1, ell + 1):
            y = sph_harm_y(ell, m, theta, phi) * (-1) ** m * np.sqrt(2)
            out[:, ell * ell + ell + m] = y.real
            out[:, ell * ell + ell - m] = y.imag
    return out


def test_spherical_harmonics_match_scipy(rng):
    vectors = rng.normal(size=(50, 3)) * rng.uniform(0.5, 3, (50, 1))
    vectors[0] = [0, 0, 1.3]  # on the z axis
    vectors[1] = [0, 0, -0.7]
    values, _ = _core.spherical_harmonics(10, vectors)
    np.testing.assert_allclose(values, real_harmonics_scipy(10, vectors), atol=1e-13)


def test_spherical_harmonics_gradients_by_finite_differences(rng):
    vectors = rng.normal(size=(6, 3))
    l_max, h = 8, 1e-6
    _, grad = _core.spherical_harmonics(l_max, vectors)
    grad = grad.reshape(len(vectors), 3, -1)
    numerical = np.zeros_like(grad)
    for a in range(3):
        step = np.zeros(3)
        step[a] = h
        plus = _core.spherical_harmonics(l_max, vectors + step)[0]
        minus = _core.spherical_harmonics(l_max, vectors - step)[0]
        numerical[:, a] = (plus - minus) / (2 * h)
    assert np.abs(grad).max() > 1.0
    np.testing.assert_allclose(grad, numerical, atol=1e-8 * np.abs(grad).max())


def gto_basis(soap):
    """R_n(r) in plain NumPy from the orthonormalisation matrix and the GTO widths."""
    transform = soap._core.radial_orthonormalisation()
    widths = [soap.cutoff * max(np.sqrt(k), 1.0) / soap.n_max for k in range(soap.n_max)]

    def radial(n, r):
        return sum(
            transform[n, k] * r**k * np.exp(-(r**2) / (2 * widths[k] ** 2))
            for k in range(soap.n_max)
        )

    return radial


@pytest.mark.parametrize("n_max", [6, 12, 16])
def test_radial_basis_is_orthonormal(n_max):
    """Löwdin orthonormalisation, even where the GTO overlap matrix is ill-conditioned
    (condition number ~1e16 at n_max 12, ~1e21 at 16: computed in double-double in C++)."""
    soap = gapx.SOAP(species=["Si"], cutoff=5.0, n_max=n_max, l_max=0)
    radial = gto_basis(soap)
    nodes, weights = roots_legendre(600)
    r = 15.0 * (nodes + 1)
    basis = np.array([radial(n, r) for n in range(n_max)])
    overlap = (basis * r * r * 15.0 * weights) @ basis.T
    # Evaluating R_n in double loses ~ cond(S) * 1e-16 / |W| of orthonormality at large n_max.
    np.testing.assert_allclose(overlap, np.eye(n_max), atol=1e-12 if n_max <= 6 else 1e-9)
    # Symmetric orthonormalisation: W is symmetric.
    transform = soap._core.radial_orthonormalisation()
    np.testing.assert_allclose(transform, transform.T, atol=1e-12 * np.abs(transform).max())


def test_too_large_n_max_is_refused():
    with pytest.raises(ValueError, match="too ill-conditioned"):
        gapx.SOAP(species=["Si"], n_max=30, l_max=0)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # round-off at 1e-15
@pytest.mark.parametrize("distance", [0.0, 0.37, 2.1, 3.95])
def test_radial_integral_against_scipy_quad(distance):
    soap = gapx.SOAP(species=["Si"], cutoff=4.0, n_max=6, l_max=7, atom_sigma=0.4)
    radial = gto_basis(soap)
    b = 1.0 / (2 * soap.atom_sigma**2)
    values, _ = soap._core.radial_exact([distance])
    values = values.reshape(soap.n_max, soap.l_max + 1)
    for n in range(soap.n_max):
        for ell in range(soap.l_max + 1):

            def integrand(r, n=n, ell=ell):
                x = 2 * b * r * distance
                scaled_i = spherical_in(ell, x) * np.exp(-x)
                return (
                    4 * np.pi * r * r * radial(n, r) * np.exp(-b * (r - distance) ** 2) * scaled_i
                )

            expected = quad(integrand, 0, distance + 15, limit=400, epsabs=1e-15, epsrel=1e-13)[0]
            assert abs(values[n, ell] - expected) < QUADRATURE_TOL, (n, ell)


def test_radial_spline_matches_exact_integral_and_its_derivative():
    soap = gapx.SOAP(species=["Si"], cutoff=5.0, n_max=8, l_max=6, atom_sigma=0.5)
    d = np.linspace(0, soap.cutoff, 701)[:-1] + 0.0031  # off the grid nodes
    spline, dspline = soap._core.radial_spline(list(d))
    exact, dexact = soap._core.radial_exact(list(d))
    scale = np.tile((2 * np.arange(soap.l_max + 1) + 1.0) ** -0.25, soap.n_max)
    assert np.abs(spline - exact * scale).max() < SPLINE_TOL * np.abs(exact).max()
    assert np.abs(dspline - dexact * scale).max() < 1e-7 * np.abs(dexact).max()
    # The spline's derivative is the exact derivative of the spline itself.
    h = 1e-6
    plus, _ = soap._core.radial_spline(list(d + h))
    minus, _ = soap._core.radial_spline(list(d - h))
    np.testing.assert_allclose(dspline, (plus - minus) / (2 * h), atol=1e-8)


def test_power_spectrum_from_quadrature_of_the_gaussian_density():
    """c_nlm = ∫ R_n(r) Y_lm(r̂) ρ(r) d³r by a 3-D product quadrature, for a centre with two
    neighbours of two species (one inside the cutoff transition), then p, normalised."""
    soap = gapx.SOAP(
        species=["H", "O"],
        cutoff=3.0,
        n_max=4,
        l_max=3,
        atom_sigma=0.45,
        cutoff_transition_width=1.0,
        central_weight=0.7,
    )
    neighbours = np.array([[0.9, 0.3, -0.5], [-1.2, 1.4, 1.1]])  # H then O
    atoms = Atoms("OHO", positions=np.vstack([[0, 0, 0], neighbours]), pbc=False)
    radial = gto_basis(soap)
    sigma = soap.atom_sigma
    r_nodes, r_weights = roots_legendre(120)
    r = 0.5 * 9.0 * (r_nodes + 1)
    r_weights = 0.5 * 9.0 * r_weights
    z_nodes, z_weights = roots_legendre(40)
    n_phi = 80
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    sin_theta = np.sqrt(1 - z_nodes**2)
    directions = np.stack(
        [
            np.outer(sin_theta, np.cos(phi)),
            np.outer(sin_theta, np.sin(phi)),
            np.repeat(z_nodes[:, None], n_phi, 1),
        ],
        axis=-1,
    ).reshape(-1, 3)
    angular_weights = np.repeat(z_weights, n_phi) * 2 * np.pi / n_phi
    harmonics = real_harmonics_scipy(soap.l_max, directions)
    points = r[:, None, None] * directions[None]

    def cutoff_fn(d):
        rc, w = soap.cutoff, soap.cutoff_transition_width
        return 1.0 if d <= rc - w else 0.5 * (1 + np.cos(np.pi * (d - rc + w) / w))

    def density(centres, weights):
        total = np.zeros(points.shape[:2])
        for centre, weight in zip(centres, weights, strict=True):
            sq = np.sum((points - centre) ** 2, axis=-1)
            total += weight * np.exp(-sq / (2 * sigma**2))
        return total

    rho = {
        "H": density(neighbours[:1], [cutoff_fn(np.linalg.norm(neighbours[0]))]),
        "O": density(
            np.vstack([[0, 0, 0], neighbours[1:]]),
            [soap.central_weight, cutoff_fn(np.linalg.norm(neighbours[1]))],
        ),
    }
    n_lm = (soap.l_max + 1) ** 2
    coefficients = []
    for species in ("H", "O"):  # sorted by atomic number
        projected = (rho[species] * angular_weights) @ harmonics  # (n_r, n_lm)
        for n in range(soap.n_max):
            coefficients.append((r_weights * r * r * radial(n, r)) @ projected)
    c = np.array(coefficients).reshape(-1, n_lm)
    p = []
    for u in range(len(c)):
        for v in range(u, len(c)):
            kappa = 1.0 if u == v else np.sqrt(2)
            for ell in range(soap.l_max + 1):
                block = slice(ell * ell, (ell + 1) ** 2)
                p.append(kappa * c[u, block] @ c[v, block] / np.sqrt(2 * ell + 1))
    p = np.array(p)
    X = soap.compute(atoms)
    assert X.shape == (3, soap.n_features)
    np.testing.assert_allclose(X[0], p / np.linalg.norm(p), atol=EXPANSION_TOL)


def test_rows_are_unit_and_zero_row_stays_zero():
    soap = gapx.SOAP(species=["Si"], cutoff=3.0, n_max=3, l_max=2, central_weight=0.0)
    atoms = Atoms("Si2", positions=[[0, 0, 0], [10, 0, 0]], pbc=False)
    X, dX = soap.compute(atoms, gradients=True)
    assert np.all(X == 0.0)
    assert np.all(dX.values == 0.0)
    assert np.all(dX.strain == 0.0)
    atoms = bulk("Si", "diamond", a=5.43)
    X = gapx.SOAP(species=["Si"], cutoff=4.0, n_max=3, l_max=2).compute(atoms)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-14)


def test_n_features_and_feature_layout():
    soap = gapx.SOAP(species=["O", "H", 6], n_max=3, l_max=4, cutoff=3.0)
    assert soap.species == ("H", "C", "O")
    n_channels = 3 * 3
    assert soap.n_features == n_channels * (n_channels + 1) // 2 * 5
    # An H centre with only H neighbours and no C/O: only the (H n, H n') block is non-zero.
    atoms = Atoms("HH", positions=[[0, 0, 0], [0.8, 0.1, 0.2]], pbc=False)
    X = soap.compute(atoms)
    layout = []
    for u in range(n_channels):
        for v in range(u, n_channels):
            layout += [(u, v)] * 5
    layout = np.array(layout)
    h_block = (layout[:, 0] < 3) & (layout[:, 1] < 3)
    assert np.all(X[:, ~h_block] == 0.0)
    assert np.all(np.abs(X[:, h_block]).max(axis=1) > 0.1)


def rotated(atoms, rotation):
    out = atoms.copy()
    out.positions = atoms.positions @ rotation.T
    out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    return out


@pytest.mark.parametrize("pbc", [True, False])
def test_rotation_invariance_up_to_l_max_10(rng, pbc):
    soap = gapx.SOAP(species=SPECIES3, cutoff=4.0, n_max=4, l_max=10)
    atoms = random_structure(rng, SPECIES3, 9, pbc=pbc)
    X = soap.compute(atoms)
    assert np.abs(X).max() > 0.1
    for seed in range(3):
        rotation = Rotation.random(random_state=seed).as_matrix()
        np.testing.assert_allclose(soap.compute(rotated(atoms, rotation)), X, atol=INVARIANCE_TOL)


def test_translation_wrapping_and_permutation_invariance(rng):
    soap = gapx.SOAP(species=SPECIES3, cutoff=4.0, n_max=4, l_max=4)
    atoms = random_structure(rng, SPECIES3, 10, pbc=True)
    X = soap.compute(atoms)
    moved = atoms.copy()
    moved.positions += [1.7, -0.4, 2.9]
    np.testing.assert_allclose(soap.compute(moved), X, atol=INVARIANCE_TOL)
    moved.wrap()
    np.testing.assert_allclose(soap.compute(moved), X, atol=INVARIANCE_TOL)
    order = rng.permutation(len(atoms))
    np.testing.assert_allclose(soap.compute(atoms[order]), X[order], atol=INVARIANCE_TOL)


def test_supercell_replication(rng):
    soap = gapx.SOAP(species=SPECIES3, cutoff=5.0, n_max=3, l_max=4)
    atoms = random_structure(rng, SPECIES3, 6, pbc=True)  # cell smaller than the cutoff
    X = soap.compute(atoms)
    big = atoms.repeat((2, 1, 3))
    np.testing.assert_allclose(soap.compute(big), np.tile(X, (6, 1)), atol=INVARIANCE_TOL)


def test_neighbour_crossing_the_cutoff_is_continuous():
    soap = gapx.SOAP(species=["Si", "C"], cutoff=3.0, n_max=4, l_max=4, cutoff_transition_width=0.8)
    base = [[0, 0, 0], [1.1, 0.6, -0.4]]

    def with_third(d):
        direction = np.array([0.3, -0.8, 0.52])
        direction /= np.linalg.norm(direction)
        return Atoms("SiCSi", positions=[*base, d * direction], pbc=False)

    eps = 1e-7
    inside = soap.compute(with_third(soap.cutoff - eps), gradients=True)
    outside = soap.compute(with_third(soap.cutoff + eps), gradients=True)
    assert np.abs(inside[0] - outside[0]).max() < 1e-10

    # Centre 0: inside has an entry for atom 2 (~0), outside does not.
    def dense(grad):
        out = np.zeros((3, 3, 3, soap.n_features))
        for (i, j), value in zip(grad.pairs, grad.values, strict=True):
            out[i, j] = value
        return out

    dense_in, dense_out = dense(inside[1]), dense(outside[1])
    assert np.abs(dense_in).max() > 0.01
    assert np.abs(dense_in - dense_out).max() < 1e-5
    assert np.abs(inside[1].strain - outside[1].strain).max() < 1e-5
    # Deep in the transition region, the values do change with the distance.
    assert np.abs(soap.compute(with_third(2.5)) - inside[0]).max() > 1e-3


def test_gradient_pairs_layout(rng):
    soap = gapx.SOAP(species=SPECIES3, cutoff=4.5, n_max=2, l_max=2)
    atoms = random_structure(rng, SPECIES3, 5, pbc=True)  # small cell: many periodic images
    _, dX = soap.compute(atoms, gradients=True)
    i, j, _, _, _ = gapx.neighbor_list(atoms, soap.cutoff)
    expected = []
    for centre in range(len(atoms)):
        expected.append([centre, centre])
        expected += [[centre, other] for other in sorted(set(j[(i == centre) & (j != centre)]))]
    np.testing.assert_array_equal(dX.pairs, np.array(expected))
    assert dX.pairs.dtype == np.int64
    # Translation invariance: the gradients of each centre sum to zero over atoms.
    sums = np.zeros((len(atoms), 3, soap.n_features))
    np.add.at(sums, dX.pairs[:, 0], dX.values)
    assert np.abs(sums).max() < 1e-12


def test_threads_give_identical_results(rng):
    atoms = random_structure(rng, SPECIES3, 12, pbc=True)
    one = gapx.SOAP(species=SPECIES3, cutoff=4.0, n_max=3, l_max=3, n_threads=1)
    two = gapx.SOAP(species=SPECIES3, cutoff=4.0, n_max=3, l_max=3, n_threads=2)
    X1, dX1 = one.compute(atoms, gradients=True)
    X2, dX2 = two.compute(atoms, gradients=True)
    assert np.array_equal(X1, X2)
    assert np.array_equal(dX1.values, dX2.values)
    assert np.array_equal(dX1.strain, dX2.strain)
    G = rng.normal(size=X1.shape)
    for a, b in zip(one.backpropagate(atoms, G), two.backpropagate(atoms, G), strict=True):
        assert np.array_equal(a, b)


def test_to_dict_round_trip():
    soap = gapx.SOAP(
        species=[8, "H"],
        cutoff=4.0,
        n_max=5,
        l_max=3,
        zeta=2,
        delta=0.3,
        n_sparse=50,
        sparse_method="fps",
        n_threads=1,
    )
    data = soap.to_dict()
    assert data["species"] == ["H", "O"]
    restored = gapx.SOAP.from_dict(json.loads(json.dumps(data)))
    assert restored == soap
    assert restored.n_features == soap.n_features
    with pytest.raises(ValueError, match="unknown SOAP settings"):
        gapx.SOAP.from_dict({**data, "bogus": 1})
    copied = copy.deepcopy(soap)
    assert copied == soap
    atoms = Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]])
    np.testing.assert_array_equal(copied.compute(atoms), soap.compute(atoms))


def test_threads_are_a_runtime_setting():
    soap = gapx.SOAP(species=["H", "O"], cutoff=4.0, n_max=3, l_max=2, n_threads=1)
    data = soap.to_dict()
    assert "n_threads" not in data  # so never in a model file
    assert gapx.SOAP.from_dict(data).n_threads is None
    # Old files stored it: ignored, whatever the value.
    assert gapx.SOAP.from_dict({**data, "n_threads": 100000}).n_threads is None
    assert soap == gapx.SOAP(species=["H", "O"], cutoff=4.0, n_max=3, l_max=2, n_threads=2)
    # Copies and pickles (dask workers) keep the thread count.
    assert copy.deepcopy(soap).n_threads == 1
    assert pickle.loads(pickle.dumps(soap)).n_threads == 1
    assert pickle.loads(pickle.dumps(gapx.SOAP(species=["H"]))).n_threads is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_max": 0}, "n_max must be at least 1"),
        ({"l_max": -1}, "l_max must be at least 0"),
        ({"atom_sigma": 0.0}, "atom_sigma must be positive"),
        ({"atom_sigma": -0.5}, "atom_sigma must be positive"),
        ({"cutoff": -1.0}, "cutoff must be positive and finite"),
        (
            {"cutoff_transition_width": 6.0},
            r"cutoff_transition_width must be in \(0, cutoff=5.0\], got 6.0",
        ),
        ({"cutoff_transition_width": 0.0}, "cutoff_transition_width must be positive"),
        ({"species": ["Xx"]}, "unknown chemical symbol 'Xx'"),
        ({"species": []}, "at least one element"),
        ({"zeta": 0}, "zeta must be positive"),
        ({"delta": -1}, "delta must be positive"),
        ({"n_sparse": 0}, "n_sparse must be at least 1"),
        ({"sparse_method": "kmeans"}, "sparse_method must be one of"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    settings = {"species": ["Si"], "cutoff": 5.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        gapx.SOAP(**settings)


def test_settings_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        gapx.SOAP(["Si"])
    soap = gapx.SOAP(species=["Si"])
    with pytest.raises(AttributeError):
        soap.cutoff = 3.0


def test_bad_structures_raise():
    soap = gapx.SOAP(species=["Si", "O"], cutoff=3.0, n_max=2, l_max=1)
    with pytest.raises(ValueError, match=r"contains C, which is not in the SOAP species"):
        soap.compute(Atoms("SiC", positions=[[0, 0, 0], [1.5, 0, 0]]))
    nan = Atoms("Si2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        soap.compute(nan)
    with pytest.raises(ValueError, match="overlap"):
        soap.compute(Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0]]), gradients=True)
    atoms = Atoms("SiO", positions=[[0, 0, 0], [1.5, 0, 0]])
    with pytest.raises(ValueError, match="dE_dX must have shape"):
        soap.backpropagate(atoms, np.zeros((2, 3)))
