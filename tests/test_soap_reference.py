"""The slow NumPy SOAP reference checked on its own, then gapx.SOAP checked against it.

1. The reference itself: closed-form GTO overlap, orthonormal radial basis, radial integral by
   Gauss–Legendre against adaptive quad, Y_lm identities, and the expansion coefficients against
   a direct 3-D quadrature of the Gaussian neighbour density (which validates the radial-integral
   formula), plus rotation/translation/permutation invariance and featomic's kernel.
2. gapx.SOAP values against the reference (periodic, non-periodic, multi-species), and its
   position and strain gradients against finite differences of the reference.
3. gapx's zeta = 1 kernel against featomic's at n_max 12 (same GTO basis family).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.special
from ase import Atoms
from ase.build import bulk
from reference import soap_reference as ref
from scipy.spatial.transform import Rotation
from structures import random_structure

import gapx

OVERLAP_RTOL = 1e-12
ORTHONORMAL_TOL = 1e-11
RADIAL_QUAD_TOL = 1e-11  # Gauss–Legendre window vs adaptive quad, relative to max |I|
HARMONICS_TOL = 1e-12
DENSITY_QUADRATURE_TOL = 1e-9  # relative to max |c|
INVARIANCE_TOL = 1e-10
FEATOMIC_REFERENCE_TOL = 1e-7  # featomic splines its radial integrals
VALUE_TOL = 1e-8  # gapx vs reference, on unit-normalised rows
GRADIENT_RTOL = 1e-6  # against central differences, relative to the largest derivative
GRADIENT_ATOL = 1e-9
FD_DELTA = 1e-5

needs_soap = pytest.mark.skipif(not hasattr(gapx, "SOAP"), reason="gapx.SOAP is not built yet")


# ---------------------------------------------------------------- the reference on its own


def test_cutoff_function_values_and_smoothness():
    rc, w = 5.0, 1.0
    r = np.array([0.0, 3.9, 4.0, 4.5, 5.0, 6.0])
    np.testing.assert_allclose(ref.cutoff_function(r, rc, w), [1, 1, 1, 0.5, 0, 0], atol=1e-15)
    # Value and slope continuous at both ends of the transition.
    h = 1e-7
    for edge in (rc - w, rc):
        below, above = ref.cutoff_function([edge - h, edge + h], rc, w)
        assert abs(below - above) < 1e-12
        slope = np.diff(
            ref.cutoff_function([edge - 2 * h, edge - h, edge + h, edge + 2 * h], rc, w)
        )
        assert np.all(np.abs(slope) < 1e-12)


def test_gto_overlap_closed_form_matches_quad():
    rc, n_max = 5.0, 6
    closed = ref.gto_overlap(rc, n_max)
    for n, k in [(0, 0), (0, 5), (2, 3), (5, 5), (1, 4)]:

        def integrand(r, n=n, k=k):
            phi = ref.primitive_gtos(np.array([r]), rc, n_max)[:, 0]
            return r * r * phi[n] * phi[k]

        numeric, _ = scipy.integrate.quad(integrand, 0.0, np.inf, epsabs=0.0, epsrel=1e-13)
        assert abs(numeric - closed[n, k]) <= OVERLAP_RTOL * abs(closed[n, k])


@pytest.mark.parametrize("n_max", [4, 8, 12])
def test_radial_basis_is_orthonormal(n_max):
    nodes, weights = np.polynomial.legendre.leggauss(400)
    r = 15.0 * (nodes + 1.0)
    weights = 15.0 * weights
    basis = ref.radial_basis(r, 5.0, n_max)
    gram = (basis * r**2 * weights) @ basis.T
    np.testing.assert_allclose(gram, np.eye(n_max), atol=ORTHONORMAL_TOL)
    # Symmetric (Löwdin) orthonormalisation: the transform is symmetric positive definite.
    transform = ref.orthonormalisation_matrix(5.0, n_max)
    np.testing.assert_allclose(transform, transform.T, atol=1e-12 * np.abs(transform).max())
    assert np.all(np.linalg.eigvalsh(transform) > 0)


def test_lowdin_step_matches_mpmath():
    """The 60-digit decimal Jacobi S^{-1/2} against mpmath's eigensolver at 40 digits."""
    mpmath = pytest.importorskip("mpmath")
    rc, n_max = 5.0, 14
    with mpmath.workdps(40):
        widths = [mpmath.mpf(rc) * max(mpmath.sqrt(n), 1) / n_max for n in range(n_max)]
        alpha = [1 / (2 * w**2) for w in widths]
        overlap = mpmath.matrix(n_max, n_max)
        for n in range(n_max):
            for k in range(n_max):
                power = mpmath.mpf(n + k + 3) / 2
                overlap[n, k] = mpmath.gamma(power) / 2 * (alpha[n] + alpha[k]) ** (-power)
        values, vectors = mpmath.eigsy(overlap)
        root = vectors * mpmath.diag([1 / mpmath.sqrt(v) for v in values]) * vectors.T
        expected = np.array(root.tolist(), dtype=float)
    ours = ref.orthonormalisation_matrix(rc, n_max)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-14 * np.abs(expected).max())


