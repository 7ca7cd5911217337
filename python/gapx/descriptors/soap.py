"""SOAP power spectrum hyperparameters and the wrapper around the C++ core."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .. import _core
from .._arrays import as_cutoff, atoms_arrays, positive_number

SPARSE_METHODS = ("cur", "random", "fps", "all")


@dataclass(frozen=True)
class SOAPGradients:
    """Sparse position gradients and strain gradients of the normalised SOAP rows.

    Attributes
    ----------
    pairs : (n_grad, 2) int64
        ``[centre i, atom j]``; grouped by increasing ``i``, self term (``j == i``) first, then
        the atoms ``j`` within the cutoff by increasing ``j`` (periodic images merged).
    values : (n_grad, 3, n_features) float64
        ``d x_i / d r_j`` in 1/Å.
    strain : (n_atoms, 3, 3, n_features) float64
        ``d x_i / d eps_ab`` for the homogeneous deformation ``r -> (1 + eps) r``.
    """

    pairs: np.ndarray
    values: np.ndarray
    strain: np.ndarray


def _species_number(value) -> int:
    if isinstance(value, str):
        if value not in atomic_numbers:
            raise ValueError(f"unknown chemical symbol {value!r} in species")
        return atomic_numbers[value]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"species entries must be symbols or atomic numbers, got {value!r}")
    if not 1 <= int(value) < len(chemical_symbols):
        raise ValueError(f"invalid atomic number {value!r} in species")
    return int(value)


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


@dataclass(frozen=True)
class SOAP:
    """Smooth Overlap of Atomic Positions: the normalised power spectrum of each atom.

    The neighbour density of each centre, per neighbour species, is a sum of Gaussians of width
    ``atom_sigma`` weighted by QUIP's cosine cutoff (falling from 1 to 0 over the last
    ``cutoff_transition_width`` Å), plus ``central_weight`` times the centre's own Gaussian. It is
    expanded in ``n_max`` orthonormalised Gaussian-type radial functions and real spherical
    harmonics up to ``l_max``; the power spectrum
    ``p[u, v, l] = kappa_uv (2l+1)^(-1/2) sum_m c[u, lm] c[v, lm]`` over channel pairs u <= v
    (u = species index * n_max + n, kappa = sqrt(2) off the diagonal) is normalised to unit
    length. Feature order: u outer, v >= u, l inner.

    ``zeta``, ``delta``, ``n_sparse`` and ``sparse_method`` are the GP settings of this term
    (as in QUIP's gap string); the descriptor itself does not use them.

    Parameters
    ----------
    species : sequence of str or int
        Chemical symbols or atomic numbers; stored sorted by atomic number.
    cutoff : float
        Cutoff radius r_c in Å.
    n_max, l_max : int
        Number of radial functions (>= 1) and largest angular momentum (0 <= l_max <= 30).
    atom_sigma : float
        Gaussian width of each atom's density, Å.
    cutoff_transition_width : float
        Width of the cosine transition, 0 < width <= cutoff, Å.
    central_weight : float
        Weight of the centre's own Gaussian in the density of its species.
    zeta, delta : float
        Kernel exponent and energy scale of the GP term (> 0).
    n_sparse : int
        Number of sparse points (>= 1).
    sparse_method : {"cur", "random", "fps", "all"}
        Sparse-point selection.
    n_threads : int or None
        OpenMP threads; None uses OpenMP's default (``OMP_NUM_THREADS``).

    Notes
    -----
    Radial basis: Gaussian-type orbitals r^n exp(-r^2 / 2 s_n^2), s_n = cutoff max(sqrt(n), 1) /
    n_max, Löwdin-orthonormalised (in double-double arithmetic: their overlap matrix has a
    condition number of 1e16 at n_max = 12). The family is complete, so the kernel converges to
    the basis-independent SOAP as n_max grows. The exact radial integral of a Gaussian
    (modified spherical Bessel functions) is tabulated once per (cutoff, n_max, l_max,
    atom_sigma) by quadrature and interpolated with cubic Hermite splines (~1e-11 relative), since
    evaluating it per pair would cost far more than everything else. Everything per centre runs
    in C++ with OpenMP over centres and the GIL released.
    """

    species: tuple
    cutoff: float = 5.0
    n_max: int = 8
    l_max: int = 6
    atom_sigma: float = 0.5
    cutoff_transition_width: float = 1.0
    central_weight: float = 1.0
    zeta: float = 4.0
    delta: float = 1.0
    n_sparse: int = 1000
    sparse_method: str = "cur"
    n_threads: int | None = None
    _core: object = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self,
        *,
        species,
        cutoff: float = 5.0,
        n_max: int = 8,
        l_max: int = 6,
        atom_sigma: float = 0.5,
        cutoff_transition_width: float = 1.0,
        central_weight: float = 1.0,
        zeta: float = 4.0,
        delta: float = 1.0,
        n_sparse: int = 1000,
        sparse_method: str = "cur",
        n_threads: int | None = None,
    ) -> None:
        species = [species] if isinstance(species, (str, int, np.integer)) else list(species)
        numbers = sorted({_species_number(s) for s in species})
        if not numbers:
            raise ValueError("species must name at least one element")
        if len(numbers) != len(species):
            raise ValueError(f"species contains duplicates: {species!r}")
        cutoff = as_cutoff(cutoff)
        width = positive_number("cutoff_transition_width", cutoff_transition_width)
        if width > cutoff:
            raise ValueError(
                f"cutoff_transition_width ({width}) must not exceed the cutoff ({cutoff})"
            )
        central = float(central_weight)
        if not math.isfinite(central):
            raise ValueError(f"central_weight must be finite, got {central_weight!r}")
        if sparse_method not in SPARSE_METHODS:
            raise ValueError(
                f"sparse_method must be one of {SPARSE_METHODS}, got {sparse_method!r}"
            )
        if n_threads is not None:
            n_threads = _integer("n_threads", n_threads, 1)
        values = {
            "species": tuple(chemical_symbols[z] for z in numbers),
            "cutoff": cutoff,
            "n_max": _integer("n_max", n_max, 1),
            "l_max": _integer("l_max", l_max, 0),
            "atom_sigma": positive_number("atom_sigma", atom_sigma),
            "cutoff_transition_width": width,
            "central_weight": central,
            "zeta": positive_number("zeta", zeta),
            "delta": positive_number("delta", delta),
            "n_sparse": _integer("n_sparse", n_sparse, 1),
            "sparse_method": sparse_method,
            "n_threads": n_threads,
        }
        if values["l_max"] > 30:
            raise ValueError(f"l_max must be at most 30, got {l_max}")
        for name, value in values.items():
            object.__setattr__(self, name, value)
        core = _core.PowerSpectrum(
            cutoff=cutoff,
            n_max=values["n_max"],
            l_max=values["l_max"],
            atom_sigma=values["atom_sigma"],
            transition_width=width,
            central_weight=central,
            species=numbers,
        )
        object.__setattr__(self, "_core", core)

    @property
    def numbers(self) -> tuple[int, ...]:
        """Atomic numbers of ``species``, increasing (the species index order)."""
        return tuple(atomic_numbers[s] for s in self.species)

    @property
    def n_features(self) -> int:
        """Length of each descriptor row: N(N+1)/2 (l_max+1), N = n_species n_max."""
        return int(self._core.n_features)

    def to_dict(self) -> dict:
        """All settings as a JSON-safe dict (``from_dict`` inverts it)."""
        out = {}
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SOAP:
        """Rebuild a SOAP from ``to_dict()`` output."""
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SOAP settings: {sorted(unknown)}")
        return cls(**data)

    def __reduce__(self):
        # The compiled core is rebuilt from the settings (copy.deepcopy, dask workers).
        return (_from_dict, (self.to_dict(),))

    def _arrays(self, atoms):
        positions, cell, pbc, numbers = atoms_arrays(atoms)
        allowed = set(self.numbers)
        unknown = sorted(set(numbers.tolist()) - allowed)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise ValueError(
                f"the structure contains {names}, which is not in the SOAP species "
                f"{list(self.species)}"
            )
        return positions, cell, pbc, numbers

    def _threads(self) -> int:
        return 0 if self.n_threads is None else self.n_threads

    def compute(self, atoms, gradients: bool = False):
        """Normalised SOAP vectors of every atom of ``atoms``.

        Parameters
        ----------
        atoms : ase.Atoms
            Any periodicity and (triclinic) cell; every element must be in ``species``.
        gradients : bool
            Also return the position and strain gradients.

        Returns
        -------
        X : (n_atoms, n_features) float64
            Unit-length rows (a centre with an empty density gives a zero row).
        dX : SOAPGradients
            Only when ``gradients=True``: sparse ``pairs``/``values`` position gradients and
            ``strain`` gradients; memory linear in the number of pairs.
        """
        positions, cell, pbc, numbers = self._arrays(atoms)
        if not gradients:
            return self._core.compute(positions, cell, pbc, numbers, n_threads=self._threads())
        values, pairs, grads, strain = self._core.compute_gradients(
            positions, cell, pbc, numbers, n_threads=self._threads()
        )
        n_features = values.shape[1]
        return values, SOAPGradients(
            pairs=pairs,
            values=grads.reshape(len(pairs), 3, n_features),
            strain=strain.reshape(len(values), 3, 3, n_features),
        )

    def backpropagate(self, atoms, dE_dX):
        """Contract an upstream gradient with the descriptor gradients, without storing them.

        Parameters
        ----------
        atoms : ase.Atoms
        dE_dX : (n_atoms, n_features) array
            Derivative of a scalar E with respect to the normalised rows ``X``.

        Returns
        -------
        dE_dr : (n_atoms, 3) float64
            ``sum_i dE_dX[i] . dX_i/dr_j`` (forces are ``-dE_dr``).
        dE_dstrain : (3, 3) float64
            ``sum_i dE_dX[i] . dX_i/deps`` (stress is ``dE_dstrain / volume``).
        """
        positions, cell, pbc, numbers = self._arrays(atoms)
        grad = np.ascontiguousarray(dE_dX, dtype=np.float64)
        expected = (len(positions), self.n_features)
        if grad.shape != expected:
            raise ValueError(f"dE_dX must have shape {expected}, got {grad.shape}")
        if not np.all(np.isfinite(grad)):
            raise ValueError("dE_dX contains NaN or infinite values")
        dE_dr, dE_dstrain = self._core.backpropagate(
            positions, cell, pbc, numbers, grad, n_threads=self._threads()
        )
        return dE_dr, dE_dstrain


def _from_dict(data: dict) -> SOAP:
    return SOAP.from_dict(data)
