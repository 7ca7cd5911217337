"""Slow pure-NumPy/SciPy SOAP power spectrum following gapx's conventions exactly.

Independent of gapx: neighbours come from ``ase.neighborlist``, the Löwdin orthonormalisation
is done in 60-digit decimal arithmetic (stdlib ``decimal``, Jacobi rotations), radial integrals
by high-order Gauss–Legendre quadrature (or ``scipy.integrate.quad``) of the defining integral
with ``scipy.special.spherical_in``, and real spherical harmonics from ``scipy.special.sph_harm_y``.
Gradients are by central finite differences of the values. Nothing here is meant to be fast.

Conventions (see the SOAP section of gapx's documentation):

* f_c(r) = 1 for r <= r_c - w, (1 + cos(pi (r - r_c + w) / w)) / 2 in the transition, 0 beyond.
* rho_i^a(r) = sum_j f_c(r_ij) exp(-|r - r_ij|^2 / (2 sigma^2)) over neighbours of species a,
  plus w_c exp(-|r|^2 / (2 sigma^2)) in the centre's own channel.
* phi_n(r) = r^n exp(-r^2 / (2 s_n^2)), s_n = r_c max(sqrt(n), 1) / n_max, Löwdin
  orthonormalised with weight r^2 on [0, inf): R = S^{-1/2} phi.
* c^a_nlm = sum_j f_c(r_ij) I_nl(r_ij) Y_lm(r_ij hat) (+ w_c I_n0(0) Y_00), with
  I_nl(d) = 4 pi exp(-d^2/(2 s^2)) int_0^inf r^2 R_n(r) exp(-r^2/(2 s^2)) i_l(r d/s^2) dr,
  s = sigma.
* p[u, v, l] = kappa_uv (2l+1)^{-1/2} sum_m c_{u,lm} c_{v,lm}, u = a n_max + n, u <= v,
  kappa = 1 on the diagonal and sqrt(2) off it; order u, v >= u, l; rows normalised to 1.
"""

from __future__ import annotations

import math
import warnings
from decimal import Decimal, getcontext, localcontext
from functools import lru_cache

import numpy as np
import scipy.integrate
import scipy.special
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

# Half-width of the radial quadrature window around the neighbour distance, in units of sigma:
# the Gaussian factor exp(-(r - d)^2 / (2 sigma^2)) is below 1e-31 outside it.
WINDOW_SIGMAS = 12.0
# Gauss–Legendre points in that window (the integrand is smooth on a scale of sigma).
N_RADIAL_POINTS = 240
# Above this argument, i_l(x) e^{-x} is evaluated through the scaled Bessel function ive
# because spherical_in(l, x) itself would overflow near x = 709.
SCALED_BESSEL_SWITCH = 500.0


def cutoff_function(r, cutoff: float, width: float) -> np.ndarray:
    """QUIP's cosine transition f_c(r): 1 inside r_c - w, 0 beyond r_c."""
    r = np.asarray(r, dtype=float)
    x = np.clip((r - cutoff + width) / width, 0.0, 1.0)
    return np.where(r >= cutoff, 0.0, 0.5 * (1.0 + np.cos(np.pi * x)))


def gto_widths(cutoff: float, n_max: int) -> np.ndarray:
    """s_n = r_c max(sqrt(n), 1) / n_max, shape (n_max,)."""
    n = np.arange(n_max)
    return cutoff * np.maximum(np.sqrt(n), 1.0) / n_max


# Decimal digits for the Löwdin step: the raw GTO overlap has condition number ~1e16 at
# n_max 12 and ~1e21 at 16, far beyond double precision.
LOWDIN_DIGITS = 60


def _decimal_pi() -> Decimal:
    """pi to the current decimal precision (the series from the decimal module's docs)."""
    getcontext().prec += 2
    three = Decimal(3)
    lasts, t, total, n, na, d, da = 0, three, three, 1, 0, 0, 24
    while total != lasts:
        lasts = total
        n, na = n + na, na + 8
        d, da = d + da, da + 32
        t = (t * n) / d
        total += t
    getcontext().prec -= 2
    return +total