def test_scaled_bessel_branches_agree():
    x = np.linspace(0.0, 2 * ref.SCALED_BESSEL_SWITCH, 41)[1:]
    for ell in (0, 1, 4, 9):
        with np.errstate(over="ignore", invalid="ignore"):  # i_l overflows beyond x ~ 700
            via_in = scipy.special.spherical_in(ell, x) * np.exp(-x)
        small = x <= 600.0
        expected = np.sqrt(np.pi / (2 * x)) * scipy.special.ive(ell + 0.5, x)
        np.testing.assert_allclose(via_in[small], expected[small], rtol=1e-12)
        np.testing.assert_allclose(ref.scaled_spherical_in(ell, x), expected, rtol=1e-12)


def test_radial_integral_gauss_legendre_matches_quad():
    rc, n_max, l_max, sigma = 5.0, 8, 6, 0.5
    distances = np.array([0.0, 0.4, 2.35, 4.7])
    table = ref.radial_integral(distances, rc, n_max, l_max, sigma)
    scale = np.abs(table).max()
    for k, d in enumerate(distances):
        for n, ell in [(0, 0), (3, 2), (7, 6), (5, 1)]:
            exact = ref.radial_integral_quad(d, n, ell, rc, n_max, sigma)
            assert abs(exact - table[k, n, ell]) <= RADIAL_QUAD_TOL * scale, (d, n, ell)


def _sphere_grid(n_theta: int, n_phi: int):
    """Gauss–Legendre in cos(theta) times the trapezoid rule in phi: unit vectors and weights."""
    cos_theta, w_theta = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    sin_theta = np.sqrt(1 - cos_theta**2)
    directions = np.stack(
        [
            np.outer(sin_theta, np.cos(phi)).ravel(),
            np.outer(sin_theta, np.sin(phi)).ravel(),
            np.repeat(cos_theta, n_phi),
        ],
        axis=1,
    )
    weights = np.repeat(w_theta, n_phi) * (2 * np.pi / n_phi)
    return directions, weights


def test_real_spherical_harmonics_orthonormal_and_addition_theorem(rng):
    l_max = 8
    directions, weights = _sphere_grid(24, 48)
    y = ref.real_spherical_harmonics(directions, l_max)
    np.testing.assert_allclose((y * weights[:, None]).T @ y, np.eye(y.shape[1]), atol=1e-12)
    a, b = rng.normal(size=(2, 5, 3))
    ya, yb = ref.real_spherical_harmonics(a, l_max), ref.real_spherical_harmonics(b, l_max)
    cosines = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    for ell in range(l_max + 1):
        block = slice(ell * ell, (ell + 1) ** 2)
        summed = np.sum(ya[:, block] * yb[:, block], axis=1)
        legendre = (2 * ell + 1) / (4 * np.pi) * scipy.special.eval_legendre(ell, cosines)
        np.testing.assert_allclose(summed, legendre, atol=HARMONICS_TOL)
    # Fixed real convention: Y_1,(-1,0,1) proportional to (y, z, x).
    unit = a[0] / np.linalg.norm(a[0])
    y1 = ref.real_spherical_harmonics(a[:1], 1)[0, 1:4]
    np.testing.assert_allclose(y1, np.sqrt(3 / (4 * np.pi)) * unit[[1, 2, 0]], atol=1e-14)


@pytest.mark.parametrize(("n_max", "l_max", "sigma"), [(8, 6, 0.5), (6, 4, 0.35)])
def test_expansion_matches_3d_quadrature_of_density(n_max, l_max, sigma):
    """c_nlm of a few weighted Gaussians, by the radial-integral formula and by brute force.

    rho(r) = sum_j w_j exp(-|r - d_j|^2 / (2 sigma^2)), projected on R_n(r) Y_lm(r hat) with a
    product grid: Gauss–Legendre in r, Gauss–Legendre in cos(theta), trapezoid in phi.
    """
    rc = 5.0
    centres = np.array(
        [[0.0, 0.0, 0.0], [1.1, -0.7, 0.4], [-2.0, 1.5, 2.2], [0.3, 3.9, -1.2], [-3.3, -2.6, 1.4]]
    )
    weights = np.array([1.0, 0.8, 1.0, 0.6, 0.3])
    distances = np.linalg.norm(centres, axis=1)
    assert distances.max() < rc

    l_of_lm = np.concatenate([[ell] * (2 * ell + 1) for ell in range(l_max + 1)])
    radial = ref.radial_integral(distances, rc, n_max, l_max, sigma)
    harmonics = np.zeros((len(centres), (l_max + 1) ** 2))
    harmonics[0, 0] = 1 / np.sqrt(4 * np.pi)  # the centre: only l = 0 survives
    harmonics[1:] = ref.real_spherical_harmonics(centres[1:], l_max)
    formula = np.einsum("j,jnk,jk->nk", weights, radial[:, :, l_of_lm], harmonics)

    directions, w_angle = _sphere_grid(110, 220)
    y = ref.real_spherical_harmonics(directions, l_max) * w_angle[:, None]
    r_nodes, r_weights = np.polynomial.legendre.leggauss(160)
    r_max = distances.max() + 12 * sigma
    r = 0.5 * r_max * (r_nodes + 1)
    r_weights = 0.5 * r_max * r_weights
    angular = np.empty((len(r), y.shape[1]))
    for k, radius in enumerate(r):
        points = radius * directions
        squared = np.sum((points[:, None, :] - centres[None]) ** 2, axis=2)
        density = np.exp(-squared / (2 * sigma**2)) @ weights
        angular[k] = density @ y
    basis = ref.radial_basis(r, rc, n_max)
    brute = (basis * r**2 * r_weights) @ angular

    scale = np.abs(formula).max()
    assert scale > 0.1
    np.testing.assert_allclose(brute, formula, atol=DENSITY_QUADRATURE_TOL * scale)


def multi_species_cell(seed: int = 7, n_atoms: int = 7) -> Atoms:
    rng = np.random.default_rng(seed)
    return random_structure(rng, ["O", "H", "C"], n_atoms, min_distance=1.0)


def molecule_like(seed: int = 11, n_atoms: int = 8) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = random_structure(rng, ["C", "H", "N"], n_atoms, cell=np.eye(3) * 4.5, pbc=False)
    atoms.cell = np.zeros((3, 3))
    return atoms


def test_reference_invariances():
    soap = ref.ReferenceSOAP(["H", "C", "O"], cutoff=4.0, n_max=5, l_max=5, atom_sigma=0.45)
    atoms = multi_species_cell()
    base = soap.compute(atoms)
    assert base.shape == (len(atoms), soap.n_features)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-14)

    rotation = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rotation.T
    np.testing.assert_allclose(soap.compute(rotated), base, atol=INVARIANCE_TOL)

    shifted = atoms.copy()
    shifted.positions += np.array([0.37, -1.9, 2.4])
    shifted.wrap()
    np.testing.assert_allclose(soap.compute(shifted), base, atol=INVARIANCE_TOL)

    same_species = np.flatnonzero(atoms.numbers == atoms.numbers[0])
    order = np.arange(len(atoms))
    order[same_species] = same_species[::-1]
    np.testing.assert_allclose(soap.compute(atoms[order]), base[order], atol=INVARIANCE_TOL)

    supercell = soap.compute(atoms * (2, 1, 1))
    np.testing.assert_allclose(supercell[: len(atoms)], base, atol=INVARIANCE_TOL)