def _decimal_half_integer_gamma(twice: int, sqrt_pi: Decimal) -> Decimal:
    """Gamma(twice / 2) exactly for integer twice >= 1."""
    if twice % 2 == 0:
        return Decimal(math.factorial(twice // 2 - 1))
    j = (twice - 1) // 2
    return Decimal(math.factorial(2 * j)) / (Decimal(4) ** j * math.factorial(j)) * sqrt_pi


def _jacobi_eigh(matrix: list[list[Decimal]]) -> tuple[list[Decimal], list[list[Decimal]]]:
    """Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi rotations."""
    size = len(matrix)
    a = [row[:] for row in matrix]
    v = [[Decimal(int(i == k)) for k in range(size)] for i in range(size)]
    scale = sum(a[i][i] ** 2 for i in range(size))
    threshold = scale * Decimal(10) ** (-2 * getcontext().prec + 10)
    for _ in range(100):
        off = sum(a[p][q] ** 2 for p in range(size) for q in range(size) if p != q)
        if off <= threshold:
            break
        for p in range(size - 1):
            for q in range(p + 1, size):
                if a[p][q] == 0:
                    continue
                theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                t = 1 / (abs(theta) + (theta * theta + 1).sqrt())
                t = t if theta >= 0 else -t
                c = 1 / (t * t + 1).sqrt()
                sn = t * c
                for k in range(size):  # A <- A J (columns p, q)
                    akp, akq = a[k][p], a[k][q]
                    a[k][p], a[k][q] = c * akp - sn * akq, sn * akp + c * akq
                for k in range(size):  # A <- J^T A (rows p, q)
                    apk, aqk = a[p][k], a[q][k]
                    a[p][k], a[q][k] = c * apk - sn * aqk, sn * apk + c * aqk
                for k in range(size):
                    vkp, vkq = v[k][p], v[k][q]
                    v[k][p], v[k][q] = c * vkp - sn * vkq, sn * vkp + c * vkq
    else:
        raise RuntimeError("Jacobi eigenvalue iteration did not converge")
    return [a[i][i] for i in range(size)], v


@lru_cache(maxsize=32)
def _orthonormalisation(cutoff: float, n_max: int) -> np.ndarray:
    """S^{-1/2} (symmetric Löwdin) for the primitive GTOs, in 60-digit decimal arithmetic.

    S_nk = Gamma(q)/2 (a_n + a_k)^{-q}, q = (n+k+3)/2, a_n = 1/(2 s_n^2), with Gamma at
    half-integers exact and S^{-1/2} = V diag(lambda^{-1/2}) V^T from Jacobi rotations.
    """
    with localcontext() as context:
        context.prec = LOWDIN_DIGITS
        sqrt_pi = _decimal_pi().sqrt()
        rc = Decimal(cutoff)  # the exact binary value gapx receives
        widths = [rc * max(Decimal(n).sqrt(), Decimal(1)) / n_max for n in range(n_max)]
        alpha = [1 / (2 * w * w) for w in widths]
        overlap = [
            [
                _decimal_half_integer_gamma(n + k + 3, sqrt_pi)
                / 2
                / ((alpha[n] + alpha[k]) ** (n + k + 3)).sqrt()
                for k in range(n_max)
            ]
            for n in range(n_max)
        ]
        eigenvalues, vectors = _jacobi_eigh(overlap)
        if min(eigenvalues) <= 0:
            raise ValueError(f"GTO overlap not positive definite at n_max {n_max}")
        inverse_root = [1 / value.sqrt() for value in eigenvalues]
        result = [
            [
                sum(vectors[n][q] * inverse_root[q] * vectors[k][q] for q in range(n_max))
                for k in range(n_max)
            ]
            for n in range(n_max)
        ]
        return np.array([[float(x) for x in row] for row in result])


def gto_overlap(cutoff: float, n_max: int) -> np.ndarray:
    """S_nk = int_0^inf r^2 phi_n phi_k dr in closed form (double precision), (n_max, n_max)."""
    alpha = 1.0 / (2.0 * gto_widths(cutoff, n_max) ** 2)
    n = np.arange(n_max)
    power = (n[:, None] + n[None, :] + 3) / 2.0
    return 0.5 * scipy.special.gamma(power) * (alpha[:, None] + alpha[None, :]) ** (-power)


def orthonormalisation_matrix(cutoff: float, n_max: int) -> np.ndarray:
    """W = S^{-1/2} with R_n = sum_k W_nk phi_k, shape (n_max, n_max)."""
    return _orthonormalisation(float(cutoff), int(n_max)).copy()


def primitive_gtos(r, cutoff: float, n_max: int) -> np.ndarray:
    """phi_n(r) = r^n exp(-r^2 / (2 s_n^2)), shape (n_max, *r.shape)."""
    r = np.asarray(r, dtype=float)
    widths = gto_widths(cutoff, n_max)
    n = np.arange(n_max).reshape((-1,) + (1,) * r.ndim)
    s = widths.reshape(n.shape)
    return r**n * np.exp(-(r**2) / (2.0 * s**2))


def radial_basis(r, cutoff: float, n_max: int) -> np.ndarray:
    """Orthonormal R_n(r), shape (n_max, *r.shape)."""
    primitive = primitive_gtos(r, cutoff, n_max)
    weights = orthonormalisation_matrix(cutoff, n_max)
    return np.tensordot(weights, primitive, axes=1)


def scaled_spherical_in(l_values, x) -> np.ndarray:
    """i_l(x) e^{-x} for x >= 0, broadcasting l against x."""
    l_values, x = np.broadcast_arrays(np.asarray(l_values), np.asarray(x, dtype=float))
    small = x <= SCALED_BESSEL_SWITCH
    out = np.empty(x.shape)
    out[small] = scipy.special.spherical_in(l_values[small], x[small]) * np.exp(-x[small])
    big = ~small
    out[big] = np.sqrt(np.pi / (2.0 * x[big])) * scipy.special.ive(l_values[big] + 0.5, x[big])
    return out


def _radial_integrand(r, d, n_max, l_max, cutoff, sigma):
    """4 pi r^2 R_n(r) exp(-(r-d)^2/(2 sigma^2)) i_l(r d / sigma^2) e^{-r d/sigma^2}: (n, l, *r)."""
    basis = radial_basis(r, cutoff, n_max)
    x = r * d / sigma**2
    ls = np.arange(l_max + 1).reshape((-1,) + (1,) * np.ndim(r))
    bessel = scaled_spherical_in(ls, x)
    gauss = np.exp(-((r - d) ** 2) / (2.0 * sigma**2))
    return 4.0 * np.pi * (r**2 * gauss)[None, None] * basis[:, None] * bessel[None]


@lru_cache(maxsize=4)
def _gauss_legendre(n_points: int):
    return np.polynomial.legendre.leggauss(n_points)


def radial_integral(distances, cutoff: float, n_max: int, l_max: int, sigma: float):
    """I_nl(d) by Gauss–Legendre quadrature in a window around d, shape (n_d, n_max, l_max+1).

    exp(-d^2/2s^2) exp(-r^2/2s^2) i_l(rd/s^2) = exp(-(r-d)^2/2s^2) [i_l(x) e^{-x}], x = rd/s^2,
    which keeps every factor finite.
    """
    distances = np.atleast_1d(np.asarray(distances, dtype=float))
    nodes, weights = _gauss_legendre(N_RADIAL_POINTS)
    out = np.empty((len(distances), n_max, l_max + 1))
    for k, d in enumerate(distances):
        lower = max(0.0, d - WINDOW_SIGMAS * sigma)
        upper = d + WINDOW_SIGMAS * sigma
        r = 0.5 * (upper - lower) * nodes + 0.5 * (upper + lower)
        integrand = _radial_integrand(r, d, n_max, l_max, cutoff, sigma)
        out[k] = 0.5 * (upper - lower) * integrand @ weights
    return out


def radial_integral_quad(d: float, n: int, ell: int, cutoff: float, n_max: int, sigma: float):
    """I_nl(d) for one (n, l) by adaptive scipy.integrate.quad on [0, inf) (slow)."""

    def integrand(r):
        return _radial_integrand(np.array([r]), d, n_max, ell, cutoff, sigma)[n, ell, 0]

    with warnings.catch_warnings():  # quad flags round-off when it reaches ~1e-15
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
        value, _ = scipy.integrate.quad(
            integrand, 0.0, np.inf, epsabs=1e-15, epsrel=1e-13, limit=400
        )
    return value


def lm_index(ell: int, m: int) -> int:
    """Position of (l, m) in the flattened (l_max+1)^2 axis: l^2 + l + m."""
    return ell * ell + ell + m


def _complex_harmonic(ell: int, m: int, theta, phi):
    """Y_l^m(theta, phi) with theta polar, phi azimuthal (SciPy >= 1.15, or the older sph_harm)."""
    if hasattr(scipy.special, "sph_harm_y"):
        return scipy.special.sph_harm_y(ell, m, theta, phi)
    return scipy.special.sph_harm(m, ell, phi, theta)


def real_spherical_harmonics(vectors, l_max: int) -> np.ndarray:
    """Real orthonormal Y_lm(r hat) for row vectors, shape (n, (l_max+1)^2), index l^2+l+m.

    Y_l0 = Y_l^0; Y_lm = sqrt(2) (-1)^m Re Y_l^m for m > 0; sqrt(2) (-1)^m Im Y_l^|m| for m < 0
    (so Y_11 is proportional to +x and Y_1,-1 to +y).
    """
    vectors = np.atleast_2d(np.asarray(vectors, dtype=float))
    r = np.linalg.norm(vectors, axis=1)
    theta = np.arccos(np.clip(vectors[:, 2] / r, -1.0, 1.0))
    phi = np.mod(np.arctan2(vectors[:, 1], vectors[:, 0]), 2.0 * np.pi)
    out = np.empty((len(vectors), (l_max + 1) ** 2))
    for ell in range(l_max + 1):
        for m in range(0, ell + 1):
            y = _complex_harmonic(ell, m, theta, phi)
            if m == 0:
                out[:, lm_index(ell, 0)] = y.real
            else:
                sign = (-1.0) ** m
                out[:, lm_index(ell, m)] = np.sqrt(2.0) * sign * y.real
                out[:, lm_index(ell, -m)] = np.sqrt(2.0) * sign * y.imag
    return out


def species_numbers(species) -> list[int]:
    """Atomic numbers of ``species`` (symbols or numbers), sorted."""
    return sorted(atomic_numbers[s] if isinstance(s, str) else int(s) for s in species)


def density_coefficients(
    atoms,
    species,
    cutoff: float,
    n_max: int,
    l_max: int,
    atom_sigma: float,
    cutoff_transition_width: float = 1.0,
    central_weight: float = 1.0,
) -> np.ndarray:
    """c[i, a, n, lm] of every centre, shape (n_atoms, n_species, n_max, (l_max+1)^2)."""
    numbers = species_numbers(species)
    channel = {z: a for a, z in enumerate(numbers)}
    for z in set(atoms.numbers.tolist()):
        if z not in channel:
            raise ValueError(f"atomic number {z} is not in species {species}")
    n_lm = (l_max + 1) ** 2
    coefficients = np.zeros((len(atoms), len(numbers), n_max, n_lm))
    i, j, d, D = neighbor_list("ijdD", atoms, cutoff)
    if len(i):
        radial = radial_integral(d, cutoff, n_max, l_max, atom_sigma)  # (pairs, n, l)
        weight = cutoff_function(d, cutoff, cutoff_transition_width)
        harmonics = real_spherical_harmonics(D, l_max)  # (pairs, lm)
        l_of_lm = np.concatenate([[ell] * (2 * ell + 1) for ell in range(l_max + 1)])
        per_pair = weight[:, None, None] * radial[:, :, l_of_lm] * harmonics[:, None, :]
        neighbour_channel = np.array([channel[z] for z in atoms.numbers[j]])
        np.add.at(coefficients, (i, neighbour_channel), per_pair)
    if central_weight != 0.0:
        centre = radial_integral([0.0], cutoff, n_max, 0, atom_sigma)[0, :, 0]
        y00 = 1.0 / np.sqrt(4.0 * np.pi)
        for k, z in enumerate(atoms.numbers):
            coefficients[k, channel[z], :, 0] += central_weight * centre * y00
    return coefficients


def power_spectrum(coefficients: np.ndarray, l_max: int) -> np.ndarray:
    """Unnormalised p[u <= v, l] from c (n_atoms, n_species, n_max, lm): (n_atoms, n_features)."""
    n_atoms, n_species, n_max, _ = coefficients.shape
    flat = coefficients.reshape(n_atoms, n_species * n_max, -1)
    n_channels = n_species * n_max
    features = []
    for u in range(n_channels):
        for v in range(u, n_channels):
            kappa = 1.0 if u == v else np.sqrt(2.0)
            for ell in range(l_max + 1):
                block = slice(ell * ell, (ell + 1) ** 2)
                dot = np.sum(flat[:, u, block] * flat[:, v, block], axis=1)
                features.append(kappa * dot / np.sqrt(2 * ell + 1))
    return np.stack(features, axis=1)


def n_features(n_species: int, n_max: int, l_max: int) -> int:
    """N(N+1)/2 (l_max+1) with N = n_species n_max."""
    n_channels = n_species * n_max
    return n_channels * (n_channels + 1) // 2 * (l_max + 1)


def normalise_rows(p: np.ndarray) -> np.ndarray:
    """p / |p| row by row; a zero row stays zero."""
    norm = np.linalg.norm(p, axis=1, keepdims=True)
    return np.divide(p, norm, out=np.zeros_like(p), where=norm > 0)


class ReferenceSOAP:
    """Slow reference with the same hyperparameters as gapx.SOAP."""

    def __init__(
        self,
        species,
        cutoff: float = 5.0,
        n_max: int = 8,
        l_max: int = 6,
        atom_sigma: float = 0.5,
        cutoff_transition_width: float = 1.0,
        central_weight: float = 1.0,
    ):
        self.species = species_numbers(species)
        self.cutoff = float(cutoff)
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.atom_sigma = float(atom_sigma)
        self.cutoff_transition_width = float(cutoff_transition_width)
        self.central_weight = float(central_weight)

    @property
    def n_features(self) -> int:
        return n_features(len(self.species), self.n_max, self.l_max)

    def coefficients(self, atoms) -> np.ndarray:
        return density_coefficients(
            atoms,
            self.species,
            self.cutoff,
            self.n_max,
            self.l_max,
            self.atom_sigma,
            self.cutoff_transition_width,
            self.central_weight,
        )

    def compute_unnormalised(self, atoms) -> np.ndarray:
        return power_spectrum(self.coefficients(atoms), self.l_max)

    def compute(self, atoms) -> np.ndarray:
        """Unit-normalised power spectrum, (n_atoms, n_features)."""
        return normalise_rows(self.compute_unnormalised(atoms))

    def expected_pairs(self, atoms) -> np.ndarray:
        """[centre i, atom j] rows gapx must list: per centre, j = i first, then the other atoms
        within the cutoff (any image) by increasing j. Shape (n_grad, 2), int64."""
        i, j = neighbor_list("ij", atoms, self.cutoff)
        rows = []
        for centre in range(len(atoms)):
            others = sorted(set(j[i == centre].tolist()) - {centre})
            rows.extend([centre, other] for other in [centre, *others])
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def position_gradients(self, atoms, delta: float = 1e-5) -> np.ndarray:
        """Dense d x_i / d r_j by central differences, shape (n_atoms, n_atoms, 3, n_features)."""
        grad = np.zeros((len(atoms), len(atoms), 3, self.n_features))
        for j in range(len(atoms)):
            for k in range(3):
                moved = atoms.copy()
                moved.positions[j, k] += delta
                plus = self.compute(moved)
                moved.positions[j, k] -= 2 * delta
                minus = self.compute(moved)
                grad[:, j, k] = (plus - minus) / (2 * delta)
        return grad

    def strain_gradients(self, atoms, delta: float = 1e-5) -> np.ndarray:
        """d x_i / d eps_ab for r -> (1 + eps) r by central differences, (n_atoms, 3, 3, F)."""
        grad = np.zeros((len(atoms), 3, 3, self.n_features))
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] = delta
                values = []
                for sign in (1.0, -1.0):
                    deformed = atoms.copy()
                    deformation = np.eye(3) + sign * eps
                    deformed.set_cell(atoms.cell.array @ deformation.T, scale_atoms=False)
                    deformed.positions = atoms.positions @ deformation.T
                    values.append(self.compute(deformed))
                grad[:, a, b] = (values[0] - values[1]) / (2 * delta)
        return grad