def featomic_normalised(atoms, n_max: int, l_max: int, central_weight: float = 1.0):
    """featomic's SOAP power spectrum with gapx's hyperparameters, rows unit-normalised.

    Same GTO family (featomic's ``max_radial`` counts from 0), ShiftedCosine smoothing of width
    1 = QUIP's cosine transition, Gaussian density of width sigma and the centre's own Gaussian.
    featomic orthonormalises normalised GTOs rather than the raw ones, which rotates the radial
    basis: individual features differ but the kernel must not.
    """
    featomic = pytest.importorskip("featomic")
    calculator = featomic.SoapPowerSpectrum(
        cutoff={"radius": 5.0, "smoothing": {"type": "ShiftedCosine", "width": 1.0}},
        density={"type": "Gaussian", "width": 0.5, "center_atom_weight": central_weight},
        basis={
            "type": "TensorProduct",
            "max_angular": l_max,
            "radial": {"type": "Gto", "max_radial": n_max - 1},
        },
    )
    descriptor = calculator.compute(atoms)
    descriptor = descriptor.keys_to_samples("center_type")
    descriptor = descriptor.keys_to_properties(["neighbor_1_type", "neighbor_2_type"])
    block = descriptor.block()
    values = block.values[np.argsort(block.samples.column("atom"))]
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def featomic_test_frames():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.2, seed=4)
    mixed = multi_species_cell(seed=5, n_atoms=6)
    return [("Si", ["Si"], si), ("CHO", ["H", "C", "O"], mixed)]


@pytest.mark.parametrize("n_max", [8, 12])
def test_reference_kernel_matches_featomic(n_max):
    for _, species, atoms in featomic_test_frames():
        ours = ref.ReferenceSOAP(species, n_max=n_max, l_max=6).compute(atoms)
        theirs = featomic_normalised(atoms, n_max, 6)
        assert ours.shape[0] == theirs.shape[0]
        np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=FEATOMIC_REFERENCE_TOL)


# ---------------------------------------------------------------- gapx against the reference

VALUE_CASES = {
    "Si_diamond_n8l6": (["Si"], dict(n_max=8, l_max=6), "si"),
    "CHO_periodic_n6l5": (["O", "H", "C"], dict(n_max=6, l_max=5), "mixed"),
    "CHN_molecule_n6l4_sigma035_w05": (
        ["C", "N", "H"],
        dict(n_max=6, l_max=4, atom_sigma=0.35, cutoff_transition_width=0.5),
        "molecule",
    ),
    "CHO_no_centre_n5l6_rc4": (
        ["H", "C", "O", "N"],
        dict(n_max=5, l_max=6, cutoff=4.0, central_weight=0.0),
        "mixed",
    ),
}


def value_structure(kind: str) -> Atoms:
    if kind == "si":
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(0.15, seed=2)
        return atoms
    if kind == "mixed":
        return multi_species_cell()
    return molecule_like()


@needs_soap
@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_gapx_values_match_reference(case):
    species, hypers, kind = VALUE_CASES[case]
    atoms = value_structure(kind)
    soap = gapx.SOAP(species=species, **hypers)
    reference = ref.ReferenceSOAP(species, **hypers)
    assert soap.n_features == reference.n_features
    ours = soap.compute(atoms)
    expected = reference.compute(atoms)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=VALUE_TOL, rtol=0)


# (n_max, feature tolerance, kernel tolerance) at large n_max. The raw GTO overlap S is very
# ill-conditioned (cond 3.6e10 at n_max 8, 1.6e16 at 12, 4e21 at 16), so S^{-1/2} taken from a
# double-precision eigendecomposition of S loses everything: features off by ~3e-8 at n_max 8,
# ~1e-3 at 12 and NaN (negative eigenvalues) from 13 on. Taken instead from an SVD of the basis
# sampled on a quadrature grid (B^T B = S, S^{-1/2} = V diag(1/s) V^T), double precision gives
# features within 5e-12 / 5e-9 / 5e-7 of the 60-digit reference at n_max 8 / 12 / 16.
LARGE_N_MAX_CASES = [(12, 1e-7, 1e-9), (16, 1e-5, 1e-8)]


@needs_soap
@pytest.mark.parametrize(("n_max", "feature_tol", "kernel_tol"), LARGE_N_MAX_CASES)
def test_gapx_large_n_max_matches_reference(n_max, feature_tol, kernel_tol):
    atoms = value_structure("si")
    ours = gapx.SOAP(species=["Si"], n_max=n_max, l_max=6).compute(atoms)
    expected = ref.ReferenceSOAP(["Si"], n_max=n_max, l_max=6).compute(atoms)
    assert np.all(np.isfinite(ours)), f"non-finite features at n_max {n_max}"
    hint = "(Löwdin S^-1/2 of an ill-conditioned overlap? see LARGE_N_MAX_CASES)"
    feature_error = np.abs(ours - expected).max()
    assert feature_error <= feature_tol, f"max feature error {feature_error:.2e} {hint}"
    kernel_error = np.abs(ours @ ours.T - expected @ expected.T).max()
    assert kernel_error <= kernel_tol, f"max kernel error {kernel_error:.2e} {hint}"


def tiny_structures():
    rng = np.random.default_rng(21)
    periodic = random_structure(rng, ["O", "H", "C"], 4, cell=None, min_distance=1.1)
    finite = random_structure(rng, ["C", "H", "O"], 4, cell=np.eye(3) * 3.5, pbc=False)
    finite.cell = np.zeros((3, 3))
    return {"periodic": periodic, "finite": finite}


GRADIENT_HYPERS = dict(cutoff=3.5, n_max=4, l_max=3, atom_sigma=0.5, cutoff_transition_width=1.0)


@needs_soap
@pytest.mark.parametrize("kind", ["periodic", "finite"])
def test_gapx_gradients_match_reference_finite_differences(kind):
    atoms = tiny_structures()[kind]
    species = ["H", "C", "O"]
    soap = gapx.SOAP(species=species, **GRADIENT_HYPERS)
    reference = ref.ReferenceSOAP(species, **GRADIENT_HYPERS)
    values, gradients = soap.compute(atoms, gradients=True)
    np.testing.assert_allclose(values, reference.compute(atoms), atol=VALUE_TOL, rtol=0)

    pairs = np.asarray(gradients.pairs)
    np.testing.assert_array_equal(pairs, reference.expected_pairs(atoms))
    dense = reference.position_gradients(atoms, FD_DELTA)  # (i, j, 3, F)
    expected = dense[pairs[:, 0], pairs[:, 1]]
    analytic = np.asarray(gradients.values)
    assert np.abs(analytic).max() > 1e-3, "analytic position gradient is trivially small"
    scale = np.abs(expected).max()
    np.testing.assert_allclose(analytic, expected, atol=GRADIENT_RTOL * scale + GRADIENT_ATOL)
    # Atoms missing from the sparse list must not influence the centre at all.
    listed = np.zeros(dense.shape[:2], dtype=bool)
    listed[pairs[:, 0], pairs[:, 1]] = True
    assert np.abs(dense[~listed]).max(initial=0.0) <= GRADIENT_ATOL

    strain = np.asarray(gradients.strain)
    expected_strain = reference.strain_gradients(atoms, FD_DELTA)
    assert np.abs(strain).max() > 1e-3, "analytic strain gradient is trivially small"
    scale = np.abs(expected_strain).max()
    np.testing.assert_allclose(strain, expected_strain, atol=GRADIENT_RTOL * scale + GRADIENT_ATOL)


@needs_soap
@pytest.mark.parametrize("n_max", [12])
def test_gapx_kernel_matches_featomic(n_max):
    for _, species, atoms in featomic_test_frames():
        ours = gapx.SOAP(species=species, n_max=n_max, l_max=6).compute(atoms)
        theirs = featomic_normalised(atoms, n_max, 6)
        difference = np.abs(ours @ ours.T - theirs @ theirs.T)
        print(f"\ngapx vs featomic n_max {n_max}: max |dK| = {difference.max():.2e}")
        assert difference.max() <= FEATOMIC_REFERENCE_TOL
